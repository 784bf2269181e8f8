"""`ObjectiveLoss`: the one loss module. It owns the output head, picks the fused or the materialized path once,
holds `chunk_size` and `backend`, and sums the step statistics.

- Materialized: the model's own logits, the statistics read chunk by chunk in fp32 (any model, any logit transform).
- Fused: the decoder's last hidden states times the lm_head inside `eaft.ops`, never the [B, S, V] logits.
Both end in `eaft.objectives.loss`, so every objective trains the same way on either. `chunk_size` means label
tokens per chunk (read in fp32) on both, and in `eaft analyze`; its default is the fused op's memory budget
(`eaft.ops.default_chunk_size`) when fused, else `eaft.ops.LOGITS_CHUNK_TOKENS`.

`eaft train`'s Trainer subclass, TRL's `EaftSFTTrainer`, the `compute_loss_func` adapter (`ObjectiveLossFunc`)
and `eaft analyze` are thin layers on top. The reference model of `sft_kl` / `asft` is the model with its LoRA
adapters disabled (no second copy) or, under full fine-tuning, a frozen copy of the initial model.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor

from eaft.objectives import Objective, StepStats, build_objective
from eaft.objectives.loss import causal_lm_objective_loss, fused_linear_objective
from eaft.ops import LOGITS_CHUNK_TOKENS, default_chunk_size, label_rows

logger = logging.getLogger(__name__)

#: Config attributes that change logits after the lm_head; the fused op computes plain `hidden @ W.T + b`.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")
FUSED_CHOICES = ("auto", "true", "false")


class Reference:
    """Frozen reference predictions for `sft_kl`: adapters disabled (LoRA) or a frozen copy (full fine-tuning)."""

    def __init__(self, model: torch.nn.Module, lora: bool) -> None:
        self.lora = lora
        # Under LoRA the reference is the trained model itself (unwrapped), run with its adapters disabled.
        self.model = model if lora else copy.deepcopy(model).eval().requires_grad_(False)

    def context(self):
        return self.model.disable_adapter() if self.lora else contextlib.nullcontext()


def base_causal_lm(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers CausalLM under DDP / DeepSpeed / FSDP1 wrappers (`.module`) and PEFT (LoRA stays injected)."""
    while isinstance(getattr(model, "module", None), torch.nn.Module):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def sharded_head_reason(head: torch.nn.Module) -> str | None:
    """Why the lm_head weight is sharded across ranks (FSDP, DeepSpeed ZeRO-3), or None when each rank holds it all.

    The fused op multiplies by the whole [V, H] weight outside the model's forward, where FSDP and ZeRO-3 have
    already resharded it; refused rather than computed from a shard.
    """
    weight = head.weight
    if type(weight).__name__ == "DTensor" or hasattr(weight, "device_mesh"):
        return "the lm_head weight is a sharded DTensor (FSDP2)"
    if hasattr(weight, "ds_id") or hasattr(weight, "ds_status"):
        return "the lm_head weight is partitioned by DeepSpeed ZeRO-3"
    if type(weight).__name__ == "FlatParameter" or hasattr(weight, "_is_flat_param"):
        return "the lm_head weight lives in an FSDP flat parameter"
    return None


def sharded_launch_reason() -> str | None:
    """Why the launcher will shard parameters (accelerate's FSDP or ZeRO-3 environment), or None."""
    import os

    if os.environ.get("ACCELERATE_USE_FSDP", "").lower() in ("1", "true"):
        return "the run is launched with FSDP (parameters are sharded)"
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true"):
        if os.environ.get("ACCELERATE_DEEPSPEED_ZERO_STAGE", "") == "3":
            return "the run is launched with DeepSpeed ZeRO-3 (parameters are partitioned)"
    return None


def fused_unsupported_reason(model: torch.nn.Module) -> str | None:
    """Why the fused op cannot compute this model's objective exactly, or None when it can."""
    base = base_causal_lm(model)
    config = getattr(base, "config", None)
    for attr in LOGIT_TRANSFORMS:
        value = getattr(config, attr, None)
        if value not in (None, 0, 0.0, 1, 1.0):
            return f"the model transforms its logits after lm_head ({attr}={value})"
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if head is None or not isinstance(getattr(head, "weight", None), Tensor):
        return "the model has no plain lm_head weight"
    if type(head) is not torch.nn.Linear:
        return f"lm_head is a {type(head).__name__} (e.g. LoRA on lm_head), not a plain Linear"
    if not hasattr(base, "get_decoder") or base.get_decoder() is None:
        return "the model does not expose its decoder body (get_decoder)"
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return "the model's forward takes no logits_to_keep (needed to skip its logits)"
    return sharded_head_reason(head) or sharded_launch_reason()


def hidden_and_head(model: torch.nn.Module, inputs: dict[str, Tensor]) -> tuple[Tensor, torch.nn.Linear]:
    """Last hidden states [B, S, H] and the lm_head, from a forward through `model` itself.

    The forward goes through the outermost wrapper (DDP, DeepSpeed) so that its gradient synchronisation is armed;
    calling the decoder directly would skip DDP's forward and leave the gradients un-reduced. The decoder's output
    is captured by a hook, and `logits_to_keep` (no positions) spares the logits.
    """
    base = base_causal_lm(model)
    head = base.get_output_embeddings()
    reason = sharded_head_reason(head)
    if reason:
        raise RuntimeError(f"fused_loss cannot run: {reason}; use fused_loss=false")
    captured = []
    hook = base.get_decoder().register_forward_hook(
        lambda _module, _args, output: captured.append(output[0] if isinstance(output, tuple) else output)
    )
    try:
        no_positions = torch.zeros(0, dtype=torch.long, device=inputs["input_ids"].device)
        model(**inputs, use_cache=False, logits_to_keep=no_positions)
    finally:
        hook.remove()
    hidden = captured[-1]
    return getattr(hidden, "last_hidden_state", hidden), head


def _logits_of(outputs: Any) -> Tensor | None:
    return outputs.get("logits") if isinstance(outputs, dict) else getattr(outputs, "logits", None)


class ObjectiveLoss:
    """An objective's loss for a causal LM, on one path chosen at construction (see `for_model`).

    `loss_module(model, inputs, labels, ...) -> (loss, outputs)`; the step statistics of every recorded call are
    summed until `pop_window_stats()` (`last_stats` holds the latest call's).
    """

    def __init__(
        self,
        objective: Objective | str,
        *,
        fused: bool = False,
        chunk_size: int | None = None,
        backend: str = "auto",
        reference: Reference | None = None,
        ignore_index: int = -100,
    ) -> None:
        self.objective = build_objective(objective) if isinstance(objective, str) else objective
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        self.fused, self.chunk_size, self.backend = fused, chunk_size, backend
        self.reference, self.ignore_index = reference, ignore_index
        self.last_stats = StepStats()
        self.window_stats = StepStats()

    @classmethod
    def for_model(
        cls, model: torch.nn.Module, objective: Objective | str, *, fused_loss: str = "auto", **options: Any
    ) -> ObjectiveLoss:
        """`fused_loss`: 'true' (refused by name when the model cannot run fused), 'false', or 'auto' (fused when
        it can). The choice and its reason are logged."""
        fused_loss = {True: "true", False: "false"}.get(fused_loss, str(fused_loss).lower())
        if fused_loss not in FUSED_CHOICES:
            raise ValueError(f"fused_loss must be one of {FUSED_CHOICES}, got {fused_loss!r}")
        reason = fused_unsupported_reason(model) if fused_loss != "false" else None
        if fused_loss == "true" and reason:
            raise ValueError(f"fused_loss=true is not possible: {reason}; use fused_loss=false")
        module = cls(objective, fused=fused_loss != "false" and reason is None, **options)
        module._require_reference()
        name = module.objective.name
        if module.fused:
            logger.info("loss path: fused linear+objective from hidden states (objective %s)", name)
        else:
            why = "fused_loss=false" if fused_loss == "false" else reason
            logger.info("loss path: materialized logits (objective %s; %s)", name, why)
        return module

    def _require_reference(self) -> None:
        if self.objective.needs_reference and self.reference is None:
            raise ValueError(f"objective {self.objective.name!r} needs a reference model")

    @property
    def path_name(self) -> str:
        return "fused" if self.fused else "materialized logits"

    def record(self, stats: StepStats) -> None:
        self.last_stats = stats
        self.window_stats = self.window_stats + stats

    def pop_window_stats(self) -> StepStats:
        stats, self.window_stats = self.window_stats, StepStats()
        return stats

    def __call__(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Tensor],
        labels: Tensor,
        *,
        static_weights: Tensor | None = None,
        num_items_in_batch: int | Tensor | None = None,
        record: bool = True,
    ) -> tuple[Tensor, Any]:
        """The loss of one micro-batch and the model's outputs ({} on the fused path: no logits are formed)."""
        self._require_reference()
        if self.fused:
            ref = {}
            if self.objective.needs_reference:
                with torch.no_grad(), self.reference.context():
                    ref_hidden, ref_head = hidden_and_head(self.reference.model, inputs)
                ref = {"ref_hidden": ref_hidden, "ref_weight": ref_head.weight, "ref_bias": ref_head.bias}
            hidden, head = hidden_and_head(model, inputs)
            loss = self.from_hidden(
                hidden,
                head,
                labels,
                static_weights=static_weights,
                num_items_in_batch=num_items_in_batch,
                record=record,
                **ref,
            )
            return loss, {}  # no logits: Trainer's evaluation reads none (prediction_loss_only)
        ref_logits = None
        if self.objective.needs_reference:
            with torch.no_grad(), self.reference.context():
                ref_logits = self.reference.model(**inputs, use_cache=False).logits
        outputs = model(**inputs, use_cache=False)
        loss = self.from_logits(
            _logits_of(outputs),
            labels,
            ref_logits=ref_logits,
            static_weights=static_weights,
            num_items_in_batch=num_items_in_batch,
            record=record,
        )
        return loss, outputs

    def from_logits(
        self,
        logits: Tensor | None,
        labels: Tensor,
        *,
        ref_logits: Tensor | None = None,
        static_weights: Tensor | None = None,
        num_items_in_batch: int | Tensor | None = None,
        record: bool = True,
    ) -> Tensor:
        """The materialized path's loss from logits [B, S, V] and unshifted labels [B, S]."""
        if logits is None:
            raise ValueError(f"objective {self.objective.name!r} needs the model's logits, but outputs carry none")
        loss, stats = causal_lm_objective_loss(
            logits,
            labels,
            self.objective,
            ref_logits=ref_logits,
            static_weights=static_weights,
            num_items_in_batch=num_items_in_batch,
            ignore_index=self.ignore_index,
            chunk_size=self.chunk_size,
        )
        if record:
            self.record(stats)
        return loss

    def from_hidden(
        self,
        hidden: Tensor,
        head: torch.nn.Linear,
        labels: Tensor,
        *,
        record: bool = True,
        **kwargs: Any,
    ) -> Tensor:
        """The fused path's loss from the last hidden states [B, S, H] and the lm_head; `kwargs` as
        `fused_linear_objective`'s (ref_hidden, ref_weight, ref_bias, static_weights, num_items_in_batch)."""
        loss, stats = fused_linear_objective(
            hidden,
            head.weight,
            labels,
            self.objective,
            bias=head.bias,
            ignore_index=self.ignore_index,
            chunk_size=self.chunk_size,
            backend=self.backend,
            **kwargs,  # chunk_size None: the op's memory budget
        )
        if record:
            self.record(stats)
        return loss

    @torch.no_grad()
    def label_logits(
        self, model: torch.nn.Module, inputs: dict[str, Tensor], labels: Tensor
    ) -> Iterator[tuple[Tensor, Tensor]]:
        """The fp32 logits of the label tokens, `chunk_size` tokens at a time, with their targets, on this module's
        path (fused: from the hidden states, chunk by chunk; materialized: the model's logits at the label positions
        only, `logits_to_keep` a [B, S] mask). For `eaft analyze`. Shape: -> ([n, V] fp32, [n]) per chunk."""
        rows, targets = label_rows(labels, ignore_index=self.ignore_index)
        if not rows.numel():
            return
        if self.fused:
            hidden, head = hidden_and_head(model, inputs)
            source = hidden.reshape(-1, hidden.shape[-1])
            weight = head.weight
            chunk = self.chunk_size or default_chunk_size(weight.shape[0], hidden.device, weight.element_size())
        else:
            keep = torch.zeros(labels.numel(), dtype=torch.bool, device=labels.device)
            keep[rows] = True
            source = model(**inputs, use_cache=False, logits_to_keep=keep.reshape(labels.shape)).logits
            if source.dim() != 2 or source.shape[0] != rows.numel():
                raise RuntimeError(
                    f"model returned logits of shape {tuple(source.shape)} for a boolean logits_to_keep of "
                    f"{rows.numel()} positions; the materialized path of eaft analyze needs a transformers model "
                    "whose forward accepts a [B, L] boolean logits_to_keep (transformers >= 5)"
                )
            chunk, head = self.chunk_size or LOGITS_CHUNK_TOKENS, None
        for start in range(0, rows.numel(), chunk):
            sl = slice(start, start + chunk)
            z = head(source[rows[sl]]) if head is not None else source[sl]
            yield z.float(), targets[sl]


class ObjectiveLossFunc:
    """`transformers.Trainer(compute_loss_func=...)` adapter for any registered objective (materialized logits).

    The statistics of the last call are in `last_stats`, summed in `window_stats` until `pop_window_stats()`.
    """

    def __init__(
        self, objective: Objective | str, *, ignore_index: int = -100, chunk_size: int | None = None, **params: Any
    ) -> None:
        objective = build_objective(objective, params) if isinstance(objective, str) else objective
        self.module = ObjectiveLoss(objective, chunk_size=chunk_size, ignore_index=ignore_index, reference=None)
        self.objective = objective

    def __call__(
        self,
        outputs: Any,
        labels: Tensor,
        num_items_in_batch: int | Tensor | None = None,
        *,
        ref_logits: Tensor | None = None,
        static_weights: Tensor | None = None,
    ) -> Tensor:
        return self.module.from_logits(
            _logits_of(outputs),
            labels,
            ref_logits=ref_logits,
            static_weights=static_weights,
            num_items_in_batch=num_items_in_batch,
        )

    @property
    def last_stats(self) -> StepStats:
        return self.module.last_stats

    @property
    def window_stats(self) -> StepStats:
        return self.module.window_stats

    def pop_window_stats(self) -> StepStats:
        return self.module.pop_window_stats()


def compute_loss_func(objective: Objective | str, **kwargs: Any) -> ObjectiveLossFunc:
    """`compute_loss_func(outputs, labels, num_items_in_batch=None)` for `transformers.Trainer`."""
    return ObjectiveLossFunc(objective, **kwargs)
