"""Fused chunked linear + objective op: an objective's loss from hidden states without [tokens × vocab] logits."""

from eaft.ops.api import FusedLinearObjective, fused_linear_objective
from eaft.ops.fused import BACKENDS, FusedLinearObjectiveFunction, default_chunk_size

__all__ = [
    "BACKENDS",
    "FusedLinearObjective",
    "FusedLinearObjectiveFunction",
    "default_chunk_size",
    "fused_linear_objective",
]
