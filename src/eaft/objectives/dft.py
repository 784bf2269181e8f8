"""Dynamic Fine-Tuning: each token's CE scaled by its own (detached) probability.

Paper: On the Generalization of SFT: A Reinforcement Learning Perspective with Reward Rectification
(DFT, arXiv 2508.05629).
Formula: L = -Σ_t sg(p(y_t)) · log p(y_t) / N
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from eaft.objectives.base import Objective, register
from eaft.ops.stats import TokenStats


@register
@dataclass
class DFT(Objective):
    name = "dft"

    def token_weights(self, stats: TokenStats) -> Tensor:
        return stats.target_prob
