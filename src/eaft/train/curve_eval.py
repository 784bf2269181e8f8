"""Evaluation inside the training process: the suite scored on the model in memory at scheduled steps.

With `eval_suite` and `eval_suite_steps`, `eaft train` scores the suite at each step of the schedule (the last
step always) on the model it is training: no checkpoint, no optimizer state on disk, no reload, no new process.
Each point is written as `eaft eval --series S --step N --family F` would write it, into `<eval_dir>/step-<N>/`
(results.json, results.md, suite.yaml, samples/), so `eaft report` draws the frontier from it and a re-run skips
it. With `eval_base` (the default), the base model is scored too, in memory before the first step, into
`<eval_dir>/base/`. A point whose results.json exists and matches the suite is not scored again, so a run killed
during an evaluation and started again (it retrains from its last checkpoint, or from the start) scores only the
points it had not finished.

It needs the whole model in one process: with several processes (DDP, FSDP, DeepSpeed) a rank holds a replica
or a shard, so `eaft train` refuses it there and `eaft experiment` evaluates saved checkpoints instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from eaft.evaluate.cache import ResultCache
from eaft.evaluate.in_process import LoadedModelHandle, evaluation_mode
from eaft.evaluate.runner import results_are_stale, run_suite, write_run
from eaft.evaluate.schedule import describe, resolve_schedule
from eaft.evaluate.suite import load_suite

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CurvePlan:
    """What to score, when and where: the train config's eval_* keys, resolved."""

    suite: str
    limit: int | None
    schedule: list[int] | str
    out: Path  # eval_dir
    series: str
    family: str
    base: bool  # score the base model (step 0) too
    base_model: str  # the model the run starts from (a self-consistency task's default reference)
    dtype: str

    def point_dir(self, step: int) -> Path:
        return self.out / ("base" if step == 0 else f"step-{step}")


def point_done(folder: Path, suite: Any) -> bool:
    results = folder / "results.json"
    return results.is_file() and not results_are_stale(results, suite)


class CurveEvaluation(TrainerCallback):
    """Scores `plan.suite` on the training model at each scheduled step (main process only)."""

    def __init__(self, plan: CurvePlan, tokenizer: Any) -> None:
        self.plan = plan
        self.tokenizer = tokenizer
        self.suite = load_suite(plan.suite, limit=plan.limit)
        self.steps: list[int] = []
        self.seconds = 0.0  # time spent scoring in this process
        self.point_seconds: dict[int, float] = {}
        self.cache = ResultCache()

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.resolve(state.max_steps)
        if self.plan.base and state.global_step == 0 and state.is_world_process_zero:
            self.evaluate(model, 0)

    def on_step_end(self, args, state, control, model=None, **kwargs):
        if state.global_step in self.steps and state.is_world_process_zero:
            self.evaluate(model, state.global_step)

    def resolve(self, total: int) -> list[int]:
        self.steps = resolve_schedule(self.plan.schedule, total)
        logger.info("evaluation in the training process at steps %s (%s)", describe(self.steps), self.suite.name)
        return self.steps

    def timings(self) -> dict[str, Any]:
        """Seconds spent scoring in this process, in all and per point (for summary.json)."""
        return {
            "seconds": round(self.seconds, 3),
            "points": {str(k): round(v, 3) for k, v in self.point_seconds.items()},
        }

    def missing(self) -> list[int]:
        """Scheduled points (the base included) that have no finished, current results yet."""
        points = ([0] if self.plan.base else []) + self.steps
        return [s for s in points if not point_done(self.plan.point_dir(s), self.suite)]

    def evaluate(self, model: Any, step: int) -> Path:
        """Score the suite on `model` as it is now, into the point's folder (skipped when already done)."""
        out = self.plan.point_dir(step)
        if point_done(out, self.suite):
            logger.info("evaluation at step %d: done earlier (%s), skipped", step, out)
            return out
        started = time.perf_counter()
        model = getattr(model, "module", model)  # DDP-style wrappers hold the model as .module
        series = "base" if step == 0 else self.plan.series
        label = {"series": series, "step": step}
        handle = LoadedModelHandle(model, self.tokenizer, base=self.plan.base_model, dtype=self.plan.dtype, label=label)
        with evaluation_mode(model):
            result = run_suite(self.suite, handle, cache=self.cache)
        curve = {"series": series, "step": step, "family": "base" if step == 0 else self.plan.family}
        write_run(out, self.suite, handle, "native", result, curve)
        seconds = time.perf_counter() - started
        self.seconds += seconds
        self.point_seconds[step] = seconds
        scores = ", ".join(f"{name} {record['score']:.2f}" for name, record in result["tasks"].items())
        logger.info("evaluation at step %d: %s (%.0f s)", step, scores, seconds)
        return out


def curve_plan(config: Any, run_dir: Path) -> CurvePlan | None:
    """The plan of a TrainConfig with eval_suite and eval_suite_steps; None without them."""
    args = config.eaft
    if not args.eval_suite or args.eval_suite_steps is None:
        return None
    series = args.eval_series or run_dir.name
    return CurvePlan(
        suite=args.eval_suite,
        limit=args.eval_limit,
        schedule=args.eval_suite_steps,
        out=Path(args.eval_dir) if args.eval_dir else run_dir / "eval",
        series=series,
        family=args.eval_family or series,
        base=args.eval_base,
        base_model=str(args.model),
        dtype=args.dtype,
    )
