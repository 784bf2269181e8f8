"""The task-type registry: a new type is one module's options and evaluate, and every part of eval sees it."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

import eaft.evaluate.task_types as registry
from eaft.evaluate.runner import run_native
from eaft.evaluate.suite import load_suite
from eaft.evaluate.task_types import MODULES, register_task_type, task_type, task_types
from eaft.evaluate.tasks import TaskError, TaskOutcome, iter_rows

from .conftest import write_jsonl


@dataclass(frozen=True)
class RowCountOptions:
    """A toy type: the score is `scale` times the number of rows (no model)."""

    scale: float = field(default=1.0, metadata={"help": "points per row"})


def evaluate_row_count(task, handle):
    rows = list(iter_rows(task.path, task.limit, task.limit_mode))
    return TaskOutcome(score=task.options.scale * len(rows), metric="rows", metrics={}, n=len(rows))


@pytest.fixture
def row_count(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the registration ends with the test
    register_task_type("row_count", RowCountOptions, evaluate_row_count)


def test_every_shipped_module_registers_its_type():
    types = task_types()
    assert set(MODULES) <= set(types)
    for name in MODULES:
        kind = task_type(name)
        assert kind.name == name and callable(kind.evaluate) and "Options" in kind.options.__name__
    assert task_type("self_consistency").uses_cache and not task_type("multiple_choice").uses_cache


def test_a_registered_type_is_parsed_validated_and_run(tmp_path, row_count):
    write_jsonl(tmp_path / "rows.jsonl", [{"x": i} for i in range(5)])
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\ntarget:\n  - {name: count, type: row_count, path: rows.jsonl, scale: 2.5, limit: 4}\n")
    (task,) = load_suite(suite).tasks
    assert isinstance(task.options, RowCountOptions)
    outcome = run_native(task, handle=None, cache=None)
    assert (outcome.score, outcome.n) == (10.0, 4)
    suite.write_text("name: s\ntarget:\n  - {name: count, type: row_count, path: rows.jsonl, scael: 2}\n")
    with pytest.raises(TaskError, match="unknown option 'scael' for a row_count task.*did you mean 'scale'"):
        load_suite(suite)


def test_an_unknown_type_names_the_registered_ones(tmp_path, row_count):
    suite = tmp_path / "suite.yaml"
    suite.write_text("name: s\ntarget:\n  - {name: count, type: row_cont, path: rows.jsonl}\n")
    with pytest.raises(TaskError, match="unknown task type 'row_cont'.*did you mean 'row_count'.*multiple_choice"):
        load_suite(suite)


def test_registering_a_name_twice_is_refused(row_count):
    with pytest.raises(ValueError, match="'row_count' is registered twice"):
        register_task_type("row_count", RowCountOptions, lambda task, handle: None)
