"""Triton twin of the fused op's per-chunk math (kernels.py -> launcher.py -> the shared autograd.Function).

What the kernels cover: per row of a chunk's logits, in one streaming pass over the vocabulary, the online
log-sum-exp, the target log-prob, the exact entropy and the KL to the reference logits; and d(loss)/d(logits),
written in place over the logits. The matmuls stay in torch (cuBLAS), and so does the top-k of the top-k entropy
(`torch.topk`, then the shared `normalized_entropy` on the k values). Every objective is served.
The chunk loop, the weights callable and gradient accumulation are the torch op's (`eaft.ops.fused`).
"""

from __future__ import annotations

import importlib.util
import os

import torch


def unavailable_reason(device: torch.device) -> str | None:
    """Why the Triton path cannot run on `device`, or None when it can."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'eaft[gpu]')"
    if device.type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return (
            f"the tensors are on {device.type}; the Triton kernels need CUDA tensors "
            "(or TRITON_INTERPRET=1, set before eaft.ops.triton.kernels is imported, for the CPU interpreter)"
        )
    return None


def chunk_math():
    """The Triton `ChunkMath` for `eaft.ops.fused`."""
    from eaft.ops.triton.launcher import TRITON_MATH

    return TRITON_MATH
