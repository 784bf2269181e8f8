"""The shared loss path: statistics -> objective weights -> reduction, plus the Trainer adapter.

Reduction follows Hugging Face's contract: the sum of per-token losses divided by `num_items_in_batch`
(label tokens of the whole accumulation window, all ranks) when given, else by the local label-token count.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from eaft.objectives.base import Objective, build_objective
from eaft.objectives.stats import EntropySpec, TokenStats, check_reference_kl, token_statistics

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


def reduce_token_loss(token_loss: Tensor, num_items_in_batch: int | Tensor | None = None) -> Tensor:
    """Σ token_loss / num_items_in_batch (or / local count). An empty input gives a zero that back-propagates."""
    if num_items_in_batch is None:
        denom = max(token_loss.shape[0], 1)
    elif isinstance(num_items_in_batch, Tensor):
        denom = num_items_in_batch.to(token_loss.device, torch.float32).clamp_min(1)
    else:
        denom = max(float(num_items_in_batch), 1.0)
    return token_loss.sum() / denom


def objective_loss(
    objective: Objective, stats: TokenStats, num_items_in_batch: int | Tensor | None = None
) -> tuple[Tensor, StepStats]:
    """Loss and step statistics of an objective over precomputed token statistics."""
    if objective.needs_static_weight and stats.static_weight is None:
        raise ValueError(f"objective {objective.name!r} needs precomputed per-token weights in the batch")
    if objective.needs_reference and stats.kl is None:
        raise ValueError(f"objective {objective.name!r} needs reference logits (a frozen reference model)")
    weights = objective.token_weights(stats).detach()
    token_loss = -weights * stats.target_logprob
    if objective.kl_coef:
        token_loss = token_loss + objective.kl_coef * stats.kl
    return reduce_token_loss(token_loss, num_items_in_batch), step_stats(stats, weights)


def causal_lm_objective_loss(
    logits: Tensor,
    labels: Tensor,
    objective: Objective,
    *,
    ref_logits: Tensor | None = None,
    static_weights: Tensor | None = None,
    num_items_in_batch: int | Tensor | None = None,
    ignore_index: int = -100,
    chunk_size: int = 1024,
) -> tuple[Tensor, StepStats]:
    """Objective loss from materialized logits, labels not yet shifted.

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


class ObjectiveLossFunc:
    """`transformers.Trainer(compute_loss_func=...)` adapter for any registered objective.

    The statistics of the last call are kept in `last_stats` (and summed in `window_stats` until
    `pop_window_stats()`), so a trainer callback can log them.
    """

    def __init__(
        self, objective: Objective | str, *, ignore_index: int = -100, chunk_size: int = 1024, **params: Any
    ) -> None:
        self.objective = build_objective(objective, params) if isinstance(objective, str) else objective
        self.ignore_index = ignore_index
        self.chunk_size = chunk_size
        self.last_stats = StepStats()
        self.window_stats = StepStats()

    def __call__(
        self,
        outputs: Any,
        labels: Tensor,
        num_items_in_batch: int | Tensor | None = None,
        *,
        ref_logits: Tensor | None = None,
        static_weights: Tensor | None = None,
    ) -> Tensor:
        logits = outputs.get("logits") if isinstance(outputs, dict) else getattr(outputs, "logits", None)
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
        self.last_stats = stats
        self.window_stats = self.window_stats + stats
        return loss

    def pop_window_stats(self) -> StepStats:
        stats, self.window_stats = self.window_stats, StepStats()
        return stats


def compute_loss_func(objective: Objective | str, **kwargs: Any) -> ObjectiveLossFunc:
    """`compute_loss_func(outputs, labels, num_items_in_batch=None)` for `transformers.Trainer`."""
    return ObjectiveLossFunc(objective, **kwargs)


__all__ = [
    "CONFLICT_ENTROPY",
    "CONFLICT_PROB",
    "EntropySpec",
    "ObjectiveLossFunc",
    "StepStats",
    "causal_lm_objective_loss",
    "compute_loss_func",
    "objective_loss",
    "reduce_token_loss",
    "reference_kl_of",
    "step_stats",
]
