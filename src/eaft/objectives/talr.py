"""Token-Adaptive Loss Reweighting.

Paper: SFT Doesn't Always Hurt General Capabilities: Revisiting Domain-Specific Fine-Tuning in LLMs
(TALR, arXiv 2509.20758). The weights solve  min_{w ∈ Δ} Σ_t w_t ℓ_t + τ Σ_t w_t log w_t  over the batch's
label tokens (ℓ_t = −log p(y_t)), whose closed form is w_t = p_t^{1/τ} / Σ_j p_j^{1/τ}; τ is set each step
to the median token loss of the batch; weights are detached and floored at w_min.
Formula: L = −Σ_t max(N · p_t^{1/τ} / Σ_j p_j^{1/τ}, w_min) · log p(y_t) / N_items

Choices the paper leaves open, made here: the simplex weights are multiplied by N (the batch's label-token
count) so that their mean is 1 and the loss keeps the scale of CE; τ is the median over tokens (not over
per-sequence means), floored at 1e-6; the batch is the micro-batch of all ranks (statistics gathered);
w_min defaults to 0.01 and is applied after that rescaling.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from eaft.objectives.base import Objective, param, register
from eaft.objectives.collective import gather_across_ranks
from eaft.ops.stats import TokenStats


@register
@dataclass
class TALR(Objective):
    name = "talr"
    batch_global = True

    tau: float | None = param(None, "Fixed temperature τ; default (null): the batch's median token loss each step.")
    min_weight: float = param(0.01, "Floor w_min of each token's weight (after rescaling to mean 1).")

    def __post_init__(self) -> None:
        if self.tau is not None and not self.tau > 0:
            raise ValueError(f"talr tau must be > 0 or null, got {self.tau}")
        if self.min_weight < 0:
            raise ValueError(f"talr min_weight must be >= 0, got {self.min_weight}")

    def temperature(self, logprob: Tensor) -> float:
        if self.tau is not None:
            return float(self.tau)
        return max(float(torch.median(-logprob.detach().float())), 1e-6)

    def token_weights(self, stats: TokenStats) -> Tensor:
        logprob = stats.target_logprob.detach().float()
        # τ, N and the normaliser span the batch's tokens on every rank (identity on one process).
        every = gather_across_ranks(logprob)
        n = every.numel()
        if n == 0:
            return torch.ones_like(logprob)
        tau = self.temperature(every)
        weights = torch.exp(logprob / tau - torch.logsumexp(every / tau, 0) + math.log(n))
        return weights.clamp_min(self.min_weight)
