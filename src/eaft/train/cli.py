"""`eaft train [CONFIG.yaml] [key=value ...]`: fine-tune a causal LM with any registered objective.

With no config, the embedded default runs: EAFT + LoRA on SmolLM2-135M-Instruct and the shipped house_calc set.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import textwrap
import time
from importlib import resources

import yaml

from eaft.errors import Interrupted, debugging
from eaft.train.config import (
    TRAINING_DEFAULTS,
    ConfigError,
    TrainConfig,
    apply_overrides,
    build_config,
    load_yaml,
    our_fields,
    training_fields,
)

#: TrainingArguments keys `eaft train` refuses (config.check_conflicts says why), left out of --help.
REFUSED_TRAINING_KEYS = ("use_liger_kernel", "liger_kernel_config")
USAGE = "usage: eaft train [CONFIG.yaml | SHIPPED_NAME] [key=value ...]   (eaft train --help lists every key)"


def embedded_default() -> dict:
    text = resources.files("eaft.resources").joinpath("default_train.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def parse_args(argv: list[str]) -> TrainConfig:
    """The config of a command line: a YAML file (LLaMA-Factory SFT YAMLs too) and key=value overrides."""
    from eaft.shipped import find_shipped, not_found_hint
    from eaft.train.llamafactory import is_llamafactory, translate_llamafactory

    path = argv[0] if argv and "=" not in argv[0] else None
    overrides = argv[1:] if path else argv
    if path:
        path = find_shipped(path, "train")  # a shipped config's name, or configs/train/... from a wheel
        if not path.exists():
            raise ConfigError(f"{path}: no such config file{not_found_hint('train')}")
        base, where = load_yaml(path), (f"{path} + command line" if overrides else path)
    elif any(item.partition("=")[0].strip().lstrip("-") == "dataset" for item in overrides):
        base, where = {}, "command line"  # a user's data: eaft's documented defaults, not the demo's
    else:
        where = "command line over the embedded default config" if overrides else "embedded default config"
        base = embedded_default()
    merged = apply_overrides(base, overrides)
    if is_llamafactory(merged):
        merged = translate_llamafactory(merged, where)
    return build_config(merged, where)


def _first_sentence(text: str) -> str:
    text = " ".join(str(text).split())
    end = text.find(". ")
    return text if end < 0 else text[: end + 1]


def help_text() -> str:
    from eaft.objectives import objective_names, objective_params
    from eaft.shipped import shipped_names

    shipped = "shipped configs (by name, or configs/train/NAME.yaml from any folder): " + ", ".join(
        shipped_names("train")
    )
    lines = [USAGE, "", __doc__.strip().splitlines()[-1], shipped, "", "eaft keys:"]
    for name, field in our_fields().items():
        lines.append(_entry(name, _default(field), field.metadata.get("help", "")))
    lines += ["", "objective parameters (objective_args: {name: value}, or objective_args.name=value):"]
    for objective in objective_names():
        params = objective_params(objective)
        lines.append(f"  {objective}:" + ("" if params else " (no parameters)"))
        for name, field in params.items():
            lines.append(_entry(name, field.default, field.metadata.get("help", ""), indent=4))
    lines += ["", "transformers.TrainingArguments keys (eaft's defaults differ where shown):"]
    for name, field in sorted(training_fields().items()):
        if name in REFUSED_TRAINING_KEYS:
            continue
        default = TRAINING_DEFAULTS.get(name, _default(field))
        lines.append(_entry(name, default, _first_sentence(field.metadata.get("help", ""))))
    return "\n".join(lines)


def _default(field: dataclasses.Field) -> object:
    """A field's default as a user would write it (a list or dict from its factory)."""
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return None


def _entry(name: str, default: object, help_: str, indent: int = 2) -> str:
    head = f"{' ' * indent}{name} (default: {default!r})"
    body = textwrap.fill(help_, width=110, initial_indent=" " * (indent + 4), subsequent_indent=" " * (indent + 4))
    return f"{head}\n{body}" if help_ else head


def setup_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("eaft: %(message)s"))
    root = logging.getLogger("eaft")
    if not root.handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def train_and_evaluate(config: TrainConfig):
    """The run, then (eval_suite) the evaluation after it, while this process owns the run directory."""
    from contextlib import nullcontext

    from eaft.ownership import own_folder
    from eaft.train.run import run_training

    training = config.training
    main_process = training.process_index == 0
    started = time.time()
    with own_folder(training.output_dir, "eaft train") if main_process else nullcontext():
        run_dir = run_training(config)
        after_training = config.eaft.eval_suite and config.eaft.eval_suite_steps is None  # else scored in training
        if after_training and (run_dir / "report.md").is_file() and main_process:
            from eaft.evaluate.after_training import delta_lines, evaluate_after_training

            table = evaluate_after_training(
                run_dir, config.eaft.eval_suite, limit=config.eaft.eval_limit, dtype=config.eaft.dtype
            )
            print("\n".join(delta_lines(table)))
            # training alone ends with "training complete" (eaft.train.run); this closes the whole run
            logging.getLogger("eaft").info("run complete in %.0f s: %s", time.time() - started, run_dir / "report.md")
    return run_dir


def resume_hint(config: TrainConfig) -> str:
    """What to run after an interruption: resume from the newest complete checkpoint, or start again."""
    from pathlib import Path

    from eaft.train.run_dir import complete_checkpoints

    run_dir = Path(config.training.output_dir)
    checkpoints = complete_checkpoints(run_dir)
    if (run_dir / "report.md").is_file():
        return f"the run itself had finished ({run_dir / 'report.md'})"
    if not checkpoints:
        return "no checkpoint was saved yet: the same command starts the run again"
    return f"`eaft train {run_dir / 'config.yaml'} resume=true` continues from {checkpoints[0].name}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in argv):
        print(help_text())
        return 0
    setup_logging()
    try:
        config = parse_args(argv)
    except ConfigError as err:
        if debugging():
            raise
        print(f"eaft train: {err}", file=sys.stderr)
        return 2
    from eaft.data import DataError
    from eaft.train.run_dir import RunError

    if config.eaft.eval_suite:
        from eaft.evaluate.after_training import check_suite

        check_suite(config.eaft.eval_suite, config.eaft.eval_limit)
    try:
        run_dir = train_and_evaluate(config)
    except (DataError, RunError) as err:
        if debugging():
            raise
        print(f"eaft train: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        raise Interrupted(resume_hint(config)) from None
    print(f"run directory: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
