"""The torch backend's per-chunk math on CPU: the spec's numbers (`eaft.ops.stats`) with one [V, chunk] buffer.

Why a CPU variant: the spec allocates three [chunk, V] fp32 temporaries per chunk, which caps the chunk inside a
700 MB budget at a size where MKL's skinny matmuls run slowly. Here:
- The chunk's logits are computed as zᵀ = W hᵀ straight into one reused [V, chunk] buffer in the weight's dtype
  (MKL and oneDNN run the product fastest with the vocabulary as the long side) and handed on as its transposed
  [chunk, V] view; the same buffer later holds d(loss)/d(logits)ᵀ, the layout both gradient products read
  (W-grad += gᵀ h, h-grad = (Wᵀ gᵀ)ᵀ), so nothing of chunk size is transposed or copied.
- The statistics are reduced over the vocabulary in blocks of VOCAB_BLOCK rows of that buffer, in fp32, into
  reused [VOCAB_BLOCK, chunk] buffers: the max, Σ exp and Σ exp · z (for the exact entropy). The top k come from
  the members of the k groups of TOPK_GROUP rows with the largest maxima (a full top-k over V cost as much as the
  logits' matmul).
- The statistics leave exp(z − max) in the buffer (in fp32 blocks, rounded to its dtype). d(loss)/d(logits) =
  p ⊙ (−g) + g at the target (the spec's `chunk_logits_grad`) is then that buffer, with Σe · (p(y) − 1) written
  at each target, times the per-token scale −g / Σe: a `ScaledGrad`, whose scale the gradient products fold into
  their [n, H] operands. So after the logits' matmul the chunk is read twice from memory (the group maxima; the
  exp) and written once, and no pass over [V, chunk] forms the gradient.
With a reference model (sft_kl, asft) the spec's own functions run on the buffer (correct, not tuned).
"""

from __future__ import annotations

import threading
import weakref
from functools import partial

import torch
from torch import Tensor

from eaft.ops.fused import ChunkMath, ScaledGrad
from eaft.ops.stats import EntropySpec, chunk_logits_grad, chunk_statistics, normalized_entropy

#: Set by `cpu_statistics`, which leaves exp(z − max) in the logits: (a weak reference to that z, the per-token
#: Σ exp(z − max), the value the gradient needs at each target); `cpu_logits_grad` on that same tensor then writes
#: only the targets. Per thread, and matched by identity, so logits recomputed into the same buffer (the
#: batch-global pass) are never mistaken for it.
_EXP_LEFT = threading.local()

#: Vocabulary rows per fp32 block of the statistics and of a recomputed 16-bit gradient ([2048, 160] fp32: 1.3 MB).
VOCAB_BLOCK = 2048
#: Vocabulary rows per group of the top-k search: the k largest logits lie in the k groups with the largest maxima.
TOPK_GROUP = 64


def cpu_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor) -> Tensor:
    """The chunk's logits as the [n, V] transposed view of `out`'s storage laid out [V, n]."""
    n, vocab = out.shape
    zt = out.view(vocab, n)
    h = hidden.to(weight.dtype)
    if bias is None:
        torch.mm(weight, h.T, out=zt)
    else:
        torch.addmm(bias.to(weight.dtype)[:, None], weight, h.T, out=zt)
    return zt.T


def _vocab_blocks(vocab: int) -> list[slice]:
    return [slice(start, min(start + VOCAB_BLOCK, vocab)) for start in range(0, vocab, VOCAB_BLOCK)]


def _group_maxima(zt: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(the first V // TOPK_GROUP * TOPK_GROUP rows as [groups, TOPK_GROUP, n], their maxima [groups, n], the rest)."""
    groups = zt.shape[0] // TOPK_GROUP
    head = zt[: groups * TOPK_GROUP].view(groups, TOPK_GROUP, zt.shape[1])
    return head, head.amax(1), zt[groups * TOPK_GROUP :]


def _top_values(head: Tensor, maxima: Tensor, tail: Tensor, k: int) -> Tensor:
    """The k largest values of each column, from the members of the k groups with the largest maxima and the tail:
    every one of the k largest lies in such a group. Shape: -> [n, k] fp32."""
    n = maxima.shape[1]
    candidates = [tail]
    if maxima.shape[0]:
        picked = torch.topk(maxima, min(k, maxima.shape[0]), dim=0).indices  # [k, n]
        members = head[picked, :, torch.arange(n, device=head.device)]  # [k, n, TOPK_GROUP]
        candidates.append(members.permute(0, 2, 1).reshape(-1, n))
    return torch.topk(torch.cat(candidates).float(), k, dim=0).values.T.contiguous()


def cpu_statistics(
    z: Tensor, targets: Tensor, spec: EntropySpec, ref_z: Tensor | None = None, *, reference_kl: str = "model_ref"
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """As `chunk_statistics`. Shape: z [n, V] (a transposed view of [V, n], any float dtype) -> 4 × [n] fp32.

    Leaves exp(z − max) in `z` (rounded to its dtype), for `cpu_logits_grad` on this same tensor.
    """
    if ref_z is not None or not z.T.is_contiguous():
        ref = ref_z.float() if ref_z is not None else None
        return chunk_statistics(z.float(), targets, spec, ref, reference_kl=reference_kl)
    zt = z.T
    vocab, n = zt.shape
    if spec.mode == "topk" and vocab < spec.k:
        raise ValueError(f"top-k entropy with k={spec.k} needs a vocabulary of at least k, got {vocab}")
    target_logit = zt[targets, torch.arange(n, device=z.device)].float()
    head, maxima, tail = _group_maxima(zt)
    peak = torch.cat([maxima, tail]).amax(0).float()
    top = _top_values(head, maxima, tail, spec.k) if spec.mode == "topk" else None  # before zt is overwritten
    total = torch.zeros(n, dtype=torch.float32, device=z.device)
    weighted = torch.zeros_like(total)  # Σ exp(z − max) · (z − max), for the exact entropy
    fp32, full = zt.dtype == torch.float32, spec.mode == "full"
    block_shape = (min(VOCAB_BLOCK, vocab), n)
    shifted = torch.empty(block_shape, dtype=torch.float32, device=z.device) if full or not fp32 else None
    exp = torch.empty(block_shape, dtype=torch.float32, device=z.device) if full and not fp32 else None
    for rows in _vocab_blocks(vocab):
        block, size = zt[rows], rows.stop - rows.start
        if fp32 and not full:  # exp(z − max) formed in the buffer itself
            total += block.sub_(peak).exp_().sum(0)
            continue
        part = torch.sub(block, peak, out=shifted[:size])  # z − max, in fp32
        e = block if fp32 else (exp[:size] if full else part)  # where exp(z − max) goes first
        total += torch.exp(part, out=e).sum(0)
        if full:
            weighted += part.mul_(e).sum(0)
        if not fp32:
            block.copy_(e)  # rounded into the 16-bit buffer
    log_total = total.log()
    lse = peak + log_total
    logprob = (target_logit - peak) - log_total  # not z_y − lse: exact to log Σe's rounding where p(y) ≈ 1
    # What the gradient needs at each target instead of exp(z_y − max): Σe · (p(y) − 1), exact near p(y) = 1.
    _EXP_LEFT.state = (weakref.ref(z), total, total * torch.expm1(logprob))
    if top is not None:
        entropy = normalized_entropy(top, spec)
    else:  # H = −Σ p log p = log Σe − Σ e·(z − max) / Σe, with e = exp(z − max)
        entropy = ((log_total - weighted / total) / spec.scale).clamp(0.0, 1.0)
    return lse, logprob, entropy, None


def _exp_left_in(z: Tensor) -> tuple[Tensor, Tensor] | None:
    """(Σ exp(z − max), the target values) per token if `cpu_statistics` left exp(z − max) in this very `z`."""
    state, _EXP_LEFT.state = getattr(_EXP_LEFT, "state", None), None
    if state is None or state[0]() is not z:
        return None
    return state[1], state[2]


@torch.no_grad()
def cpu_logits_grad(
    z: Tensor,
    targets: Tensor,
    lse: Tensor,
    grad_logprob: Tensor,
    ref_z: Tensor | None = None,
    kl: Tensor | None = None,
    grad_kl: Tensor | None = None,
    *,
    reference_kl: str = "model_ref",
) -> Tensor | ScaledGrad:
    """As `chunk_logits_grad` (p ⊙ (−g), plus g at the target), written over `z` in its own dtype.

    Returned as a `ScaledGrad`: values p (or exp(z − max)) with p(y) − 1 at each target, and the per-token scale
    −g (or −g / Σ exp(z − max)), which the gradient products fold into their [n, H] operands. After
    `cpu_statistics` on this z, only the targets are written; logits recomputed take one exp pass.
    """
    if ref_z is not None or not z.T.is_contiguous():
        ref = ref_z.float() if ref_z is not None else None
        grad = chunk_logits_grad(z.float(), targets, lse, grad_logprob, ref, kl, grad_kl, reference_kl=reference_kl)
        return z.copy_(grad)
    zt = z.T
    cols = torch.arange(zt.shape[1], device=z.device)
    left = _exp_left_in(z)
    if left is not None:  # z holds e = exp(z − max): g = e ⊙ (−g / Σe), with Σe · (p(y) − 1) at the target
        total, at_target = left
        zt[targets, cols] = at_target.to(zt.dtype)
        return ScaledGrad(z, -grad_logprob / total)
    at_target = torch.expm1(zt[targets, cols].float() - lse)  # p(y) − 1
    if zt.dtype == torch.float32:
        zt.sub_(lse).exp_()
    else:
        block = torch.empty(min(VOCAB_BLOCK, zt.shape[0]), zt.shape[1], dtype=torch.float32, device=z.device)
        for rows in _vocab_blocks(zt.shape[0]):  # 16-bit: in fp32 a block at a time, rounded once
            part = block[: rows.stop - rows.start]
            zt[rows].copy_(torch.sub(zt[rows], lse, out=part).exp_())
    zt[targets, cols] = at_target.to(zt.dtype)
    return ScaledGrad(z, -grad_logprob)


CPU_MATH = ChunkMath(name="torch", logits=cpu_logits, statistics=cpu_statistics, logits_grad=cpu_logits_grad)
#: With the reference KL taken as KL(π_ref ‖ π_θ) (asft).
CPU_MATH_REF_MODEL = ChunkMath(
    name="torch",
    logits=cpu_logits,
    statistics=partial(cpu_statistics, reference_kl="ref_model"),
    logits_grad=partial(cpu_logits_grad, reference_kl="ref_model"),
)
