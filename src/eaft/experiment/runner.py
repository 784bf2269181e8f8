"""Running an experiment: the base evaluation, each run's training (and its evaluations), the report.

Two ways to score a run's curve:
- **in the training process** (the default): each run's `eaft train` gets `eval_suite_steps` and scores the suite on
  the model in memory at each point (eaft.train.curve_eval), into `<out>/evals/<run>/step-<N>/`. A run is done
  when its report.md exists and every point of its schedule holds current results; a finished run with a point
  missing or out of date (the suite changed) is trained again, and scores only those points.
- **from saved checkpoints** (`eval_in_process: false`, and required with a `launcher`, whose processes each hold
  a replica or a shard of the model): the run saves a checkpoint at each point, and `eaft eval` scores each one in
  its own process into the same folders.
The base is scored once by `eaft eval` into `<out>/evals/base/`.
"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import yaml

from eaft.experiment.spec import Experiment, RunSpec, check_unchanged, config_path, validate


@dataclass(frozen=True)
class Step:
    kind: str  # "train" | "eval"
    name: str
    command: list[str]
    done: Path  # exists once the step has finished
    checkpoint: Path | None = None  # the checkpoint this evaluation scores (deleted after it unless kept)
    config: tuple[Path, dict[str, Any]] | None = None  # a training step's config file, written when it runs
    stale: tuple[int, ...] = ()  # a finished in-process run's points without current results: train it again
    run_dir_started: bool = False  # a training step whose run folder holds files from an earlier try

    @property
    def redo(self) -> bool:
        """`done` exists but is out of date: run the step again."""
        return bool(self.stale)


def _python(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "eaft.cli", *args]


def _write_config(path: Path, config: dict[str, Any]) -> None:
    from eaft.io import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config, sort_keys=False))


def trained_steps(run: RunSpec) -> int | None:
    """The final optimizer step of a finished run (from its summary.json), None before it finished."""
    summary = run.run_dir / "summary.json"
    if not (run.run_dir / "report.md").is_file() or not summary.is_file():
        return None
    return int(json.loads(summary.read_text(encoding="utf-8"))["steps"])


def curve_points(experiment: Experiment, final: int) -> list[int]:
    """The steps at which a run of `final` steps is scored, its last step included."""
    from eaft.evaluate.schedule import resolve_schedule

    return resolve_schedule(experiment.schedule if experiment.curves else [], final)


def _suite(experiment: Experiment) -> Any:
    from eaft.evaluate.suite import load_suite

    return load_suite(experiment.suite, limit=experiment.eval_limit)


def stale_points(experiment: Experiment, run: RunSpec) -> list[int]:
    """Points of a finished run without current results (missing, or the suite changed since)."""
    from eaft.evaluate.runner import results_are_stale

    final = trained_steps(run)
    if final is None:
        return []
    suite = _suite(experiment)
    points = curve_points(experiment, final)
    return [
        s
        for s in points
        if not (experiment.point_dir(run.name, s) / "results.json").is_file()
        or results_are_stale(experiment.point_dir(run.name, s) / "results.json", suite)
    ]


def _train_step(experiment: Experiment, run: RunSpec) -> Step:
    from eaft.train.run_dir import complete_checkpoints

    run_dir = run.run_dir
    config = dict(run.config)
    stale = tuple(stale_points(experiment, run)) if experiment.in_process else ()
    started = run_dir.is_dir() and any(run_dir.iterdir())
    if stale:
        config["overwrite_output_dir"] = True  # trained again to score the points it lacks; the others are kept
    elif complete_checkpoints(run_dir):
        config["resume"] = True
    elif started:
        config["overwrite_output_dir"] = True  # started, but died before its first checkpoint
    path = config_path(experiment, run)
    prefix = [*experiment.launcher, "-m", "eaft.cli"] if experiment.launcher else _python([])
    command = [*prefix, "train", str(path)]
    return Step("train", run.name, command, run_dir / "report.md", config=(path, config), stale=stale,
                run_dir_started=started)  # fmt: skip


def _eval_step(experiment: Experiment, run: RunSpec | None, *, step: int, weights: Path | None = None) -> Step:
    """An `eaft eval` of the base (run None), or of a run's checkpoint `weights` (or final model) at `step`."""
    out = experiment.evals / "base" if run is None else experiment.point_dir(run.name, step)
    args = ["eval", "--suite", str(experiment.suite), "--out", str(out), "--model", experiment.base_model]
    if run is not None:
        full = str(run.config.get("finetuning", "lora")).lower() == "full"
        weights = weights or run.run_dir / ("model" if full else "adapter")
        if full:
            args[-1] = str(weights)
        else:
            args += ["--adapter", str(weights)]
        dtype = run.config.get("dtype")
        if dtype:
            args += ["--dtype", str(dtype)]
    if experiment.eval_limit:
        args += ["--limit", str(experiment.eval_limit)]
    if experiment.curves:
        series = ("base", "base") if run is None else (run.name, run.family)
        args += ["--series", series[0], "--step", str(step), "--family", series[1]]
    name = "base" if run is None else f"{run.name}/step-{step}"
    return Step("eval", name, _python(args), out / "results.json")


def checkpoint_evals(experiment: Experiment, run: RunSpec) -> list[Step]:
    """A run's `eaft eval` steps on the checkpoint path, once it has trained: each checkpoint, then the final."""
    final = trained_steps(run)
    if final is None:
        return []
    steps = []
    for point in curve_points(experiment, final)[:-1]:
        checkpoint = run.run_dir / f"checkpoint-{point}"
        steps.append(replace(_eval_step(experiment, run, step=point, weights=checkpoint), checkpoint=checkpoint))
    return [*steps, _eval_step(experiment, run, step=final)]


def plan(experiment: Experiment) -> list[Step]:
    """The base evaluation, then each run's training (and, on the checkpoint path, its evaluations, planned once
    the run has trained)."""
    steps = [_eval_step(experiment, None, step=0)]
    for run in experiment.runs:
        steps.append(_train_step(experiment, run))
        if not experiment.in_process:
            steps += checkpoint_evals(experiment, run)
    return steps


def step_status(step: Step, experiment: Experiment) -> str:
    """What running the experiment now would do with `step`, in the words `--check` prints."""
    if step.redo:
        return f"train again: points {', '.join(map(str, step.stale))} are missing or out of date"
    if _is_stale_eval(step, experiment):
        return "evaluate again: the suite changed since it ran"
    if step.done.exists():
        return "done"
    if step.kind == "train" and step.run_dir_started:
        return "train (started before: resumes from its last checkpoint, or from the start without one)"
    return "train" if step.kind == "train" else "evaluate"


def describe_plan(experiment: Experiment) -> list[str]:
    """One line per step of `plan(experiment)` with what running it now would do, then how many steps would run;
    a run whose settings were edited since it trained is named as refused. Reads the files only: runs nothing."""
    from eaft.experiment.spec import ExperimentError

    lines, todo, refused = [], 0, 0
    steps = plan(experiment)
    for step in steps:
        try:
            if step.kind == "train":
                check_unchanged(experiment, next(r for r in experiment.runs if r.name == step.name))
            status = step_status(step, experiment)
            todo += status != "done"
        except ExperimentError as err:
            status, refused = f"refused: {err}", refused + 1
        lines.append(f"  {step.kind} {step.name}: {status}")
    total = f"{todo} of {len(steps)} steps to run"
    if refused:
        total += f"; {refused} refused: a run now stops at the first of them, naming it"
    return [*lines, total]


def run_step(step: Step, log_dir: Path) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{step.kind}-{step.name.replace('/', '-')}.log"
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {shlex.join(step.command)}\n")
        handle.flush()
        code = subprocess.call(step.command, stdout=handle, stderr=subprocess.STDOUT)
    if code != 0 or not step.done.exists():
        raise RuntimeError(f"{step.kind} {step.name!r} failed (exit {code}); see {log}")


def _is_stale_eval(step: Step, experiment: Experiment) -> bool:
    from eaft.evaluate.runner import results_are_stale

    return step.kind == "eval" and step.done.exists() and results_are_stale(step.done, _suite(experiment))


def execute(step: Step, experiment: Experiment, bar: Any) -> None:
    if _is_stale_eval(step, experiment):
        bar.write(f"[experiment] eval {step.name}: the suite changed since it ran; evaluating again")
        step.done.unlink()
    if step.redo:
        bar.write(f"[experiment] train {step.name}: evaluation points are missing or out of date; training it again")
    if step.done.exists() and not step.redo:
        bar.write(f"[experiment] {step.kind} {step.name}: done, skipped")
    else:
        if step.config is not None:
            _write_config(*step.config)
        if step.checkpoint is not None and not step.checkpoint.is_dir():
            raise RuntimeError(
                f"eval {step.name!r}: {step.checkpoint} is missing; the run must be trained again "
                f"(--rerun {step.name.split('/')[0]}) to evaluate it"
            )
        bar.set_postfix_str(f"{step.kind} {step.name}")
        started = time.time()
        run_step(step, experiment.out / "logs")
        bar.write(f"[experiment] {step.kind} {step.name}: {time.time() - started:.0f} s")
    if step.checkpoint is not None and not experiment.keep_checkpoints:
        shutil.rmtree(step.checkpoint, ignore_errors=True)
    bar.update(1)


def discard_checkpoints(run: RunSpec) -> None:
    """Every checkpoint of a finished run: its evaluations are done (keep_checkpoints: false)."""
    from eaft.train.run_dir import CHECKPOINT

    for path in run.run_dir.iterdir():
        if CHECKPOINT.match(path.name) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def eval_dirs(experiment: Experiment) -> list[Path]:
    """Every finished evaluation of the runs, run by run in step order."""
    dirs = []
    for run in experiment.runs:
        found = (experiment.evals / run.name).glob("step-*/results.json")
        dirs += sorted((p.parent for p in found), key=lambda d: int(d.name.partition("-")[2]))
    return dirs


def run_experiment(experiment: Experiment, rerun: list[str] = ()) -> Path:
    """Run what is not done yet and write the report; returns the report folder."""
    from eaft.ownership import own_folder

    with own_folder(experiment.out, "eaft experiment"):  # one runner per experiment folder
        return _run_owned(experiment, rerun)


def _run_owned(experiment: Experiment, rerun: list[str]) -> Path:
    from tqdm import tqdm

    from eaft.evaluate.report import write_report
    from eaft.experiment.spec import discard_run
    from eaft.experiment.timings import write_timings

    validate(experiment)
    for name in rerun:
        discard_run(experiment, name)
    for run in experiment.runs:
        check_unchanged(experiment, run)
    started = time.time()
    # in process, one bar step per run (its training and evaluations); else each evaluation counts too
    with tqdm(total=len(plan(experiment)), desc=f"experiment {experiment.name}", unit="step") as bar:
        execute(_eval_step(experiment, None, step=0), experiment, bar)
        for run in experiment.runs:
            execute(_train_step(experiment, run), experiment, bar)
            if experiment.in_process:
                if not experiment.keep_checkpoints:
                    discard_checkpoints(run)
                continue
            evals = checkpoint_evals(experiment, run)
            bar.total += len(evals) - 1  # the checkpoints are known once the run has trained
            bar.refresh()
            for step in evals:
                execute(step, experiment, bar)
            if experiment.curves and not experiment.keep_checkpoints:
                discard_checkpoints(run)
    report = experiment.out / "report"
    write_report(experiment.evals / "base", eval_dirs(experiment), report)
    write_timings(experiment, report, time.time() - started)
    print(f"[experiment] {experiment.name}: {time.time() - started:.0f} s; report in {report}", file=sys.stderr)
    return report
