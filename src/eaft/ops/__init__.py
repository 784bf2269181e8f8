"""The math layer: token statistics, the per-chunk math, the label shift, and the fused chunked linear + loss op.

It knows no objective: per-token weights arrive as a callable on `TokenStats` (see `eaft.objectives` for the
objectives that supply them, and `eaft.loss` for the module that trains with them).
"""

from eaft.ops.api import FusedLoss, fused_linear_loss, resolve_math
from eaft.ops.fused import BACKENDS, FusedLinearLossFunction, default_chunk_size
from eaft.ops.stats import (
    ENTROPY_MODES,
    REFERENCE_KLS,
    EntropySpec,
    TokenStats,
    chunk_logits_grad,
    chunk_statistics,
    normalized_entropy,
    reduce_token_loss,
    token_loss,
)
from eaft.ops.tokens import LOGITS_CHUNK_TOKENS, label_rows, shift_labels, token_statistics

__all__ = [
    "BACKENDS",
    "ENTROPY_MODES",
    "LOGITS_CHUNK_TOKENS",
    "REFERENCE_KLS",
    "EntropySpec",
    "FusedLinearLossFunction",
    "FusedLoss",
    "TokenStats",
    "chunk_logits_grad",
    "chunk_statistics",
    "default_chunk_size",
    "fused_linear_loss",
    "label_rows",
    "normalized_entropy",
    "reduce_token_loss",
    "resolve_math",
    "shift_labels",
    "token_loss",
    "token_statistics",
]
