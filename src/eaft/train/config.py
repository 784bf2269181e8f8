"""`eaft train` configuration: our typed fields beside `transformers.TrainingArguments`.

A config is a flat mapping. YAML gives the defaults, `key=value` on the command line overrides them (values are
parsed with `yaml.safe_load`, so `lora_rank=16`, `bf16=true`, `lora_target=[q_proj,v_proj]` work). Objective
parameters go in `objective_args: {alpha: 2}`, or on the command line as `objective_args.alpha=2`. Each key's help
is written once, in the field's metadata, and `eaft train --help` prints all of them. A config file may start
from another with `base: other.yaml` (a path relative to the file); its own keys override the base's.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from eaft.errors import UsageError
from eaft.fields import option

FINETUNING = ("lora", "full")
COMPAT = ("eaft", "llamafactory")
#: Keys that only the llamafactory rules read, with their defaults.
LLAMAFACTORY_ONLY = {"template": None, "default_system": None, "enable_thinking": True, "neat_packing": False}
FUSED = ("auto", "true", "false")
LORA_KEYS = ("lora_rank", "lora_alpha", "lora_dropout", "lora_target")


class ConfigError(UsageError, ValueError):
    """A bad configuration; the message names the key and what was expected."""


@dataclass
class EaftArguments:
    """The fields of `eaft train` that `transformers.TrainingArguments` does not have."""

    model: str = option(
        "default", "Hub id or local folder of a causal LM; 'default' = the embedded SmolLM2-135M-Instruct."
    )
    dtype: str = option("float32", "Weights dtype: float32, bfloat16 or float16.")
    trust_remote_code: bool = option(False, "Allow model code from the hub (passed to from_pretrained).")
    dataset: str = option(
        "house_calc",
        "A JSON/JSONL/parquet file or folder, a dataset shipped with eaft (house_calc), a LLaMA-Factory "
        "dataset_info.json name (with dataset_dir), or a hub dataset id. Comma-separate several.",
    )
    dataset_dir: str | None = option(None, "Folder with a LLaMA-Factory dataset_info.json naming the datasets.")
    data_format: str = option("auto", "Row format: auto, alpaca, sharegpt, messages or prompt_completion.")
    max_samples: int | None = option(None, "Use only the first N rows of each dataset.")
    val_size: float = option(
        0.0,
        "Rows held out for the before/after CE in report.md: a count (>= 1) or fraction. compat eaft: the last rows; "
        "compat llamafactory: LLaMA-Factory's seeded random split.",
    )
    cutoff_len: int = option(
        1024,
        "Tokens per conversation. compat eaft: the first cutoff_len tokens are kept; compat llamafactory: "
        "LLaMA-Factory's split of the budget between each prompt and response.",
    )
    packing: bool = option(
        False,
        "Pack several conversations into each row of cutoff_len tokens. compat eaft: packed conversations never "
        "attend to each other; compat llamafactory: they do, as in LLaMA-Factory (neat_packing isolates them).",
    )
    compat: str = option(
        "eaft",
        "Whose data rules the run follows: 'eaft' (the rules described here) or 'llamafactory' (LLaMA-Factory "
        "0.9.5's template, cutoff split, validation split, packing and defaults). A LLaMA-Factory YAML sets it.",
    )
    template: str | None = option(
        None,
        "compat llamafactory: LLaMA-Factory's template (chatml, smollm, smollm2, qwen, qwen3, qwen3_nothink); "
        "none reads the tokenizer's chat template as LLaMA-Factory does.",
    )
    default_system: str | None = option(None, "compat llamafactory: replaces the template's default system prompt.")
    enable_thinking: bool = option(
        True,
        "compat llamafactory, reasoning template (qwen3): an answer without a thought block gets an empty one that "
        "is trained (true) or part of the prompt with thoughts removed (false).",
    )
    neat_packing: bool = option(
        False, "compat llamafactory: packing whose packed conversations do not attend to each other."
    )
    objective: str = option(
        "sft", "Training objective by registry name: sft, eaft, masked_sft, dft, sft_kl, asft, flow, talr."
    )
    objective_args: dict = option({}, "Parameters of the objective, e.g. {alpha: 2} (see the objective list below).")
    finetuning: str = option("lora", "'lora' (PEFT adapters; the base model is frozen) or 'full'.")
    lora_rank: int = option(8, "LoRA rank r.")
    lora_alpha: float | None = option(None, "LoRA scaling alpha (default 2 × lora_rank).")
    lora_dropout: float = option(0.0, "Dropout on the LoRA input.")
    lora_target: Any = option("all", "Modules that get adapters: 'all' (every linear layer but lm_head) or names.")
    fused_loss: str | bool = option(
        "auto",
        "Compute the objective from hidden states with the fused chunked op (no [B,S,V] logits): auto, true, false.",
    )
    chunk_size: int | None = option(
        None,
        "Label tokens per chunk of the objective's fp32 statistics, on either loss path. Default: the fused op's "
        "memory-budgeted size on the fused path, 1024 on the logits path.",
    )
    checkpoint_steps: Any = option(
        None,
        "Steps at which a checkpoint is saved besides every save_steps, e.g. [10, 20, 40] (each checkpoint holds "
        "the tokenizer too, so `eaft eval` can score it; `eaft experiment` sets this from eval_steps).",
    )
    allow_non_finite: bool = option(
        False, "Train on through NaN/inf losses and weights, as transformers does (by default the run stops there)."
    )
    eval_suite: str | None = option(
        None,
        "After training, score the base and the trained model on this `eaft eval` suite: forgetting.md/.png in the "
        "run directory and the Δ Target / Δ General lines in report.md.",
    )
    eval_limit: int | None = option(None, "At most this many items per task of eval_suite (like `eaft eval --limit`).")
    eval_suite_steps: Any = option(
        None,
        "With eval_suite: also score the suite on the model in memory during training, at these optimizer steps "
        "(a list, 'geometric' or 'geometric:N' for N points dense at the start, or 'every:N'; the last step is "
        "always scored), each into eval_dir/step-<N>/, and draw the run's forgetting frontier. One process only.",
    )
    eval_dir: str | None = option(None, "Where eval_suite_steps' evaluations go (default: <output_dir>/eval).")
    eval_base: bool = option(
        True, "With eval_suite_steps: score the base model too (in memory, before the first step) into eval_dir/base/."
    )
    eval_series: str | None = option(
        None, "With eval_suite_steps: this run's name on the frontier (default: the output_dir's folder name)."
    )
    eval_family: str | None = option(
        None, "With eval_suite_steps: its family on the frontier (runs that differ only in seed; default: the series)."
    )
    resume: bool = option(False, "Continue from the last complete checkpoint in output_dir.")
    overwrite_output_dir: bool = option(False, "Allow a fresh run into an output_dir that already holds a run.")

    def lora_target_modules(self) -> str | list[str]:
        target = self.lora_target
        if isinstance(target, str):
            target = [t.strip() for t in target.split(",") if t.strip()]
        if target in (["all"], ["all-linear"]):
            return "all-linear"
        return list(target)


#: Our defaults for TrainingArguments where Hugging Face's do not suit a fine-tuning CLI.
TRAINING_DEFAULTS: dict[str, Any] = {
    "output_dir": None,
    "report_to": "none",
    "logging_steps": 10,
    "save_steps": 100,
    "learning_rate": 1e-4,
    "per_device_train_batch_size": 4,
    "remove_unused_columns": False,
    "prediction_loss_only": True,
    "logging_nan_inf_filter": False,  # a NaN loss is logged as what it is (null in metrics.jsonl), not hidden
}
#: TrainingArguments keys the trainer needs at a fixed value.
TRAINING_FIXED: dict[str, Any] = {"remove_unused_columns": False}


@dataclass
class TrainConfig:
    eaft: EaftArguments
    training: Any  # transformers.TrainingArguments
    raw: dict[str, Any]  # the merged mapping, as written to the run directory


def our_fields() -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(EaftArguments)}


def training_fields() -> dict[str, dataclasses.Field]:
    from transformers import TrainingArguments

    return {f.name: f for f in dataclasses.fields(TrainingArguments) if f.init}


def valid_keys() -> list[str]:
    return sorted(set(our_fields()) | set(training_fields()))


def unknown_key_error(key: str, where: str) -> ConfigError:
    hint = difflib.get_close_matches(key, valid_keys(), n=1, cutoff=0.6)
    extra = f"; did you mean {hint[0]!r}?" if hint else ""
    return ConfigError(f"{where}: unknown key {key!r}{extra} (eaft train --help lists every key)")


def load_yaml(path: str | Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A config file as a mapping; `base: other.yaml` (relative to the file) is read first and overridden."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such config file")
    if path.resolve() in _chain:
        raise ConfigError(f"{path}: `base` files form a cycle")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: invalid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of key: value, got {type(data).__name__}")
    base = data.pop("base", None)
    if base is None:
        return data
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base must be the path of another config file, got {base!r}")
    return {**load_yaml(path.parent / base, (*_chain, path.resolve())), **data}


def apply_overrides(config: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """`key=value` strings merged over `config`; `objective_args.alpha=2` sets one objective parameter."""
    merged = dict(config)
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip().lstrip("-")
        if not sep or not key:
            raise ConfigError(f"command line: expected key=value, got {item!r}")
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"command line: cannot parse the value of {key!r}: {err}") from None
        head, dot, sub = key.partition(".")
        if dot:
            if head != "objective_args":
                raise ConfigError(f"command line: only objective_args.<name>=value takes a dotted key, got {key!r}")
            merged["objective_args"] = {**(merged.get("objective_args") or {}), sub: value}
        else:
            merged[key] = value
    return merged


def _type_ok(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) else (hint,)
    for kind in options:
        if kind is type(None) and value is None:
            return True
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return True
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return True
        if kind in (str, bool, dict) and isinstance(value, kind):
            return True
    return False


def _accepts(hint: Any, kind: type) -> bool:
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) else (hint,)
    return kind in options


def coerce_numbers(values: dict[str, Any], hints: dict[str, Any]) -> dict[str, Any]:
    """YAML reads `1e-4` (no dot) as a string; turn such strings into the float or int a key expects."""
    out = dict(values)
    for key, value in values.items():
        hint = hints.get(key)
        if not isinstance(value, str) or hint is None or _accepts(hint, str):
            continue
        for kind in (int, float):
            if _accepts(hint, kind):
                try:
                    out[key] = kind(value) if kind is float else int(value)
                    break
                except ValueError:
                    continue
    return out


def check_our_values(values: dict[str, Any], where: str) -> None:
    hints = typing.get_type_hints(EaftArguments)
    for key, value in values.items():
        if not _type_ok(value, hints[key]):
            raise ConfigError(f"{where}: {key}={value!r} has the wrong type (expected {hints[key]})")
    steps = values.get("checkpoint_steps")
    if steps is not None and (
        not isinstance(steps, list) or not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in steps)
    ):
        raise ConfigError(f"{where}: checkpoint_steps must be a list of positive step numbers, got {steps!r}")
    if values.get("eval_suite_steps") is not None:
        from eaft.evaluate.schedule import ScheduleError, parse_schedule

        if not values.get("eval_suite"):
            raise ConfigError(f"{where}: eval_suite_steps needs eval_suite (the suite to score at those steps)")
        try:
            values["eval_suite_steps"] = parse_schedule(values["eval_suite_steps"], f"{where}: eval_suite_steps")
        except ScheduleError as err:
            raise ConfigError(str(err)) from None
    check_lora_target(values.get("lora_target", "all"), where)
    choices = {"finetuning": FINETUNING, "fused_loss": FUSED, "compat": COMPAT}
    for key, allowed in choices.items():
        if key in values and str(values[key]).lower() not in allowed:
            raise ConfigError(f"{where}: {key} must be one of {', '.join(allowed)}, got {values[key]!r}")


def check_lora_target(target: Any, where: str) -> None:
    """'all', or at least one module name: an empty list would reach PEFT as an "unexpected" error."""
    names = [t for t in target.split(",") if t.strip()] if isinstance(target, str) else target
    if not isinstance(names, list) or not names or not all(isinstance(t, str) and t.strip() for t in names):
        raise ConfigError(
            f"{where}: lora_target={target!r} names no module (expected 'all' or module names, e.g. [q_proj, v_proj])"
        )


#: (key, lowest allowed value) checked before anything loads; a value below it would fail deep inside a library.
MINIMUMS = {
    "per_device_train_batch_size": 1,
    "per_device_eval_batch_size": 1,
    "gradient_accumulation_steps": 1,
    "lora_rank": 1,
    "cutoff_len": 2,
    "chunk_size": 1,
    "max_samples": 1,
    "eval_limit": 1,
    "learning_rate": 0.0,
    "num_train_epochs": 0.0,
    "warmup_steps": 0.0,
}


def check_ranges(values: dict[str, Any], where: str) -> None:
    """Numbers in range and the dtype known, before the model loads."""
    import math

    from eaft.models import DTYPES

    for key, low in MINIMUMS.items():
        value = values.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value) or value < low:
                raise ConfigError(f"{where}: {key}={value!r} is out of range (expected a number >= {low})")
    steps = values.get("max_steps")
    if isinstance(steps, int) and not isinstance(steps, bool) and steps == 0 or (isinstance(steps, int) and steps < -1):
        raise ConfigError(f"{where}: max_steps={steps!r} is out of range (expected -1 for epochs, or >= 1)")
    if values.get("max_steps", -1) == -1 and values.get("num_train_epochs") == 0:
        raise ConfigError(
            f"{where}: num_train_epochs=0 with max_steps=-1 trains no step "
            "(expected num_train_epochs > 0, or max_steps >= 1)"
        )
    dtype = values.get("dtype")
    if dtype is not None and str(dtype) not in DTYPES:
        raise ConfigError(f"{where}: dtype={dtype!r} is not supported (expected one of {', '.join(DTYPES)})")


def check_training_types(values: dict[str, Any], hints: dict[str, Any], where: str) -> None:
    """A TrainingArguments number given as text that is not a number (`max_steps=abc`) is named here."""
    for key, value in values.items():
        hint = hints.get(key)
        if not isinstance(value, str) or hint is None or _accepts(hint, str):
            continue
        if _accepts(hint, int) or _accepts(hint, float):
            kind = "int" if _accepts(hint, int) and not _accepts(hint, float) else "float"
            raise ConfigError(f"{where}: {key}={value!r} has the wrong type (expected {kind})")


#: TrainingArguments keys that need an optional package: key -> (import name, pip name).
NEEDS_PACKAGE = {"deepspeed": ("deepspeed", "deepspeed")}


def check_packages(training: dict[str, Any], where: str) -> None:
    """A key whose package is not installed is named with the package, before TrainingArguments trips on it."""
    import importlib.util

    for key, (module, pip_name) in NEEDS_PACKAGE.items():
        if training.get(key) not in (None, "", False) and importlib.util.find_spec(module) is None:
            raise ConfigError(
                f"{where}: {key}={training[key]!r} needs the package {pip_name!r}, which is not installed "
                f"(pip install {pip_name}, or remove the {key!r} key)"
            )


def _has_accelerator() -> bool:
    import torch

    return torch.cuda.is_available()


def default_output_dir(objective: str) -> str:
    import time

    return str(Path("runs") / f"{objective}-{time.strftime('%Y%m%d-%H%M%S')}")


def split_config(merged: dict[str, Any], where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(our values, TrainingArguments values); an unknown key is an error naming the closest valid key."""
    ours, training = {}, {}
    ours_known, training_known = our_fields(), training_fields()
    for key, value in merged.items():
        if key in ours_known:
            ours[key] = value
        elif key in training_known:
            training[key] = value
        else:
            raise unknown_key_error(key, where)
    return ours, training


def check_conflicts(ours: dict[str, Any], training: dict[str, Any], where: str) -> None:
    finetuning = str(ours.get("finetuning", "lora")).lower()
    if finetuning == "full":
        defaults = our_fields()
        stray = [f"{key}={ours[key]!r}" for key in LORA_KEYS if key in ours and ours[key] != defaults[key].default]
        if stray:
            raise ConfigError(f"{where}: {', '.join(stray)} set but finetuning=full (LoRA keys need finetuning=lora)")
    for key, fixed in TRAINING_FIXED.items():
        if key in training and training[key] != fixed:
            raise ConfigError(f"{where}: {key} must be {fixed} for eaft train (got {training[key]!r})")
    if ours.get("compat", "eaft") != "llamafactory":
        stray = [
            f"{key}={ours[key]!r}" for key, default in LLAMAFACTORY_ONLY.items() if ours.get(key, default) != default
        ]
        if stray:
            raise ConfigError(f"{where}: {', '.join(stray)} applies under compat: llamafactory only")
    if training.get("use_liger_kernel"):
        raise ConfigError(
            f"{where}: use_liger_kernel=true patches the model to compute plain cross-entropy in its own forward, "
            f"which eaft's objective ({ours.get('objective', 'sft')!r}) replaces; leave it false (fused_loss=true "
            "already computes the loss without the [batch, seq, vocab] logits)"
        )
    if ours.get("resume") and training.get("resume_from_checkpoint"):
        raise ConfigError(f"{where}: set either resume=true or resume_from_checkpoint=<path>, not both")
    if ours.get("resume") and ours.get("overwrite_output_dir"):
        raise ConfigError(f"{where}: resume=true and overwrite_output_dir=true contradict each other")


def build_config(merged: dict[str, Any], where: str) -> TrainConfig:
    """Validate a merged mapping (our keys and TrainingArguments keys) into a TrainConfig."""
    from transformers import TrainingArguments

    from eaft.objectives import build_objective

    ours, training = split_config(merged, where)
    ours = coerce_numbers(ours, typing.get_type_hints(EaftArguments))
    training = coerce_numbers(training, typing.get_type_hints(TrainingArguments))
    check_our_values(ours, where)
    check_training_types(training, typing.get_type_hints(TrainingArguments), where)
    check_ranges({**ours, **training}, where)
    check_conflicts(ours, training, where)
    check_packages(training, where)
    args = EaftArguments(**ours)
    args.finetuning = str(args.finetuning).lower()
    args.fused_loss = str(args.fused_loss).lower()
    try:
        build_objective(args.objective, args.objective_args)
    except (KeyError, ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {err.args[0] if err.args else err}") from None
    kwargs = {**TRAINING_DEFAULTS, **training}
    kwargs.setdefault("dataloader_pin_memory", _has_accelerator())
    kwargs["output_dir"] = kwargs["output_dir"] or default_output_dir(args.objective)
    try:
        training_args = TrainingArguments(**kwargs)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{where}: {err}") from None
    raw = {**{f: getattr(args, f) for f in our_fields()}, **kwargs}
    return TrainConfig(eaft=args, training=training_args, raw=raw)
