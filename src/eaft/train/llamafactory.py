"""LLaMA-Factory SFT YAMLs, translated to `eaft train` keys under `compat: llamafactory`.

A config is a LLaMA-Factory one when it holds a key only LLaMA-Factory has (`MARKERS`) or says
`compat: llamafactory`. It then runs by LLaMA-Factory 0.9.5's data rules (`eaft.data.llamafactory`: template,
cutoff split, validation split, packing) and its defaults where they differ from eaft's and show in the loss or
the memory (`LF_DEFAULTS`; gradient checkpointing on unless `disable_gradient_checkpointing: true`).

Translated: `model_name_or_path` -> model, `finetuning_type` (lora | full), `use_eaft_loss` / `eaft_alpha` ->
objective eaft (top-k 20 entropy divided by 3.0, as LLaMA-Factory computes it), `use_dft_loss` -> objective dft,
`use_asft_loss` / `asft_alpha` -> objective asft with alpha (one loss flag at most), `warmup_ratio` ->
warmup_steps (a fraction), `neat_packing` (implies packing), `disable_gradient_checkpointing` / `use_reentrant_gc`
-> gradient_checkpointing(_kwargs), `stage` (sft only), `do_train` (true only).
Honoured as they are: `template`, `default_system`, `enable_thinking`, `cutoff_len`, `max_samples`, `val_size`,
`packing`, the LoRA keys, `dataset`, `dataset_dir`, `trust_remote_code`, `overwrite_output_dir`, and every
`transformers.TrainingArguments` key.
Accepted at the values that describe what eaft does (`AS_EAFT_DOES`, each value checked), and without effect
whatever their value (`NO_EFFECT`). Any other key, or another value, is refused by name.
"""

from __future__ import annotations

import logging
from typing import Any

from eaft.train.config import LLAMAFACTORY_ONLY, ConfigError, our_fields, training_fields

logger = logging.getLogger(__name__)

#: LLaMA-Factory's loss flags, each selecting one objective.
LOSS_FLAGS = {"use_eaft_loss": "eaft", "use_dft_loss": "dft", "use_asft_loss": "asft"}
RENAMED = {"model_name_or_path": "model", "finetuning_type": "finetuning"}
#: LLaMA-Factory keys eaft accepts at these values only: what eaft does anyway (LLaMA-Factory's defaults).
AS_EAFT_DOES: dict[str, tuple[Any, ...]] = {
    "train_on_prompt": (False,),
    "mask_history": (False,),
    "preserve_thinking": (False, True),  # only read with mask_history, which is false
    "use_fast_tokenizer": (True,),
    "flash_attn": ("auto", "sdpa"),  # transformers' default attention is sdpa
    "split_special_tokens": (False,),
    "resize_vocab": (False,),
    "upcast_layernorm": (False,),
    "upcast_lmhead_output": (False,),
    "ignore_pad_token_for_loss": (True,),
    "streaming": (False,),
    "mix_strategy": ("concat",),
    "preprocessing_batch_size": (1000,),
    "disable_shuffling": (False,),
    "tool_format": (None,),
    "use_unsloth": (False,),
    "enable_liger_kernel": (False,),
    "use_dora": (False,),
    "use_rslora": (False,),
    "pissa_init": (False,),
    "compute_accuracy": (False,),
    "include_effective_tokens_per_second": (False,),
}
NO_EFFECT = ("overwrite_cache", "preprocessing_num_workers", "plot_loss", "print_param_status")
MARKERS = (
    *RENAMED,
    "stage",
    "do_train",
    *LOSS_FLAGS,
    "eaft_alpha",
    "asft_alpha",
    *LLAMAFACTORY_ONLY,
    *AS_EAFT_DOES,
    *NO_EFFECT,
    "disable_gradient_checkpointing",
    "use_reentrant_gc",
)
#: LLaMA-Factory's defaults (its own, or the Hugging Face ones it keeps) where eaft's differ, for keys left out.
LF_DEFAULTS: dict[str, Any] = {"cutoff_len": 2048, "learning_rate": 5e-5, "per_device_train_batch_size": 8}
#: TrainingArguments' checkpointing switch and options: the newer names first (later transformers 5 releases).
CHECKPOINTING = (
    ("activation_checkpointing", "activation_checkpointing_kwargs"),
    ("gradient_checkpointing", "gradient_checkpointing_kwargs"),
)
#: LLaMA-Factory computes H = entropy of the top-20 renormalized distribution, divided by 3.0.
LF_EAFT_ARGS = {"k": 20, "normalizer": 3.0}


def is_llamafactory(config: dict[str, Any]) -> bool:
    return config.get("compat") == "llamafactory" or any(key in config for key in MARKERS)


def _objective(config: dict[str, Any], where: str) -> tuple[str | None, dict[str, Any]]:
    flags = {flag: bool(config.pop(flag, False)) for flag in LOSS_FLAGS}
    chosen = [flag for flag, on in flags.items() if on]
    alphas = {"eaft": config.pop("eaft_alpha", None), "asft": config.pop("asft_alpha", None)}
    if len(chosen) > 1:
        together = "both" if len(chosen) == 2 else "all"
        raise ConfigError(f"{where}: {' and '.join(chosen)} are {together} true; choose one objective")
    objective = LOSS_FLAGS[chosen[0]] if chosen else None
    for name, alpha in alphas.items():
        if alpha is not None and objective != name:
            raise ConfigError(f"{where}: {name}_alpha is set but use_{name}_loss is not true")
    args = {"alpha": float(alphas[objective])} if alphas.get(objective) is not None else {}
    if objective == "eaft":
        return "eaft", {**LF_EAFT_ARGS, **args}
    return objective, args


def _check_fixed(config: dict[str, Any], where: str) -> None:
    """Keys with one meaningful value in eaft: checked, then dropped."""
    stage = config.pop("stage", "sft")
    if stage != "sft":
        raise ConfigError(f"{where}: stage={stage!r} is not supported; eaft train runs supervised fine-tuning (sft)")
    if config.pop("do_train", True) is not True:
        raise ConfigError(f"{where}: do_train must be true for eaft train")
    if config.get("finetuning_type", "lora") not in ("lora", "full"):
        raise ConfigError(f"{where}: finetuning_type={config['finetuning_type']!r} is not supported (lora or full)")
    compat = config.pop("compat", "llamafactory")
    if compat != "llamafactory":
        raise ConfigError(f"{where}: compat={compat!r} contradicts the LLaMA-Factory keys of this config")
    for key, allowed in AS_EAFT_DOES.items():
        if key in config:
            value = config.pop(key)
            if not any(value == ok and type(value) is type(ok) for ok in allowed):
                shown = " or ".join(f"{key}: {'null' if ok is None else repr(ok).lower()}" for ok in allowed)
                raise ConfigError(
                    f"{where}: LLaMA-Factory key {key}={value!r} is not supported by eaft train (accepted: {shown}, "
                    "which is what eaft does)"
                )
    for key in NO_EFFECT:
        if key in config:
            logger.info("%s: %s=%r is accepted without effect", where, key, config.pop(key))


def _gradient_checkpointing(config: dict[str, Any], where: str) -> None:
    """On unless disable_gradient_checkpointing, reentrant unless use_reentrant_gc: false (LLaMA-Factory's)."""
    disable = config.pop("disable_gradient_checkpointing", False)
    reentrant = config.pop("use_reentrant_gc", True)
    for key, value in (("disable_gradient_checkpointing", disable), ("use_reentrant_gc", reentrant)):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: {key}={value!r} must be true or false")
    flag, options = next(pair for pair in CHECKPOINTING if pair[0] in training_fields())
    asked = [config.pop(name) for name in ("gradient_checkpointing", "activation_checkpointing") if name in config]
    if not disable or any(asked):
        config[flag] = True
        if not any(name in config for _, name in CHECKPOINTING):
            config[options] = {"use_reentrant": reentrant}


def translate_llamafactory(config: dict[str, Any], where: str) -> dict[str, Any]:
    """A LLaMA-Factory SFT config as `eaft train` keys; a key neither side knows is refused by name."""
    config = dict(config)
    _check_fixed(config, where)
    _gradient_checkpointing(config, where)
    if config.get("neat_packing"):
        config["packing"] = True  # as in LLaMA-Factory, neat_packing implies packing
    objective, objective_args = _objective(config, where)
    if objective is not None:
        if config.get("objective", objective) != objective:
            raise ConfigError(f"{where}: objective={config['objective']!r} conflicts with the LLaMA-Factory loss flags")
        config["objective"] = objective
        config["objective_args"] = {**objective_args, **(config.get("objective_args") or {})}
    if "warmup_ratio" in config:
        if "warmup_steps" in config:
            raise ConfigError(f"{where}: set warmup_ratio or warmup_steps, not both")
        config["warmup_steps"] = float(config.pop("warmup_ratio"))
    for old, new in RENAMED.items():
        if old in config:
            if new in config:
                raise ConfigError(f"{where}: {old} and {new} both given; they are the same setting")
            config[new] = config.pop(old)
    known = set(our_fields()) | set(training_fields())
    refused = [key for key in config if key not in known]
    if refused:
        raise ConfigError(
            f"{where}: LLaMA-Factory key(s) {', '.join(map(repr, refused))} are not supported by eaft train "
            "(see eaft.train.llamafactory for the honoured keys)"
        )
    return {**LF_DEFAULTS, **config, "compat": "llamafactory"}
