"""Token-weighted SFT objectives behind a registry. Import an objective module to register it."""

from eaft.objectives import asft, dft, eaft, flow, masked_sft, sft, sft_kl, talr  # noqa: F401  (registration)
from eaft.objectives.base import Objective, build_objective, objective_class, objective_names, objective_params
from eaft.objectives.loss import (
    ObjectiveLossFunc,
    StepStats,
    causal_lm_objective_loss,
    compute_loss_func,
    objective_loss,
    reduce_token_loss,
)
from eaft.objectives.stats import EntropySpec, TokenStats, token_statistics

__all__ = [
    "EntropySpec",
    "Objective",
    "ObjectiveLossFunc",
    "StepStats",
    "TokenStats",
    "build_objective",
    "causal_lm_objective_loss",
    "compute_loss_func",
    "objective_class",
    "objective_loss",
    "objective_names",
    "objective_params",
    "reduce_token_loss",
    "token_statistics",
]
