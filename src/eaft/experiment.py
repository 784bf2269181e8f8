"""`eaft experiment EXPERIMENT.yaml`: one base model, one dataset, several objectives — trained, evaluated, compared.

```yaml
name: gsm8k_cpu                       # default: the file name
out: runs/experiments/gsm8k_cpu       # relative to the current directory (default runs/experiments/<name>)
train: ../train/base.yaml             # an `eaft train` config file (relative to this YAML), or a mapping
                                      # (which may name a `base:` file, relative to this YAML)
suite: ../suites/quick.yaml           # an `eaft eval` suite (relative to this YAML)
eval_limit: 50                        # optional: `eaft eval --limit`
launcher: accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml   # optional training prefix
eval_steps: [10, 20, 40]              # optional: also evaluate these checkpoints (or `eval_every: 10`); the
                                      # base is step 0 and the final model the last point of each curve
keep_checkpoints: false               # optional: delete each checkpoint once it is evaluated (default true)
runs:
  - objective: sft                    # the run's name defaults to its objective
  - name: eaft_lr2
    objective: eaft
    objective_args: {alpha: 1.0}
    overrides: {learning_rate: 2.0e-4}
```

Each training and each evaluation runs as its own process (`python -m eaft.cli ...`, or the launcher), logging to
`<out>/logs/`. The runner is resumable: a run whose `report.md` exists, or an evaluation whose `results.json` exists,
is skipped; a training run interrupted after a checkpoint continues from it. With `eval_steps`/`eval_every`, each
run's checkpoints are evaluated into `<out>/evals/checkpoints/<run>/step-<N>/`, and the report adds the frontier
(general scores against the target score along each run's curve, compared at matched target levels). Runs whose
settings differ only in `seed` form one family: its seeds are drawn in one colour and give the seed spread. The
forgetting table, scatter and frontier are written by `eaft report` into `<out>/report/`.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from eaft.data_root import DataRootError, add_data_root_flag, use_data_root
from eaft.errors import UsageError, debugging

EXPERIMENT_KEYS = (
    "name",
    "out",
    "train",
    "suite",
    "eval_limit",
    "launcher",
    "eval_steps",
    "eval_every",
    "keep_checkpoints",
    "runs",
)
#: Keys that tell the seeds of one family apart (everything else must match).
SEED_KEYS = ("seed", "data_seed", "output_dir")
RUN_KEYS = ("name", "objective", "objective_args", "overrides")


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
    eval_steps: list[int] | None = None
    eval_every: int | None = None
    keep_checkpoints: bool = True

    @property
    def curves(self) -> bool:
        return bool(self.eval_steps or self.eval_every)

    @property
    def base_model(self) -> str:
        return str(self.runs[0].config.get("model", "default"))


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
    source = Path(path)
    if not source.is_file():
        raise ExperimentError(f"{source}: no such experiment file")
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
    suite = source.parent / str(data["suite"])
    if not suite.is_file():
        raise ExperimentError(f"{source}: suite {data['suite']!r} not found at {suite}")
    limit = data.get("eval_limit")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ExperimentError(f"{source}: eval_limit must be a positive integer, got {limit!r}")
    launcher = shlex.split(str(data["launcher"])) if data.get("launcher") else []
    experiment = Experiment(name, source, out, suite, runs, limit, launcher, *_curve_keys(data, source))
    if experiment.curves:
        experiment.runs = [_with_checkpoints(run, experiment, source) for run in runs]
    experiment.runs = with_families(experiment.runs)
    return experiment


def _curve_keys(data: dict[str, Any], source: Path) -> tuple[list[int] | None, int | None, bool]:
    steps, every, keep = data.get("eval_steps"), data.get("eval_every"), data.get("keep_checkpoints", True)
    if steps is not None and every is not None:
        raise ExperimentError(f"{source}: set eval_steps or eval_every, not both")
    if steps is not None:
        if not isinstance(steps, list) or not steps or not all(_positive_int(s) for s in steps):
            raise ExperimentError(
                f"{source}: eval_steps must be a non-empty list of positive step numbers, got {steps!r}"
            )
        steps = sorted(set(steps))
    if every is not None and not _positive_int(every):
        raise ExperimentError(f"{source}: eval_every must be a positive step count, got {every!r}")
    if not isinstance(keep, bool):
        raise ExperimentError(f"{source}: keep_checkpoints must be true or false, got {keep!r}")
    return steps, every, keep


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _with_checkpoints(run: RunSpec, experiment: Experiment, source: Path) -> RunSpec:
    """The run's config saves a checkpoint at every evaluated step (and never rotates one away)."""
    config = dict(run.config)
    if config.get("save_total_limit") is not None:
        raise ExperimentError(
            f"{source}: run {run.name!r}: save_total_limit would delete checkpoints before they are evaluated; "
            "drop it (keep_checkpoints: false deletes each one after its evaluation)"
        )
    if experiment.eval_steps:
        config["checkpoint_steps"] = list(experiment.eval_steps)
    else:
        config["save_steps"] = experiment.eval_every
    return RunSpec(run.name, config)


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


@dataclass(frozen=True)
class Step:
    kind: str  # "train" | "eval"
    name: str
    command: list[str]
    done: Path  # exists once the step has finished
    checkpoint: Path | None = None  # the checkpoint this evaluation scores (deleted after it unless kept)
    config: tuple[Path, dict[str, Any]] | None = None  # a training step's config file, written when it runs


def _python(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "eaft.cli", *args]


def _write_config(path: Path, config: dict[str, Any]) -> None:
    from eaft.io import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(config, sort_keys=False))


#: Keys the runner sets itself to start or continue a run; they are not part of what the run is.
RUNNER_KEYS = ("resume", "overwrite_output_dir")


def _train_step(experiment: Experiment, run: RunSpec) -> Step:
    from eaft.train.run_dir import complete_checkpoints

    run_dir = run.run_dir
    config = dict(run.config)
    if complete_checkpoints(run_dir):
        config["resume"] = True
    elif run_dir.is_dir() and any(run_dir.iterdir()):
        config["overwrite_output_dir"] = True  # started, but died before its first checkpoint
    path = config_path(experiment, run)
    prefix = [*experiment.launcher, "-m", "eaft.cli"] if experiment.launcher else _python([])
    return Step("train", run.name, [*prefix, "train", str(path)], run_dir / "report.md", config=(path, config))


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
    runs = {run.name: run for run in experiment.runs}
    if name not in runs:
        raise ExperimentError(f"--rerun {name!r}: no such run (runs: {', '.join(runs)})")
    evals = experiment.out / "evals"
    for path in (runs[name].run_dir, evals / name, evals / "checkpoints" / name):
        shutil.rmtree(path, ignore_errors=True)
    config_path(experiment, runs[name]).unlink(missing_ok=True)


def eval_is_stale(step: Step, experiment: Experiment) -> bool:
    """A finished evaluation whose tasks changed since it ran: other tasks, settings or data (not merely the
    suite's comments or where its data lives). It is run again; unchanged tasks come from the cache."""
    import json

    from eaft.evaluate.cache import data_files, file_sha256
    from eaft.evaluate.suite import load_suite

    recorded = json.loads(step.done.read_text(encoding="utf-8")).get("tasks", {})
    tasks = load_suite(experiment.suite, limit=experiment.eval_limit).tasks
    if set(recorded) != {t.name for t in tasks}:
        return True
    for task in tasks:
        record = recorded[task.name]
        if record.get("backend", "native") != "native":
            continue
        hashes = sorted(file_sha256(p) for p in data_files(task))
        if (
            record.get("settings") != json.loads(json.dumps(task.settings()))
            or sorted(record["data"].values()) != hashes
        ):
            return True
    return False


def _eval_step(
    experiment: Experiment, name: str, run: RunSpec | None, *, weights: Path | None = None, step: int | None = None
) -> Step:
    """An evaluation of the base (run None), of a run's final model, or of its checkpoint `weights` at `step`."""
    out = experiment.out / "evals" / name
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
    if experiment.curves and step is not None:
        series = ("base", "base") if run is None else (run.name, run.family)
        args += ["--series", series[0], "--step", str(step), "--family", series[1]]
    return Step("eval", name, _python(args), out / "results.json")


def trained_steps(run: RunSpec) -> int | None:
    """The final optimizer step of a finished run (from its summary.json), None before it finished."""
    import json

    summary = run.run_dir / "summary.json"
    if not (run.run_dir / "report.md").is_file() or not summary.is_file():
        return None
    return int(json.loads(summary.read_text(encoding="utf-8"))["steps"])


def checkpoint_points(experiment: Experiment, final: int) -> list[int]:
    """The checkpoint steps evaluated before the final model (at `final`, evaluated as the run itself)."""
    if experiment.eval_steps:
        return [s for s in experiment.eval_steps if s < final]
    if experiment.eval_every:
        return list(range(experiment.eval_every, final, experiment.eval_every))
    return []


def run_evals(experiment: Experiment, run: RunSpec) -> list[Step]:
    """A run's evaluations: each checkpoint on its curve (once the run has trained), then the final model."""
    final = trained_steps(run) if experiment.curves else None
    steps = []
    for point in checkpoint_points(experiment, final) if final is not None else []:
        name = f"checkpoints/{run.name}/step-{point}"
        checkpoint = run.run_dir / f"checkpoint-{point}"
        step = _eval_step(experiment, name, run, weights=checkpoint, step=point)
        steps.append(replace(step, checkpoint=checkpoint))
    return [*steps, _eval_step(experiment, run.name, run, step=final)]


def plan(experiment: Experiment) -> list[Step]:
    """Base evaluation, then each run's training and evaluations, in file order (checkpoint evaluations are
    planned once their run has trained)."""
    steps = [_eval_step(experiment, "base", None, step=0)]
    for run in experiment.runs:
        steps += [_train_step(experiment, run), *run_evals(experiment, run)]
    return steps


def run_step(step: Step, log_dir: Path) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{step.kind}-{step.name.replace('/', '-')}.log"
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {shlex.join(step.command)}\n")
        handle.flush()
        code = subprocess.call(step.command, stdout=handle, stderr=subprocess.STDOUT)
    if code != 0 or not step.done.exists():
        raise RuntimeError(f"{step.kind} {step.name!r} failed (exit {code}); see {log}")


def _execute(step: Step, experiment: Experiment, bar: Any) -> None:
    if step.kind == "eval" and step.done.exists() and eval_is_stale(step, experiment):
        bar.write(f"[experiment] eval {step.name}: the suite changed since it ran; evaluating again")
        step.done.unlink()
    if step.done.exists():
        bar.write(f"[experiment] {step.kind} {step.name}: done, skipped")
    else:
        if step.config is not None:
            _write_config(*step.config)
        if step.checkpoint is not None and not step.checkpoint.is_dir():
            raise RuntimeError(
                f"eval {step.name!r}: {step.checkpoint} is missing; the run must be trained again "
                f"(delete {step.checkpoint.parent}) to evaluate it"
            )
        bar.set_postfix_str(f"{step.kind} {step.name}")
        started = time.time()
        run_step(step, experiment.out / "logs")
        bar.write(f"[experiment] {step.kind} {step.name}: {time.time() - started:.0f} s")
    if step.checkpoint is not None and not experiment.keep_checkpoints:
        shutil.rmtree(step.checkpoint, ignore_errors=True)
    bar.update(1)


def discard_checkpoints(run: RunSpec) -> None:
    """Every checkpoint of a finished run (keep_checkpoints: false): its evaluations are done."""
    from eaft.train.run_dir import CHECKPOINT

    for path in run.run_dir.iterdir():
        if CHECKPOINT.match(path.name) and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def eval_dirs(experiment: Experiment) -> list[Path]:
    """Every finished evaluation of the runs: checkpoints first, then the final models."""
    evals = experiment.out / "evals"
    dirs = []
    for run in experiment.runs:
        dirs += sorted((evals / "checkpoints" / run.name).glob("step-*/results.json"))
    return [d.parent if d.name == "results.json" else d for d in dirs] + [evals / run.name for run in experiment.runs]


def run_experiment(experiment: Experiment, rerun: list[str] = ()) -> Path:
    """Run what is not done yet and write the report; returns the report folder."""
    from tqdm import tqdm

    from eaft.evaluate.report import write_report

    validate(experiment)
    for name in rerun:
        discard_run(experiment, name)
    for run in experiment.runs:
        check_unchanged(experiment, run)
    started = time.time()
    with tqdm(total=len(plan(experiment)), desc=f"experiment {experiment.name}", unit="step") as bar:
        _execute(_eval_step(experiment, "base", None, step=0), experiment, bar)
        for run in experiment.runs:
            _execute(_train_step(experiment, run), experiment, bar)
            evals = run_evals(experiment, run)
            bar.total += len(evals) - 1  # the checkpoints are known once the run has trained
            bar.refresh()
            for step in evals:
                _execute(step, experiment, bar)
            if experiment.curves and not experiment.keep_checkpoints:
                discard_checkpoints(run)
    evals = experiment.out / "evals"
    report = experiment.out / "report"
    write_report(evals / "base", eval_dirs(experiment), report)
    print(f"[experiment] {experiment.name}: {time.time() - started:.0f} s; report in {report}", file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eaft experiment", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="experiment YAML (see eaft.experiment's docstring)")
    parser.add_argument("--check", action="store_true", help="validate every run and the suite, run nothing")
    parser.add_argument(
        "--rerun", action="append", default=[], metavar="NAME", help="discard run NAME's results and train it again"
    )
    add_data_root_flag(parser)
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        use_data_root(args.data_root)  # EAFT_DATA: the training and evaluation steps inherit it
        experiment = load_experiment(args.experiment)
        if args.check:
            validate(experiment)
            print(f"{experiment.source}: {len(experiment.runs)} runs and the suite are valid")
            return 0
        report = run_experiment(experiment, args.rerun)
    except (ExperimentError, DataRootError, RuntimeError, ValueError) as err:
        if debugging():
            raise
        print(f"eaft experiment: {err}", file=sys.stderr)
        return 2
    print((report / "forgetting.md").read_text(encoding="utf-8"))
    if (report / "frontier.md").is_file():
        print(f"frontier: {report / 'frontier.md'} and frontier.png")
    return 0
