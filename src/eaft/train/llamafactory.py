"""LLaMA-Factory SFT YAMLs, translated to `eaft train` keys.

Honoured keys (translated): `model_name_or_path` -> model, `finetuning_type` (lora | full), `use_eaft_loss` /
`eaft_alpha` -> objective eaft (top-k 20 entropy divided by 3.0, as LLaMA-Factory computes it), `use_dft_loss` ->
objective dft, `use_asft_loss` / `asft_alpha` -> objective asft with alpha (one loss flag at most),
`warmup_ratio` -> warmup_steps (a fraction), `stage` (sft only), `do_train` (true only).
Honoured as they are: `cutoff_len`, `max_samples`, `val_size`, `packing`, `lora_rank`, `lora_alpha`,
`lora_dropout`, `lora_target`, `dataset` (a local file, or names in `dataset_dir`/dataset_info.json),
`dataset_dir`, `trust_remote_code`, `overwrite_output_dir`, and every `transformers.TrainingArguments` key.
Accepted without effect: `template` (the tokenizer's own chat template renders conversations), `overwrite_cache`
and `preprocessing_num_workers` (nothing is cached), `plot_loss` (the curve is always plotted), `flash_attn: auto`.
Any other key is refused by name.
"""

from __future__ import annotations

import logging
from typing import Any

from eaft.train.config import ConfigError, our_fields, training_fields

logger = logging.getLogger(__name__)

MARKERS = (
    "model_name_or_path",
    "finetuning_type",
    "stage",
    "use_eaft_loss",
    "use_dft_loss",
    "use_asft_loss",
    "eaft_alpha",
    "asft_alpha",
    "template",
)
#: LLaMA-Factory's loss flags, each selecting one objective.
LOSS_FLAGS = {"use_eaft_loss": "eaft", "use_dft_loss": "dft", "use_asft_loss": "asft"}
RENAMED = {"model_name_or_path": "model", "finetuning_type": "finetuning"}
NO_EFFECT = ("template", "overwrite_cache", "preprocessing_num_workers", "plot_loss")
#: LLaMA-Factory computes H = entropy of the top-20 renormalized distribution, divided by 3.0.
LF_EAFT_ARGS = {"k": 20, "normalizer": 3.0}


def is_llamafactory(config: dict[str, Any]) -> bool:
    return any(key in config for key in MARKERS)


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


def translate_llamafactory(config: dict[str, Any], where: str) -> dict[str, Any]:
    """A LLaMA-Factory SFT config as `eaft train` keys; a key neither side knows is refused by name."""
    config = dict(config)
    stage = config.pop("stage", "sft")
    if stage != "sft":
        raise ConfigError(f"{where}: stage={stage!r} is not supported; eaft train runs supervised fine-tuning (sft)")
    if config.pop("do_train", True) is not True:
        raise ConfigError(f"{where}: do_train must be true for eaft train")
    if config.get("finetuning_type", "lora") not in ("lora", "full"):
        raise ConfigError(f"{where}: finetuning_type={config['finetuning_type']!r} is not supported (lora or full)")
    flash = config.pop("flash_attn", "auto")
    if flash != "auto":
        raise ConfigError(f"{where}: flash_attn={flash!r} is not supported; the model's default attention is used")
    for key in NO_EFFECT:
        if key in config:
            logger.info("%s: %s=%r is accepted without effect", where, key, config.pop(key))
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
    return config
