"""Triton kernels of the fused op: one program per row of a chunk's logits, streaming over the vocabulary.

The math is that of `eaft.ops.stats.chunk_statistics` / `chunk_logits_grad`, in one pass and online:
with m the running max and s = Σ e^{z−m},
  lse = m + log s,   H = log s − Σ e^{z−m}(z − m) / s,   KL(p‖q) = Σ e^{z−m}(z − z_ref) / s − lse + lse_ref.
Logits are read in their own dtype and upcast to fp32 in registers.
"""

from __future__ import annotations

import triton
import triton.language as tl

# A finite "minus infinity" for running maxima, so that 0 · (m_old − m_new) stays 0 on the first block.
NEG_BIG = tl.constexpr(-1.0e30)  # compiled kernels may read only constexpr globals


@triton.jit
def statistics_kernel(
    z_ptr,
    z_stride,
    target_ptr,
    ref_ptr,
    ref_stride,
    lse_ptr,
    logprob_ptr,
    entropy_ptr,
    kl_ptr,
    vocab,
    HAS_REF: tl.constexpr,
    FULL_ENTROPY: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0).to(tl.int64)
    z_row = z_ptr + row * z_stride
    ref_row = ref_ptr + row * ref_stride
    m = tl.full([], NEG_BIG, tl.float32)
    s = tl.zeros([], tl.float32)
    shifted_sum = tl.zeros([], tl.float32)  # Σ e^{z−m}(z − m)
    m_ref = tl.full([], NEG_BIG, tl.float32)
    s_ref = tl.zeros([], tl.float32)
    diff_sum = tl.zeros([], tl.float32)  # Σ e^{z−m}(z − z_ref)
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < vocab
        z = tl.load(z_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(z, 0))
        rescale = tl.exp(m - m_new)
        e = tl.exp(z - m_new)
        if FULL_ENTROPY:
            centred = tl.where(mask, z - m_new, 0.0)
            shifted_sum = rescale * (shifted_sum + s * (m - m_new)) + tl.sum(e * centred, 0)
        if HAS_REF:
            zr = tl.load(ref_row + cols, mask=mask, other=float("-inf")).to(tl.float32)
            m_ref_new = tl.maximum(m_ref, tl.max(zr, 0))
            s_ref = s_ref * tl.exp(m_ref - m_ref_new) + tl.sum(tl.exp(zr - m_ref_new), 0)
            m_ref = m_ref_new
            diff = tl.where(mask, z, 0.0) - tl.where(mask, zr, 0.0)  # no −inf − (−inf) in the padding
            diff_sum = rescale * diff_sum + tl.sum(e * diff, 0)
        s = rescale * s + tl.sum(e, 0)
        m = m_new
    lse = m + tl.log(s)
    target = tl.load(target_ptr + row)
    z_target = tl.load(z_row + target).to(tl.float32)
    tl.store(lse_ptr + row, lse)
    tl.store(logprob_ptr + row, z_target - lse)
    if FULL_ENTROPY:
        tl.store(entropy_ptr + row, tl.log(s) - shifted_sum / s)
    if HAS_REF:
        tl.store(kl_ptr + row, diff_sum / s - lse + m_ref + tl.log(s_ref))


@triton.jit
def _row_logsumexp(ptr, vocab, BLOCK: tl.constexpr):
    m = tl.full([], NEG_BIG, tl.float32)
    s = tl.zeros([], tl.float32)
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        x = tl.load(ptr + cols, mask=cols < vocab, other=float("-inf")).to(tl.float32)
        m_new = tl.maximum(m, tl.max(x, 0))
        s = s * tl.exp(m - m_new) + tl.sum(tl.exp(x - m_new), 0)
        m = m_new
    return m + tl.log(s)


@triton.jit
def logits_grad_kernel(
    z_ptr,
    z_stride,
    grad_ptr,
    grad_stride,
    target_ptr,
    lse_ptr,
    grad_logprob_ptr,
    ref_ptr,
    ref_stride,
    kl_ptr,
    grad_kl_ptr,
    vocab,
    HAS_KL: tl.constexpr,
    BLOCK: tl.constexpr,
):
    """grad = g·(onehot(y) − p) + g_kl · p ⊙ (log p − log q − KL); `grad_ptr` may alias `z_ptr`."""
    row = tl.program_id(0).to(tl.int64)
    z_row = z_ptr + row * z_stride
    grad_row = grad_ptr + row * grad_stride
    ref_row = ref_ptr + row * ref_stride
    lse = tl.load(lse_ptr + row)
    g = tl.load(grad_logprob_ptr + row)
    target = tl.load(target_ptr + row)
    lse_ref = tl.zeros([], tl.float32)
    kl = tl.zeros([], tl.float32)
    g_kl = tl.zeros([], tl.float32)
    if HAS_KL:
        lse_ref = _row_logsumexp(ref_row, vocab, BLOCK)
        kl = tl.load(kl_ptr + row)
        g_kl = tl.load(grad_kl_ptr + row)
    for start in range(0, vocab, BLOCK):
        cols = start + tl.arange(0, BLOCK)
        mask = cols < vocab
        logp = tl.load(z_row + cols, mask=mask, other=0.0).to(tl.float32) - lse
        p = tl.exp(logp)
        out = tl.where(cols == target, g, 0.0) - g * p
        if HAS_KL:
            logq = tl.load(ref_row + cols, mask=mask, other=0.0).to(tl.float32) - lse_ref
            out += g_kl * p * (logp - logq - kl)
        tl.store(grad_row + cols, out.to(grad_ptr.dtype.element_ty), mask=mask)
