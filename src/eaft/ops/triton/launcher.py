"""Launchers: the shared per-chunk signatures (`chunk_statistics`, `chunk_logits_grad`) on top of the kernels."""

from __future__ import annotations

import torch
import triton
from torch import Tensor

from eaft.ops.fused import ChunkMath, linear
from eaft.ops.stats import EntropySpec, normalized_entropy
from eaft.ops.triton import kernels

#: Columns per block of the streaming loop over the vocabulary (untuned: no GPU has run these kernels yet).
MAX_BLOCK = 4096
NUM_WARPS = 8


def _block(vocab: int) -> int:
    return min(triton.next_power_of_2(vocab), MAX_BLOCK)


def _rows(z: Tensor) -> Tensor:
    if z.dim() != 2 or z.stride(1) != 1:
        raise ValueError(f"the Triton kernels need [n, V] logits with unit column stride, got {tuple(z.shape)}")
    return z


@torch.no_grad()
def chunk_statistics(
    z: Tensor, targets: Tensor, spec: EntropySpec, ref_z: Tensor | None = None
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """As `eaft.ops.stats.chunk_statistics`, for logits of any float dtype (read as fp32).

    Shape: z [n, V], targets [n], ref_z [n, V] -> (logsumexp, target_logprob, entropy, kl), each [n] fp32.
    """
    n, vocab = _rows(z).shape
    out = torch.empty(4 if ref_z is not None else 3, n, dtype=torch.float32, device=z.device)
    lse, logprob, entropy = out[0], out[1], out[2]
    kl = out[3] if ref_z is not None else None
    ref = _rows(ref_z) if ref_z is not None else z
    full = spec.mode == "full"
    if n:
        kernels.statistics_kernel[(n,)](
            z,
            z.stride(0),
            targets.contiguous(),
            ref,
            ref.stride(0),
            lse,
            logprob,
            entropy,
            kl if kl is not None else lse,
            vocab,
            HAS_REF=ref_z is not None,
            FULL_ENTROPY=full,
            BLOCK=_block(vocab),
            num_warps=NUM_WARPS,
        )
    if full:
        entropy = (entropy / spec.scale).clamp(0.0, 1.0)  # the normalization of `normalized_entropy(mode="full")`
    else:
        # The k largest logits are exactly what top-k mode reads; the shared function renormalizes over them.
        entropy = normalized_entropy(torch.topk(z, spec.k, dim=-1).values.float(), spec)
    return lse, logprob, entropy, kl


@torch.no_grad()
def chunk_logits_grad(
    z: Tensor,
    targets: Tensor,
    lse: Tensor,
    grad_logprob: Tensor,
    ref_z: Tensor | None = None,
    kl: Tensor | None = None,
    grad_kl: Tensor | None = None,
) -> Tensor:
    """As `eaft.ops.stats.chunk_logits_grad`, but written over `z` (same dtype) and returned.

    Shape: z [n, V] -> [n, V].
    """
    n, vocab = _rows(z).shape
    has_kl = grad_kl is not None and ref_z is not None
    ref = _rows(ref_z) if has_kl else z
    if n:
        kernels.logits_grad_kernel[(n,)](
            z,
            z.stride(0),
            z,
            z.stride(0),
            targets.contiguous(),
            lse.contiguous(),
            grad_logprob.float().contiguous(),
            ref,
            ref.stride(0),
            kl.contiguous() if has_kl else lse,
            grad_kl.float().contiguous() if has_kl else lse,
            vocab,
            HAS_KL=has_kl,
            BLOCK=_block(vocab),
            num_warps=NUM_WARPS,
        )
    return z


TRITON_MATH = ChunkMath(
    name="triton",
    logits=lambda h, w, b, out: linear(h, w, b, out),
    statistics=chunk_statistics,
    logits_grad=chunk_logits_grad,
)
