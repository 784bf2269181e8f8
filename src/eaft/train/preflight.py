"""Checks that run before the expensive parts: the model source before any loading, the model against the
config right after loading (LoRA target names, the objective's top-k against the vocabulary)."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch

from eaft.models import is_default
from eaft.train.run_dir import RunError


def check_model_source(name: str | None) -> None:
    """A local path that does not exist is named as such (rather than taken for a hub id and fetched)."""
    if is_default(name):
        return
    text = str(name)
    path = Path(text).expanduser()
    looks_local = (
        text.startswith((".", "/", "~"))
        or text.count("/") > 1
        or (len(path.parts) > 1 and Path(path.parts[0]).is_dir())
    )
    if looks_local and not path.is_dir():
        raise RunError(f"model={text!r}: no such local folder (a hub id has the form org/name)")


def check_lora_targets(model: torch.nn.Module, targets: str | list[str]) -> None:
    """Every named LoRA target is a module of the model; the closest name is suggested otherwise."""
    if isinstance(targets, str):
        return  # 'all-linear': peft picks the layers
    leaves = sorted({name.rsplit(".", 1)[-1] for name, _ in model.named_modules() if name})
    for target in targets:
        if target not in leaves:
            hint = difflib.get_close_matches(target, leaves, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
            raise RunError(f"lora_target {target!r}: the model has no such module{extra} (linear layers: {linear})")


def check_objective_fits(objective: Any, model: torch.nn.Module) -> None:
    """The top-k entropy needs k <= the vocabulary."""
    spec = objective.entropy_spec()
    head = model.get_output_embeddings()
    vocab = head.weight.shape[0] if head is not None else int(model.config.vocab_size)
    if spec.mode == "topk" and spec.k > vocab:
        raise RunError(
            f"objective_args.k={spec.k}: larger than the model's vocabulary ({vocab} tokens); choose k <= {vocab}"
        )
