"""SFT with a KL penalty towards the initial (reference) model.

Paper: the SFT-KL baseline of EAFT (arXiv 2601.02151).
Formula: L = Σ_t (-log p(y_t) + β · KL(π_θ(·|x_<t) ‖ π_ref(·|x_<t))) / N, the KL exact over the vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from eaft.objectives.base import Objective, param, register
from eaft.ops.stats import TokenStats


@register
@dataclass
class SFTKL(Objective):
    name = "sft_kl"
    needs_reference = True

    beta: float = param(0.5, "Weight β of the per-token KL(π_θ ‖ π_ref).")

    def __post_init__(self) -> None:
        if self.beta < 0:
            raise ValueError(f"sft_kl beta must be >= 0, got {self.beta}")

    @property
    def kl_coef(self) -> float:
        return self.beta

    def token_weights(self, stats: TokenStats) -> Tensor:
        return torch.ones_like(stats.entropy)
