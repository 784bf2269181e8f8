"""Plain supervised fine-tuning.

Paper: the SFT baseline of EAFT (arXiv 2601.02151).
Formula: L = -Σ_t log p(y_t) / N
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from eaft.objectives.base import Objective, register
from eaft.ops.stats import TokenStats


@register
@dataclass
class SFT(Objective):
    name = "sft"

    def token_weights(self, stats: TokenStats) -> Tensor:
        return torch.ones_like(stats.entropy)
