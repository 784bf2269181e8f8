"""How a batch becomes (loss, StepStats): from materialized logits, or fused from the last hidden states.

Both call the shared objective path, so every objective trains the same way on either; the fused path never builds
the [B, S, V] logits. The reference model of `sft_kl` is the same model with its LoRA adapters disabled (no
second copy), or, under full fine-tuning, a frozen copy of the initial model.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import logging
from typing import Any

import torch
from torch import Tensor

from eaft.objectives import Objective, ObjectiveLossFunc, StepStats

logger = logging.getLogger(__name__)

#: Config attributes that change logits after the lm_head; the fused op computes plain `hidden @ W.T + b`.
LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling", "output_multiplier_scale")


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


def fused_available() -> bool:
    try:
        from eaft.ops import fused_linear_objective  # noqa: F401
    except ImportError:
        return False
    return True


class LossPath:
    """`(model, inputs, labels, static_weights, num_items_in_batch) -> (loss, StepStats, outputs)`."""

    fused = False

    #: Label tokens per chunk when none is configured (the logits exist already; this bounds their fp32 upcast).
    default_chunk = 1024

    def __init__(
        self, objective: Objective, *, reference: Reference | None = None, chunk_size: int | None = None
    ) -> None:
        if objective.needs_reference and reference is None:
            raise ValueError(f"objective {objective.name!r} needs a reference model")
        self.objective = objective
        self.reference = reference
        self.chunk_size = chunk_size  # label tokens per chunk on either path; None = the path's default
        self.loss_func = ObjectiveLossFunc(objective, chunk_size=chunk_size or self.default_chunk)

    def __call__(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Tensor],
        labels: Tensor,
        static_weights: Tensor | None,
        num_items_in_batch: int | Tensor | None,
    ) -> tuple[Tensor, StepStats, Any]:
        ref_logits = None
        if self.objective.needs_reference:
            with torch.no_grad(), self.reference.context():
                ref_logits = self.reference.model(**inputs, use_cache=False).logits
        outputs = model(**inputs, use_cache=False)
        loss = self.loss_func(outputs, labels, num_items_in_batch, ref_logits=ref_logits, static_weights=static_weights)
        stats = self.loss_func.pop_window_stats()
        return loss, stats, outputs


class FusedLossPath(LossPath):
    """The decoder body gives the last hidden states; `eaft.ops.fused_linear_objective` does the rest."""

    fused = True

    @staticmethod
    def hidden_and_head(model: torch.nn.Module, inputs: dict[str, Tensor]) -> tuple[Tensor, torch.nn.Linear]:
        """Last hidden states [B, S, H] and the lm_head, from a forward through `model` itself.

        The forward goes through the outermost wrapper (DDP, DeepSpeed) so that its gradient synchronisation is
        armed; calling the decoder directly would skip DDP's forward and leave the gradients un-reduced. The
        decoder's output is captured by a hook, and `logits_to_keep` (no positions) spares the logits.
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

    def __call__(self, model, inputs, labels, static_weights, num_items_in_batch):
        from eaft.ops import fused_linear_objective

        ref = {}
        if self.objective.needs_reference:
            with torch.no_grad(), self.reference.context():
                ref_hidden, ref_head = self.hidden_and_head(self.reference.model, inputs)
            ref = {"ref_hidden": ref_hidden, "ref_weight": ref_head.weight, "ref_bias": ref_head.bias}
        hidden, head = self.hidden_and_head(model, inputs)
        loss, stats = fused_linear_objective(
            hidden,
            head.weight,
            labels,
            self.objective,
            bias=head.bias,
            num_items_in_batch=num_items_in_batch,
            static_weights=static_weights,
            chunk_size=self.chunk_size,  # None: the op sizes chunks to its memory budget
            **ref,
        )
        return loss, stats, {}  # no logits: Trainer's evaluation reads none (prediction_loss_only)


def choose_loss_path(
    model: torch.nn.Module,
    objective: Objective,
    fused_loss: str,
    *,
    reference: Reference | None,
    chunk_size: int | None,
) -> LossPath:
    """`fused_loss`: 'true' (refused by name when impossible), 'false', or 'auto' (fused when possible)."""
    reason = None if fused_available() else "the fused op (eaft.ops) is not installed"
    reason = reason or fused_unsupported_reason(model)
    if fused_loss == "true" and reason:
        raise ValueError(f"fused_loss=true is not possible: {reason}; use fused_loss=false")
    use_fused = fused_loss == "true" or (fused_loss == "auto" and reason is None)
    path_cls = FusedLossPath if use_fused else LossPath
    if use_fused:
        logger.info("loss path: fused linear+objective from hidden states (objective %s)", objective.name)
    else:
        why = "fused_loss=false" if fused_loss == "false" else reason
        logger.info("loss path: materialized logits (objective %s; %s)", objective.name, why)
    return path_cls(objective, reference=reference, chunk_size=chunk_size)
