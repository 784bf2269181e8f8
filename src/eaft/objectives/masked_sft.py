"""Hard entropy mask: SFT on every token except the batch's lowest-entropy ones.

Paper: the hard-mask ablation of EAFT (arXiv 2601.02151).
Formula: L = -Σ_t 1[H̃_t ≥ Q_q(H̃)] · log p(y_t) / N, with Q_q the q-quantile of H̃ over the batch's label tokens
(linear interpolation, as `torch.quantile`). The batch is the micro-batch of all ranks (gathered).
N still counts every label token, so dropped tokens lower the loss
rather than re-weighting the rest.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from eaft.objectives.base import Objective, param, register
from eaft.objectives.collective import gather_across_ranks
from eaft.ops.stats import EntropySpec, TokenStats


@register
@dataclass
class MaskedSFT(Objective):
    name = "masked_sft"
    batch_global = True

    quantile: float = param(0.15, "Drop tokens whose H̃ is below this quantile of the batch's H̃.")
    entropy: str = param("topk", "Entropy estimate: 'topk' or 'full'.")
    k: int = param(20, "k of the top-k entropy.")
    normalizer: float | None = param(None, "Divide the entropy by this (default ln k).")

    def __post_init__(self) -> None:
        if not 0.0 <= self.quantile < 1.0:
            raise ValueError(f"masked_sft quantile must lie in [0, 1), got {self.quantile}")
        self.entropy_spec()

    def entropy_spec(self) -> EntropySpec:
        return EntropySpec(mode=self.entropy, k=self.k, normalizer=self.normalizer)

    def threshold(self, entropy: Tensor) -> Tensor:
        return torch.quantile(entropy.detach().float(), self.quantile)

    def token_weights(self, stats: TokenStats) -> Tensor:
        # The quantile spans the batch on every rank (the gather is the identity on one process).
        every = gather_across_ranks(stats.entropy.float())
        if every.numel() == 0:
            return torch.ones_like(stats.entropy)
        return (stats.entropy >= self.threshold(every).to(stats.entropy.dtype)).to(stats.entropy.dtype)
