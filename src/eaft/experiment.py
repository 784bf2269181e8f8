"""`eaft experiment EXPERIMENT.yaml`: one base model, one dataset, several objectives — trained, evaluated, compared.

```yaml
name: gsm8k_cpu                       # default: the file name
out: runs/experiments/gsm8k_cpu       # relative to the current directory (default runs/experiments/<name>)
train: ../train/base.yaml             # an `eaft train` config file (relative to this YAML), or a mapping
                                      # (which may name a `base:` file, relative to this YAML)
suite: ../suites/quick.yaml           # an `eaft eval` suite (relative to this YAML)
eval_limit: 50                        # optional: `eaft eval --limit`
launcher: accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml   # optional training prefix
runs:
  - objective: sft                    # the run's name defaults to its objective
  - name: eaft_lr2
    objective: eaft
    objective_args: {alpha: 1.0}
    overrides: {learning_rate: 2.0e-4}
```

Each training and each evaluation runs as its own process (`python -m eaft.cli ...`, or the launcher), logging to
`<out>/logs/`. The runner is resumable: a run whose `report.md` exists, or an evaluation whose `results.json` exists,
is skipped; a training run interrupted after a checkpoint continues from it. The forgetting table and scatter are
written by `eaft report` into `<out>/report/`.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

EXPERIMENT_KEYS = ("name", "out", "train", "suite", "eval_limit", "launcher", "runs")
RUN_KEYS = ("name", "objective", "objective_args", "overrides")


class ExperimentError(ValueError):
    """A malformed experiment file; the message names the file and key."""


@dataclass(frozen=True)
class RunSpec:
    name: str
    config: dict[str, Any]  # the merged `eaft train` mapping of this run, output_dir included


@dataclass
class Experiment:
    name: str
    source: Path
    out: Path
    suite: Path
    runs: list[RunSpec]
    eval_limit: int | None = None
    launcher: list[str] = field(default_factory=list)

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
    return Experiment(name, source, out, suite, runs, limit, launcher)


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


def _python(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "eaft.cli", *args]


def _write_config(path: Path, config: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    os.replace(tmp, path)


def _train_step(experiment: Experiment, run: RunSpec) -> Step:
    from eaft.train.run import complete_checkpoints

    run_dir = Path(run.config["output_dir"])
    config = dict(run.config)
    if complete_checkpoints(run_dir):
        config["resume"] = True
    elif run_dir.is_dir() and any(run_dir.iterdir()):
        config["overwrite_output_dir"] = True  # started, but died before its first checkpoint
    path = experiment.out / "configs" / f"{run.name}.yaml"
    _write_config(path, config)
    prefix = [*experiment.launcher, "-m", "eaft.cli"] if experiment.launcher else _python([])
    return Step("train", run.name, [*prefix, "train", str(path)], run_dir / "report.md")


def _eval_step(experiment: Experiment, name: str, run: RunSpec | None) -> Step:
    out = experiment.out / "evals" / name
    args = ["eval", "--suite", str(experiment.suite), "--out", str(out), "--model", experiment.base_model]
    if run is not None:
        run_dir = Path(run.config["output_dir"])
        if str(run.config.get("finetuning", "lora")).lower() == "full":
            args[-1] = str(run_dir / "model")
        else:
            args += ["--adapter", str(run_dir / "adapter")]
        dtype = run.config.get("dtype")
        if dtype:
            args += ["--dtype", str(dtype)]
    if experiment.eval_limit:
        args += ["--limit", str(experiment.eval_limit)]
    return Step("eval", name, _python(args), out / "results.json")


def plan(experiment: Experiment) -> list[Step]:
    """Base evaluation, then each run's training and evaluation, in file order."""
    steps = [_eval_step(experiment, "base", None)]
    for run in experiment.runs:
        steps += [_train_step(experiment, run), _eval_step(experiment, run.name, run)]
    return steps


def run_step(step: Step, log_dir: Path) -> None:
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{step.kind}-{step.name}.log"
    with log.open("a", encoding="utf-8") as handle:
        handle.write(f"$ {shlex.join(step.command)}\n")
        handle.flush()
        code = subprocess.call(step.command, stdout=handle, stderr=subprocess.STDOUT)
    if code != 0 or not step.done.exists():
        raise RuntimeError(f"{step.kind} {step.name!r} failed (exit {code}); see {log}")


def run_experiment(experiment: Experiment) -> Path:
    """Run what is not done yet and write the report; returns the report folder."""
    from tqdm import tqdm

    from eaft.evaluate.report import write_report

    validate(experiment)
    steps = plan(experiment)
    started = time.time()
    with tqdm(total=len(steps), desc=f"experiment {experiment.name}", unit="step") as bar:
        for step in steps:
            if step.done.exists():
                bar.write(f"[experiment] {step.kind} {step.name}: done, skipped")
            else:
                bar.set_postfix_str(f"{step.kind} {step.name}")
                step_start = time.time()
                run_step(step, experiment.out / "logs")
                bar.write(f"[experiment] {step.kind} {step.name}: {time.time() - step_start:.0f} s")
            bar.update(1)
    evals = experiment.out / "evals"
    report = experiment.out / "report"
    write_report(evals / "base", [evals / run.name for run in experiment.runs], report)
    print(f"[experiment] {experiment.name}: {time.time() - started:.0f} s; report in {report}", file=sys.stderr)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="eaft experiment", description=__doc__.splitlines()[0])
    parser.add_argument("experiment", help="experiment YAML (see eaft.experiment's docstring)")
    parser.add_argument("--check", action="store_true", help="validate every run and the suite, run nothing")
    args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        experiment = load_experiment(args.experiment)
        if args.check:
            validate(experiment)
            print(f"{experiment.source}: {len(experiment.runs)} runs and the suite are valid")
            return 0
        report = run_experiment(experiment)
    except (ExperimentError, RuntimeError, ValueError) as err:
        print(f"eaft experiment: {err}", file=sys.stderr)
        return 2
    print((report / "forgetting.md").read_text(encoding="utf-8"))
    return 0
