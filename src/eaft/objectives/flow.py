"""FLOW: static weights from the initial model's loss, upweighting easy samples.

Paper: Upweighting Easy Samples in Fine-Tuning Mitigates Forgetting (FLOW, arXiv 2502.02797).
Formula: L = −Σ_t w_t · log p(y_t) / N_items, w = exp(−L₀/τ) with L₀ the initial model's loss (per sample: mean
token NLL of the sample; per token: the token's NLL) and τ = median L₀ over the whole dataset. Weights are not
normalized (the paper notes the normalizer does not change the optimum).

The weights are computed once before training (`flow_weights`, `compute_flow_losses`) and carried in the batch as
a per-token tensor aligned with `labels`; the objective only reads them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from eaft.objectives.base import Objective, param, register
from eaft.ops.stats import TokenStats

GRANULARITIES = ("sample", "token")


@register
@dataclass
class FLOW(Objective):
    name = "flow"
    needs_static_weight = True

    per: str = param("sample", "Weight granularity: 'sample' (mean NLL of each sample) or 'token'.")
    tau: float | None = param(None, "Fixed temperature τ; default (null): the median initial loss over the dataset.")

    def __post_init__(self) -> None:
        if self.per not in GRANULARITIES:
            raise ValueError(f"flow per must be one of {GRANULARITIES}, got {self.per!r}")
        if self.tau is not None and not self.tau > 0:
            raise ValueError(f"flow tau must be > 0 or null, got {self.tau}")

    def token_weights(self, stats: TokenStats) -> Tensor:
        if stats.static_weight is None:
            raise ValueError("objective 'flow' needs precomputed weights in the batch (see eaft.objectives.flow)")
        return stats.static_weight


def flow_weights(losses: list[Tensor], tau: float | None = None) -> tuple[list[Tensor], float]:
    """exp(−L₀/τ) for each sample's initial losses; τ = median of all of them unless given.

    `losses` holds one tensor per sample: a scalar (per-sample) or the token NLLs (per-token).
    Returns the weights with the same shapes, and τ.
    """
    if not losses:
        raise ValueError("flow weights need at least one sample")
    flat = torch.cat([loss.reshape(-1).float() for loss in losses])
    tau = float(torch.median(flat)) if tau is None else float(tau)
    tau = max(tau, 1e-6)
    return [torch.exp(-loss.float() / tau) for loss in losses], tau


@torch.no_grad()
def compute_flow_losses(
    model: torch.nn.Module, batches: Iterable[dict[str, Tensor]], per: str = "sample", ignore_index: int = -100
) -> list[Tensor]:
    """Initial losses L₀ of every sample, in batch order: mean token NLL (per='sample') or token NLLs (per='token').

    Each batch has `input_ids`, `labels` (unshifted) and optionally `attention_mask`; one row is one sample
    (do not pack samples for this pass).
    """
    if per not in GRANULARITIES:
        raise ValueError(f"flow per must be one of {GRANULARITIES}, got {per!r}")
    out: list[Tensor] = []
    for batch in batches:
        logits = model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).logits
        labels = batch["labels"]
        targets = torch.cat([labels[:, 1:], labels.new_full((labels.shape[0], 1), ignore_index)], dim=1)
        for row_logits, row_targets in zip(logits, targets, strict=True):
            keep = row_targets != ignore_index
            nll = torch.nn.functional.cross_entropy(row_logits[keep].float(), row_targets[keep], reduction="none")
            out.append(nll.mean() if per == "sample" else nll)
    return out
