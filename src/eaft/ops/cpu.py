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
- d(loss)/d(logits) = p ⊙ (−g) + g at the target (the spec's `chunk_logits_grad`) is formed over the logits. In
  fp32 the statistics leave exp(z − max) in the buffer, so the gradient is one scaling pass; for 16-bit weights
  it is formed a vocabulary block at a time in fp32 and rounded once.
With a reference model (sft_kl, asft) the spec's own functions run on the buffer (correct, not tuned).
"""

from __future__ import annotations

import threading
import weakref
from functools import partial

import torch
from torch import Tensor

from eaft.ops.fused import ChunkMath
from eaft.ops.stats import EntropySpec, chunk_logits_grad, chunk_statistics, normalized_entropy

#: Set by `cpu_statistics` on fp32 logits, which it leaves as exp(z − max): (a weak reference to that z, the
#: per-token Σ exp(z − max)); `cpu_logits_grad` on that same tensor then only scales it. Per thread, and matched by
#: identity, so logits recomputed into the same buffer (the batch-global pass) are never mistaken for it.
_EXP_LEFT = threading.local()

#: Vocabulary rows per fp32 block of the statistics and of a 16-bit gradient ([2048, 160] fp32: 1.3 MB, in cache).
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
    """As `chunk_statistics`. Shape: z [n, V] (a transposed view of [V, n], any float dtype) -> 4 × [n] fp32."""
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
    in_place = zt.dtype == torch.float32  # fp32: exp(z − max) is left in the buffer for the gradient
    shifted = torch.empty(min(VOCAB_BLOCK, vocab), n, dtype=torch.float32, device=z.device)
    exp = torch.empty_like(shifted) if spec.mode == "full" or not in_place else shifted
    for rows in _vocab_blocks(vocab):
        size = rows.stop - rows.start
        torch.sub(zt[rows], peak, out=shifted[:size])
        torch.exp(shifted[:size], out=exp[:size])
        total += exp[:size].sum(0)
        if in_place:
            zt[rows].copy_(exp[:size])
        if spec.mode == "full":
            weighted += exp[:size].mul_(shifted[:size]).sum(0)
    if in_place:
        _EXP_LEFT.state = (weakref.ref(z), total)
    log_total = total.log()
    lse = peak + log_total
    if top is not None:
        entropy = normalized_entropy(top, spec)
    else:  # H = −Σ p log p = log Σe − Σ e·(z − max) / Σe, with e = exp(z − max)
        entropy = ((log_total - weighted / total) / spec.scale).clamp(0.0, 1.0)
    return lse, target_logit - lse, entropy, None


def _exp_left_in(z: Tensor) -> Tensor | None:
    """Σ exp(z − max) per token if `cpu_statistics` left exp(z − max) in this very tensor `z`, else None."""
    state, _EXP_LEFT.state = getattr(_EXP_LEFT, "state", None), None
    if state is None or state[0]() is not z:
        return None
    return state[1]


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
) -> Tensor:
    """As `chunk_logits_grad` (p ⊙ (−g), plus g at the target), written over `z` in its own dtype and returned.

    After `cpu_statistics` on this z (fp32), one scaling pass. Otherwise (logits recomputed, 16-bit), with −g ≥ 0
    (every objective's weights are) p ⊙ (−g) = exp(z − (lse − log(−g))): two passes over the chunk.
    """
    if ref_z is not None or not z.T.is_contiguous():
        ref = ref_z.float() if ref_z is not None else None
        grad = chunk_logits_grad(z.float(), targets, lse, grad_logprob, ref, kl, grad_kl, reference_kl=reference_kl)
        return z.copy_(grad)
    zt = z.T
    cols = torch.arange(zt.shape[1], device=z.device)
    total = _exp_left_in(z)
    if total is not None:  # z holds exp(z − max): p ⊙ (−g) = exp(z − max) ⊙ (−g / Σ exp(z − max)), one pass
        zt.mul_(-grad_logprob / total)
        zt.index_put_((targets, cols), grad_logprob, accumulate=True)
        return z
    scale = -grad_logprob
    if bool((scale < 0).any()):
        shift, sign = lse - scale.abs().log(), torch.where(scale < 0, -1.0, 1.0)
    else:
        shift, sign = lse - scale.log(), None  # log 0 = −inf: a zero weight gives a zero row
    if zt.dtype == torch.float32:
        zt.sub_(shift).exp_()
        if sign is not None:
            zt.mul_(sign)
        zt.index_put_((targets, cols), grad_logprob, accumulate=True)
        return z
    block = torch.empty(min(VOCAB_BLOCK, zt.shape[0]), zt.shape[1], dtype=torch.float32, device=z.device)
    for rows in _vocab_blocks(zt.shape[0]):  # 16-bit: in fp32 a block at a time, rounded once
        part = block[: rows.stop - rows.start]
        torch.sub(zt[rows], shift, out=part).exp_()
        if sign is not None:
            part.mul_(sign)
        inside = (targets >= rows.start) & (targets < rows.stop)
        part.index_put_((targets[inside] - rows.start, cols[inside]), grad_logprob[inside], accumulate=True)
        zt[rows].copy_(part)
    return z


CPU_MATH = ChunkMath(name="torch", logits=cpu_logits, statistics=cpu_statistics, logits_grad=cpu_logits_grad)
#: With the reference KL taken as KL(π_ref ‖ π_θ) (asft).
CPU_MATH_REF_MODEL = ChunkMath(
    name="torch",
    logits=cpu_logits,
    statistics=partial(cpu_statistics, reference_kl="ref_model"),
    logits_grad=partial(cpu_logits_grad, reference_kl="ref_model"),
)
