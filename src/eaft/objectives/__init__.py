"""Token-weighted SFT objectives behind a registry. Import an objective module to register it.

An objective maps the label tokens' statistics (`eaft.ops.TokenStats`) to detached weights; `eaft.objectives.loss`
turns them into the loss through the one token-loss formula (`eaft.ops.token_loss`), from logits or fused.
"""

from eaft.objectives import asft, dft, eaft, flow, masked_sft, sft, sft_kl, talr  # noqa: F401  (registration)
from eaft.objectives.base import Objective, build_objective, objective_class, objective_names, objective_params
from eaft.objectives.loss import (
    StepStats,
    causal_lm_objective_loss,
    fused_linear_objective,
    objective_loss,
    step_stats,
)
from eaft.ops import EntropySpec, TokenStats

__all__ = [
    "EntropySpec",
    "Objective",
    "StepStats",
    "TokenStats",
    "build_objective",
    "causal_lm_objective_loss",
    "fused_linear_objective",
    "objective_class",
    "objective_loss",
    "objective_names",
    "objective_params",
    "step_stats",
]
