"""Scoring a model that is already in memory (a training run's model at one of its steps), with no checkpoint
written, no reload and no new process.

`LoadedModelHandle` stands where `ModelHandle` stands in `run_suite`: tasks call `load()` and `base_model()` on it
as on any handle. Its cache identity is the SHA-256 of the weights themselves (every parameter and buffer, in
order, with names, shapes and dtypes), so a result is reused only for bit-identical weights, e.g. when a killed
run is trained again to the same step. `evaluation_mode` switches the model to eval mode for the scoring and
restores the training state (mode, RNG states, KV-cache setting) afterwards, so that a run evaluated along the
way trains exactly as one that is not.
"""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from eaft.evaluate.lm import ModelHandle


def weights_sha256(model: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer of `model` (name, dtype, shape and bytes), in state-dict order."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        data = tensor.detach()
        digest.update(f"{name}\0{data.dtype}\0{tuple(data.shape)}\n".encode())
        if data.numel():
            flat = data.contiguous().view(-1).view(torch.uint8) if data.dtype != torch.bool else data.to(torch.uint8)
            digest.update(memoryview(flat.cpu().numpy()))
    return digest.hexdigest()


class LoadedModelHandle(ModelHandle):
    """A handle over a model and tokenizer already in memory; `base` names the model it was fine-tuned from
    (what `base_model()` means for a LoRA model, and the reference a self-consistency task defaults to)."""

    def __init__(
        self, model: Any, tokenizer: Any, *, base: str | None, dtype: str, label: dict[str, Any] | None = None
    ) -> None:
        super().__init__(base, None, dtype=dtype, device=str(next(model.parameters()).device))
        self._loaded = (model, tokenizer)
        self.label = dict(label or {})
        self._identity: dict[str, Any] | None = None
        self.is_peft = hasattr(model, "disable_adapter")

    def load(self) -> tuple[Any, Any]:
        return self._loaded

    def identity(self) -> dict[str, Any]:
        if self._identity is None:
            self._identity = {"dtype": self.dtype, "weights_sha256": weights_sha256(self._loaded[0]), **self.label}
        return self._identity

    def describe(self) -> dict[str, Any]:
        where = ", ".join(f"{k} {v}" for k, v in self.label.items())
        return {"model": f"in the training process ({where})" if where else "in memory", "adapter": None}

    def base_identity(self) -> dict[str, Any]:
        # A LoRA model with its adapter off is its base; a fully fine-tuned model has no base inside it.
        return super().base_identity() if self.is_peft else self.identity()

    @contextlib.contextmanager
    def base_model(self) -> Iterator[tuple[Any, Any]]:
        model, tokenizer = self._loaded
        if not self.is_peft:
            yield model, tokenizer
        else:
            with model.disable_adapter():
                yield model, tokenizer

    def release(self) -> None:
        """The model belongs to the training run: nothing is released."""


@contextlib.contextmanager
def evaluation_mode(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode (no dropout) and the KV cache on for the scoring; the training state exactly as it was after."""
    was_training = model.training
    config = getattr(model, "config", None)
    use_cache = getattr(config, "use_cache", None)
    states = (torch.get_rng_state(), random.getstate(), np.random.get_state())
    model.eval()
    if config is not None:
        config.use_cache = True
    try:
        yield
    finally:
        if config is not None:
            config.use_cache = use_cache
        model.train(was_training)
        torch.set_rng_state(states[0])
        random.setstate(states[1])
        np.random.set_state(states[2])
