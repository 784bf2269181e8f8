"""`eaft experiment EXPERIMENT.yaml`: one base model, one dataset, several objectives — trained, evaluated, compared.

```yaml
name: gsm8k_cpu                       # default: the file name
out: runs/experiments/gsm8k_cpu       # relative to the current directory (default runs/experiments/<name>)
train: ../train/base.yaml             # an `eaft train` config file (relative to this YAML), or a mapping
                                      # (which may name a `base:` file, relative to this YAML)
suite: ../suites/quick.yaml           # an `eaft eval` suite (relative to this YAML)
eval_limit: 50                        # optional: `eaft eval --limit`
eval_steps: geometric                 # optional: also score each run along its training: a list of steps,
                                      # 'geometric' / 'geometric:N' (dense at the start) or 'every:N'
                                      # (`eval_every: N` means the same); the base is step 0 and the final model
                                      # the last point of each curve
eval_in_process: true                 # optional (default true without a launcher): score each point on the model
                                      # in its training process; false: save checkpoints, score them with `eaft eval`
keep_checkpoints: false               # optional: delete a run's checkpoints once it is scored (default true)
launcher: accelerate launch --config_file configs/accelerate/deepspeed_zero3.yaml   # optional training prefix
runs:
  - objective: sft                    # the run's name defaults to its objective
  - name: eaft_lr2
    objective: eaft
    objective_args: {alpha: 1.0}
    overrides: {learning_rate: 2.0e-4}
```

The base is scored by `eaft eval` into `<out>/evals/base/`; each run trains as its own process (`python -m
eaft.cli train`, or the launcher) and, by default, scores the suite on its model in memory at each point of its
curve and at its end (`eval_suite_steps`, eaft.train.curve_eval), into `<out>/evals/<run>/step-<N>/`; logs go to
`<out>/logs/`. With a launcher (several processes, none holding the whole model) or `eval_in_process: false`,
each point is a saved checkpoint scored by `eaft eval` in its own process instead (eaft.experiment.runner).
The runner is resumable: a run whose report.md exists and whose points all hold current results is skipped; a
killed run is started again (from its last checkpoint, if any) and scores only the points it had not finished.
Runs whose settings differ only in `seed` form one family: its seeds are drawn in one colour and resampled for
the frontier's intervals. The forgetting table, scatter, frontier and timings are written into `<out>/report/`.
"""

from __future__ import annotations

import argparse
import sys

from eaft.data_root import DataRootError, add_data_root_flag, use_data_root
from eaft.errors import debugging
from eaft.experiment.runner import Step, describe_plan, plan, run_experiment, run_step
from eaft.experiment.spec import (
    Experiment,
    ExperimentError,
    RunSpec,
    changed_keys,
    check_unchanged,
    discard_run,
    load_experiment,
    validate,
    with_families,
)

__all__ = [
    "Experiment",
    "ExperimentError",
    "RunSpec",
    "Step",
    "changed_keys",
    "check_unchanged",
    "describe_plan",
    "discard_run",
    "load_experiment",
    "main",
    "plan",
    "run_experiment",
    "run_step",
    "validate",
    "with_families",
]


def build_parser() -> argparse.ArgumentParser:
    """`eaft experiment`'s arguments (tests/test_docs.py checks the documented command lines against them)."""
    from eaft.shipped import shipped_names

    parser = argparse.ArgumentParser(prog="eaft experiment", description=__doc__.splitlines()[0])
    parser.add_argument(
        "experiment",
        help="experiment YAML (see eaft.experiment's docstring), or a shipped experiment's name: "
        + ", ".join(shipped_names("experiments")),
    )
    parser.add_argument("--check", action="store_true", help="validate every run and the suite, run nothing")
    parser.add_argument(
        "--rerun", action="append", default=[], metavar="NAME", help="discard run NAME's results and train it again"
    )
    add_data_root_flag(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        use_data_root(args.data_root)  # EAFT_DATA: the training and evaluation steps inherit it
        experiment = load_experiment(args.experiment)
        if args.check:
            validate(experiment)
            print(f"{experiment.source}: {len(experiment.runs)} runs and the suite are valid")
            print(f"what `eaft experiment` would do now, in {experiment.out}:")
            print("\n".join(describe_plan(experiment)))
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
