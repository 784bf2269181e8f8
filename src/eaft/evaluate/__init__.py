"""Evaluation: task types (multiple-choice log-likelihood, generative exact match, IFEval, self-consistency),
suites grouping them into target and general, cached results, and the forgetting report."""

from eaft.evaluate.suite import Suite, load_suite
from eaft.evaluate.tasks import TaskError, TaskOutcome, TaskSpec

__all__ = ["Suite", "TaskError", "TaskOutcome", "TaskSpec", "load_suite"]
