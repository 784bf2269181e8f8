"""Entropy-Adaptive Fine-Tuning.

Paper: Entropy-Adaptive Fine-Tuning (arXiv 2601.02151).
Formula: L = -Σ_t g(H̃_t) · log p(y_t) / N, with g(H̃) = H̃^α (gate=power) or σ(a(H̃ − b)) (gate=sigmoid),
H̃ the normalized entropy of the model's prediction (top-k renormalized or exact), detached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from eaft.objectives.base import Objective, param, register
from eaft.ops.stats import EntropySpec, TokenStats

GATES = ("power", "sigmoid")


@register
@dataclass
class EAFT(Objective):
    name = "eaft"

    alpha: float = param(1.0, "Power α of the entropy weight H̃^α (gate=power).")
    entropy: str = param("topk", "Entropy estimate: 'topk' (renormalized over the k largest logits) or 'full'.")
    k: int = param(20, "k of the top-k entropy; also sets the default normalizer ln k.")
    normalizer: float | None = param(None, "Divide the entropy by this (default ln k; 3.0 matches LLaMA-Factory).")
    gate: str = param("power", "'power' for H̃^α, 'sigmoid' for σ(a(H̃ − b)) (the paper's ablation).")
    sigmoid_a: float = param(30.0, "Slope a of the sigmoid gate.")
    sigmoid_b: float = param(0.17, "Centre b of the sigmoid gate.")

    def __post_init__(self) -> None:
        if self.gate not in GATES:
            raise ValueError(f"eaft gate must be one of {GATES}, got {self.gate!r}")
        if self.alpha < 0:
            raise ValueError(f"eaft alpha must be >= 0, got {self.alpha}")
        self.entropy_spec()  # validates entropy, k and normalizer now rather than mid-training

    def entropy_spec(self) -> EntropySpec:
        return EntropySpec(mode=self.entropy, k=self.k, normalizer=self.normalizer)

    def token_weights(self, stats: TokenStats) -> Tensor:
        h = stats.entropy.detach()
        if self.gate == "sigmoid":
            return torch.sigmoid(self.sigmoid_a * (h - self.sigmoid_b))
        return h.pow(self.alpha)
