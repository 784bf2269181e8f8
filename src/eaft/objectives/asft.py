"""Anchored Supervised Fine-Tuning: DFT's probability-weighted CE plus a KL anchor to the initial model.

Paper: Anchored Supervised Fine-Tuning (ASFT, arXiv 2509.23753); as LLaMA-Factory 0.9.5 computes it
(`use_asft_loss`, `asft_alpha`).
Formula: L = Σ_t (−sg(p(y_t)) · log p(y_t) + α · KL(π_ref(·|x_<t) ‖ π_θ(·|x_<t))) / N, the KL exact over the
vocabulary, π_ref the frozen initial model.

The KL runs from the reference to the model, Σ_v π_ref · (log π_ref − log π_θ) (LLaMA-Factory's
`F.kl_div(log π_θ, π_ref)`), the opposite direction of sft_kl's KL(π_θ ‖ π_ref); its logits gradient is π_θ − π_ref.
N follows the shared path (label tokens of the accumulation window); LLaMA-Factory divides both terms by the
micro-batch's own label count, which is the same number without gradient accumulation.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from eaft.objectives.base import Objective, param, register
from eaft.ops.stats import TokenStats


@register
@dataclass
class ASFT(Objective):
    name = "asft"
    needs_reference = True
    reference_kl = "ref_model"

    alpha: float = param(0.1, "Weight α of the per-token KL(π_ref ‖ π_θ) anchor (LLaMA-Factory's asft_alpha).")

    def __post_init__(self) -> None:
        if self.alpha < 0:
            raise ValueError(f"asft alpha must be >= 0, got {self.alpha}")

    @property
    def kl_coef(self) -> float:
        return self.alpha

    def token_weights(self, stats: TokenStats) -> Tensor:
        return stats.target_prob
