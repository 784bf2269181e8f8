"""An experiment file: one base model, one data set, several runs, one suite; parsed and checked here.

See `eaft.experiment` for the file's keys. Runs whose settings differ only in `seed` form one family.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eaft.errors import UsageError
from eaft.shipped import not_found_hint, shipped_file

EXPERIMENT_KEYS = (
    "name",
    "out",
    "train",
    "suite",
    "eval_limit",
    "launcher",
    "eval_steps",
    "eval_every",
    "eval_in_process",
    "keep_checkpoints",
    "runs",
)
#: Keys that tell the seeds of one family apart (everything else must match).
SEED_KEYS = ("seed", "data_seed", "output_dir")
RUN_KEYS = ("name", "objective", "objective_args", "overrides")
#: Keys the runner sets itself to start or continue a run; they are not part of what the run is.
RUNNER_KEYS = ("resume", "overwrite_output_dir")


class ExperimentError(UsageError, ValueError):
    """A malformed experiment file; the message names the file and key."""


@dataclass(frozen=True)
class RunSpec:
    name: str
    config: dict[str, Any]  # the merged `eaft train` mapping of this run, output_dir included
    family: str = ""  # the first run whose settings equal this one's but for the seed

    @property
    def run_dir(self) -> Path:
        return Path(self.config["output_dir"])


@dataclass
class Experiment:
    name: str
    source: Path
    out: Path
    suite: Path
    runs: list[RunSpec]
    eval_limit: int | None = None
    launcher: list[str] = field(default_factory=list)
    schedule: list[int] | str | None = None  # eval_steps (or eval_every as 'every:N'); None: final models only
    keep_checkpoints: bool = True
    in_process: bool = True  # score each run in its training process; False: saved checkpoints, `eaft eval`

    @property
    def curves(self) -> bool:
        return self.schedule is not None

    @property
    def base_model(self) -> str:
        return str(self.runs[0].config.get("model", "default"))

    @property
    def evals(self) -> Path:
        return self.out / "evals"

    def point_dir(self, run: str, step: int) -> Path:
        """Where the evaluation of run `run` at optimizer step `step` goes (its final model included)."""
        return self.evals / run / f"step-{step}"


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ExperimentError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _unknown(keys: Any, allowed: tuple[str, ...], where: str) -> None:
    import difflib

    for key in keys:
        if key not in allowed:
            hint = difflib.get_close_matches(key, allowed, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ExperimentError(f"{where}: unknown key {key!r}{extra} (valid: {', '.join(allowed)})")


def _train_base(value: Any, source: Path) -> dict[str, Any]:
    from eaft.train.config import ConfigError, load_yaml

    if isinstance(value, str):
        try:
            return load_yaml(source.parent / value)
        except ConfigError as err:
            raise ExperimentError(f"{source}: train: {err}") from None
    train = dict(_mapping(value, f"{source}: train"))
    base = train.pop("base", None)
    if base is None:
        return train
    try:
        return {**load_yaml(source.parent / str(base)), **train}
    except ConfigError as err:
        raise ExperimentError(f"{source}: train.base: {err}") from None


def _suite_path(source: Path, value: str) -> Path:
    """`suite:` relative to the experiment file; else a shipped suite by name (`quick`) or `configs/...` path."""
    suite = source.parent / value
    if suite.is_file():
        return suite
    shipped = shipped_file(value, "suites")
    if shipped is None or not shipped.is_file():
        raise ExperimentError(
            f"{source}: suite {value!r} not found at {suite} (relative to the experiment file)"
            f"{not_found_hint('suites')}"
        )
    return shipped


def _run_spec(entry: Any, index: int, train: dict[str, Any], out: Path, source: Path) -> RunSpec:
    where = f"{source}: runs[{index}]"
    entry = {"objective": entry} if isinstance(entry, str) else _mapping(entry, where)
    _unknown(entry, RUN_KEYS, where)
    if "objective" not in entry:
        raise ExperimentError(f"{where}: missing key 'objective' (a registry name such as sft or eaft)")
    name = str(entry.get("name", entry["objective"]))
    overrides = _mapping(entry.get("overrides", {}), f"{where}.overrides")
    # a run's objective_args replace the shared ones: they belong to one objective
    config = {**train, **overrides, "objective": entry["objective"], "objective_args": entry.get("objective_args", {})}
    config["output_dir"] = str(out / "runs" / name)
    return RunSpec(name=name, config=config)


def load_experiment(path: str | Path) -> Experiment:
    """An experiment file, or a shipped experiment's name (`eaft.shipped`), parsed and checked."""
    from eaft.shipped import find_shipped, not_found_hint

    source = find_shipped(path, "experiments")
    if not source.is_file():
        raise ExperimentError(f"{source}: no such experiment file{not_found_hint('experiments')}")
    try:
        data = _mapping(yaml.safe_load(source.read_text(encoding="utf-8")), str(source))
    except yaml.YAMLError as err:
        raise ExperimentError(f"{source}: invalid YAML: {err}") from None
    _unknown(data, EXPERIMENT_KEYS, str(source))
    for key in ("train", "suite", "runs"):
        if key not in data:
            raise ExperimentError(f"{source}: missing key {key!r}")
    name = str(data.get("name", source.stem))
    out = Path(data.get("out", Path("runs") / "experiments" / name))
    train = _train_base(data["train"], source)
    if not isinstance(data["runs"], list) or not data["runs"]:
        raise ExperimentError(f"{source}: runs must be a non-empty list")
    runs = [_run_spec(entry, i, train, out, source) for i, entry in enumerate(data["runs"])]
    names = [r.name for r in runs]
    if len(set(names)) != len(names) or "base" in names:
        raise ExperimentError(f"{source}: run names must be unique and not 'base', got {names}")
    suite = _suite_path(source, str(data["suite"]))
    limit = data.get("eval_limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ExperimentError(f"{source}: eval_limit must be a positive integer, got {limit!r}")
    launcher = shlex.split(str(data["launcher"])) if data.get("launcher") else []
    schedule, keep, in_process = _curve_keys(data, source, launcher)
    experiment = Experiment(name, source, out, suite, runs, limit, launcher, schedule, keep, in_process)
    runs = with_families(runs)
    if in_process:
        experiment.runs = [_with_evaluation(run, experiment) for run in runs]
    else:
        experiment.runs = [_with_checkpoints(run, experiment, source) for run in runs]
    return experiment


def _curve_keys(data: dict[str, Any], source: Path, launcher: list[str]) -> tuple[Any, bool, bool]:
    from eaft.evaluate.schedule import ScheduleError, parse_schedule

    steps, every, keep = data.get("eval_steps"), data.get("eval_every"), data.get("keep_checkpoints", True)
    if steps is not None and every is not None:
        raise ExperimentError(f"{source}: set eval_steps or eval_every, not both")
    schedule = None
    if steps is not None:
        try:
            schedule = parse_schedule(steps, f"{source}: eval_steps")
        except ScheduleError as err:
            raise ExperimentError(str(err)) from None
        if schedule == []:
            raise ExperimentError(f"{source}: eval_steps must name at least one step (leave it out for none)")
    if every is not None:
        if not _positive_int(every):
            raise ExperimentError(f"{source}: eval_every must be a positive step count, got {every!r}")
        schedule = f"every:{every}"
    if not isinstance(keep, bool):
        raise ExperimentError(f"{source}: keep_checkpoints must be true or false, got {keep!r}")
    in_process = data.get("eval_in_process", not launcher)
    if not isinstance(in_process, bool):
        raise ExperimentError(f"{source}: eval_in_process must be true or false, got {in_process!r}")
    if in_process and launcher:
        raise ExperimentError(
            f"{source}: a launcher trains across processes, where no process holds the whole model; set "
            "eval_in_process: false (checkpoints are saved and scored by `eaft eval`) or drop the launcher"
        )
    return schedule, keep, in_process


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _with_evaluation(run: RunSpec, experiment: Experiment) -> RunSpec:
    """The run's config scores the suite in its training process: each point into <out>/evals/<run>/step-<N>/."""
    config = {
        **run.config,
        "eval_suite": str(experiment.suite),
        "eval_limit": experiment.eval_limit,
        "eval_suite_steps": experiment.schedule if experiment.curves else [],
        "eval_dir": str(experiment.evals / run.name),
        "eval_base": False,  # the experiment scores the base once, for every run
        "eval_series": run.name,
        "eval_family": run.family,
    }
    return RunSpec(run.name, config, run.family)


def _with_checkpoints(run: RunSpec, experiment: Experiment, source: Path) -> RunSpec:
    """The run's config saves a checkpoint at every evaluated step (and never rotates one away)."""
    from eaft.evaluate.schedule import resolve_schedule

    config = dict(run.config)
    if not experiment.curves:
        return run
    if config.get("save_total_limit") is not None:
        raise ExperimentError(
            f"{source}: run {run.name!r}: save_total_limit would delete checkpoints before they are evaluated; "
            "drop it (keep_checkpoints: false deletes each one after its evaluation)"
        )
    if isinstance(experiment.schedule, list):
        config["checkpoint_steps"] = list(experiment.schedule)
    elif experiment.schedule.startswith("every:"):
        config["save_steps"] = int(experiment.schedule.partition(":")[2])
    else:
        total = config.get("max_steps")
        if not _positive_int(total):
            raise ExperimentError(
                f"{source}: run {run.name!r}: eval_steps {experiment.schedule!r} places checkpoints from max_steps, "
                "which the run does not set; set max_steps or list the steps"
            )
        config["checkpoint_steps"] = resolve_schedule(experiment.schedule, total)[:-1] or [total]
    return RunSpec(run.name, config, run.family)


def with_families(runs: list[RunSpec]) -> list[RunSpec]:
    """Each run's family: the first run whose config equals its own but for the seed keys."""
    firsts: list[tuple[dict[str, Any], str]] = []
    out = []
    for run in runs:
        key = {k: v for k, v in run.config.items() if k not in SEED_KEYS}
        family = next((name for other, name in firsts if other == key), None)
        if family is None:
            firsts.append((key, run.name))
            family = run.name
        out.append(RunSpec(run.name, run.config, family))
    return out


def validate(experiment: Experiment) -> None:
    """Every run's training config and the suite are checked without running anything.

    On a machine without an accelerator, TrainingArguments' hardware check (bf16 needs a GPU) is relaxed with
    `use_cpu`, so a full-scale recipe can be checked anywhere; its keys and values are still validated.
    """
    import torch

    from eaft.evaluate.suite import load_suite
    from eaft.train.config import build_config

    relax = {} if torch.cuda.is_available() else {"use_cpu": True}
    for run in experiment.runs:
        build_config({**run.config, **relax}, f"{experiment.source}: run {run.name!r}")
    load_suite(experiment.suite, limit=experiment.eval_limit)


def config_path(experiment: Experiment, run: RunSpec) -> Path:
    return experiment.out / "configs" / f"{run.name}.yaml"


def changed_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two run configs (the runner's own keys aside)."""
    keys = (set(old) | set(new)) - set(RUNNER_KEYS)
    return sorted(k for k in keys if old.get(k) != new.get(k))


def check_unchanged(experiment: Experiment, run: RunSpec) -> None:
    """A finished or started run whose settings were edited since it ran is refused: its results would not
    match the file. (Its stored config is the one it ran with: the runner writes it only when it trains.)"""
    stored = config_path(experiment, run)
    if not stored.is_file() or not run.run_dir.is_dir():
        return
    ran = yaml.safe_load(stored.read_text(encoding="utf-8")) or {}
    changed = changed_keys(ran, run.config)
    if changed:
        detail = ", ".join(f"{k}: {ran.get(k)!r} -> {run.config.get(k)!r}" for k in changed[:6])
        raise ExperimentError(
            f"{experiment.source}: run {run.name!r} was trained with other settings ({detail}); pass "
            f"--rerun {run.name} to train it again, or give the experiment a new `out`"
        )


def discard_run(experiment: Experiment, name: str) -> None:
    """Everything of one run (--rerun NAME): its run directory, evaluations and stored config."""
    import shutil

    runs = {run.name: run for run in experiment.runs}
    if name not in runs:
        raise ExperimentError(f"--rerun {name!r}: no such run (runs: {', '.join(runs)})")
    for path in (runs[name].run_dir, experiment.evals / name):
        shutil.rmtree(path, ignore_errors=True)
    config_path(experiment, runs[name]).unlink(missing_ok=True)
