"""An objective's loss: its weights over the label tokens' statistics, through the one token-loss formula in ops.

- `objective_loss`: from statistics already computed (materialized logits, `eaft.ops.token_statistics`).
- `fused_linear_objective`: from hidden states, through the fused op (`eaft.ops.fused_linear_loss`).
Both return (loss, StepStats). Reduction follows Hugging Face's contract (`eaft.ops.stats.loss_denominator`).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from eaft.objectives.base import Objective, build_objective
from eaft.ops import TokenStats, fused_linear_loss, reduce_token_loss, token_loss, token_statistics
from eaft.ops.stats import check_reference_kl

#: A token is a confident conflict in the training logs when H̃ < CONFLICT_ENTROPY and p(y) < CONFLICT_PROB.
#: Fixed values (not batch quantiles) so that the share is comparable across steps, objectives and runs.
CONFLICT_ENTROPY = 0.2
CONFLICT_PROB = 0.1


@dataclass
class StepStats:
    """Sums over the label tokens of a step; sums (not means) so that micro-batches and ranks add exactly."""

    tokens: float = 0.0
    ce_sum: float = 0.0
    entropy_sum: float = 0.0
    weight_sum: float = 0.0
    conflicts: float = 0.0

    def __add__(self, other: StepStats) -> StepStats:
        return StepStats(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def to_tensor(self, device: torch.device | str = "cpu") -> Tensor:
        return torch.tensor([getattr(self, f.name) for f in fields(self)], dtype=torch.float64, device=device)

    @classmethod
    def from_tensor(cls, values: Tensor) -> StepStats:
        return cls(*(float(v) for v in values.tolist()))

    def means(self) -> dict[str, float]:
        n = max(self.tokens, 1.0)
        return {
            "ce": self.ce_sum / n,
            "mean_entropy": self.entropy_sum / n,
            "mean_weight": self.weight_sum / n,
            "conflict_share": self.conflicts / n,
            "label_tokens": self.tokens,
        }


def reference_kl_of(objective: Objective) -> str:
    """The direction of the objective's reference KL: its class attribute `reference_kl`, by default "model_ref"."""
    return check_reference_kl(getattr(objective, "reference_kl", "model_ref"))


@torch.no_grad()
def step_stats(stats: TokenStats, weights: Tensor) -> StepStats:
    prob = stats.target_prob
    conflicts = (stats.entropy < CONFLICT_ENTROPY) & (prob < CONFLICT_PROB)
    return StepStats(
        tokens=float(stats.num_tokens),
        ce_sum=float(-stats.target_logprob.detach().sum()),
        entropy_sum=float(stats.entropy.sum()),
        weight_sum=float(weights.detach().float().sum()),
        conflicts=float(conflicts.sum()),
    )


def _check_needs(objective: Objective, *, reference: bool, static_weights: bool, fused: bool = False) -> None:
    if objective.needs_static_weight and not static_weights:
        where = "(static_weights=)" if fused else "in the batch"
        raise ValueError(f"objective {objective.name!r} needs precomputed per-token weights {where}")
    if objective.needs_reference and not reference:
        detail = (
            "the reference model's last hidden states and output weight (ref_hidden=, ref_weight=) to run fused; "
            "without them use the materialized loss"
            if fused
            else "reference logits (a frozen reference model)"
        )
        raise ValueError(f"objective {objective.name!r} needs {detail}")


def objective_loss(
    objective: Objective, stats: TokenStats, num_items_in_batch: int | Tensor | None = None
) -> tuple[Tensor, StepStats]:
    """Loss and step statistics of an objective over precomputed token statistics."""
    _check_needs(objective, reference=stats.kl is not None, static_weights=stats.static_weight is not None)
    weights = objective.token_weights(stats).detach()
    losses = token_loss(weights, stats.target_logprob, stats.kl, objective.kl_coef)
    return reduce_token_loss(losses, num_items_in_batch), step_stats(stats, weights)


def causal_lm_objective_loss(
    logits: Tensor,
    labels: Tensor,
    objective: Objective,
    *,
    ref_logits: Tensor | None = None,
    static_weights: Tensor | None = None,
    num_items_in_batch: int | Tensor | None = None,
    ignore_index: int = -100,
    chunk_size: int | None = None,
) -> tuple[Tensor, StepStats]:
    """Objective loss from materialized logits, labels not yet shifted; `chunk_size`: label tokens per fp32 chunk.

    Shape: logits [B, S, V] (any float dtype; upcast per chunk), labels [B, S] -> scalar loss.
    """
    stats = token_statistics(
        logits,
        labels,
        objective.entropy_spec(),
        ref_logits=ref_logits,
        static_weights=static_weights,
        ignore_index=ignore_index,
        chunk_size=chunk_size,
        reference_kl=reference_kl_of(objective),
    )
    return objective_loss(objective, stats, num_items_in_batch)


def fused_linear_objective(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    objective: Objective | str,
    *,
    ref_hidden: Tensor | None = None,
    ref_weight: Tensor | None = None,
    ref_bias: Tensor | None = None,
    static_weights: Tensor | None = None,
    **options: Any,
) -> tuple[Tensor, StepStats]:
    """Objective loss of `hidden @ weight.T + bias` against `labels`, chunk by chunk, never materializing the logits.

    `options` are `eaft.ops.fused_linear_loss`'s (bias, ignore_index, num_items_in_batch, chunk_size, backend,
    shifted); the objective supplies the weights, their batch scope, the entropy, the KL coefficient and direction.
    The loss equals `causal_lm_objective_loss` on the materialized logits.
    Shape: hidden [B, S, H] or [T, H], weight [V, H], labels [B, S] or [T] -> scalar fp32 loss, StepStats.
    """
    if isinstance(objective, str):
        objective = build_objective(objective)
    _check_needs(
        objective,
        reference=ref_hidden is not None and ref_weight is not None,
        static_weights=static_weights is not None,
        fused=True,
    )
    reference = {}
    if objective.needs_reference:
        reference = {"ref_hidden": ref_hidden, "ref_weight": ref_weight, "ref_bias": ref_bias}
    if options.get("backend") == "triton" and objective.needs_reference and reference_kl_of(objective) == "ref_model":
        raise RuntimeError(
            f"fused loss backend 'triton' cannot run objective {objective.name!r}: its kernels compute "
            "KL(π_θ ‖ π_ref), the objective needs KL(π_ref ‖ π_θ); use backend='torch' or 'auto'"
        )
    result = fused_linear_loss(
        hidden,
        weight,
        labels,
        token_weights=objective.token_weights,
        batch_global=objective.batch_global,
        entropy=objective.entropy_spec(),
        kl_coef=objective.kl_coef,
        reference_kl=reference_kl_of(objective),
        static_weights=static_weights,
        **reference,
        **options,
    )
    return result.loss, step_stats(result.stats, result.weights)
