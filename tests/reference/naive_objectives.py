"""Readable, unchunked implementations of every objective over materialized logits.

They share no code with eaft.objectives: each loss is written from its formula with plain torch ops.
Shape: logits [B, S, V] (upcast to fp32 here), labels [B, S] unshifted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def shifted_valid(logits, labels, ignore_index=-100):
    z = logits[:, :-1].float().reshape(-1, logits.shape[-1])
    y = labels[:, 1:].reshape(-1)
    keep = y != ignore_index
    return z[keep], y[keep], keep


def topk_entropy(z, k=20, normalizer=None):
    top = torch.topk(z, k, dim=-1).values
    q = F.softmax(top, dim=-1)
    h = -(q * torch.log(q)).sum(-1)
    return h / (math.log(k) if normalizer is None else normalizer)


def full_entropy(z, k=20, normalizer=None):
    p = F.softmax(z, dim=-1)
    h = -(p * F.log_softmax(z, dim=-1)).sum(-1)
    return (h / (math.log(k) if normalizer is None else normalizer)).clamp(0, 1)


def reduce(token_losses, num_items=None):
    denom = num_items if num_items is not None else max(token_losses.numel(), 1)
    return token_losses.sum() / denom


def sft(logits, labels, num_items=None):
    z, y, _ = shifted_valid(logits, labels)
    return reduce(F.cross_entropy(z, y, reduction="none"), num_items)


def eaft(
    logits, labels, alpha=1.0, entropy="topk", k=20, normalizer=None, gate="power", a=30.0, b=0.17, num_items=None
):
    z, y, _ = shifted_valid(logits, labels)
    ce = F.cross_entropy(z, y, reduction="none")
    with torch.no_grad():
        h = (topk_entropy if entropy == "topk" else full_entropy)(z, k, normalizer)
        w = torch.sigmoid(a * (h - b)) if gate == "sigmoid" else h**alpha
    return reduce(w * ce, num_items)


def dft(logits, labels, num_items=None):
    z, y, _ = shifted_valid(logits, labels)
    ce = F.cross_entropy(z, y, reduction="none")
    return reduce(torch.exp(-ce).detach() * ce, num_items)


def masked_sft(logits, labels, quantile=0.15, num_items=None):
    z, y, _ = shifted_valid(logits, labels)
    ce = F.cross_entropy(z, y, reduction="none")
    with torch.no_grad():
        h = topk_entropy(z)
        # linear-interpolation quantile, written out
        s = torch.sort(h).values
        pos = quantile * (s.numel() - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, s.numel() - 1)
        thr = s[lo] + (s[hi] - s[lo]) * (pos - lo)
        keep = (h >= thr).float()
    return reduce(keep * ce, num_items)


def sft_kl(logits, ref_logits, labels, beta=0.5, num_items=None):
    z, y, keep = shifted_valid(logits, labels)
    zr = ref_logits[:, :-1].float().reshape(-1, ref_logits.shape[-1])[keep]
    ce = F.cross_entropy(z, y, reduction="none")
    p = F.softmax(z, -1)
    kl = (p * (F.log_softmax(z, -1) - F.log_softmax(zr, -1))).sum(-1)
    return reduce(ce + beta * kl, num_items)


def flow(logits, labels, weights, num_items=None):
    z, y, keep = shifted_valid(logits, labels)
    w = weights[:, 1:].reshape(-1)[keep]
    return reduce(w * F.cross_entropy(z, y, reduction="none"), num_items)


def talr(logits, labels, tau=None, min_weight=0.01, num_items=None):
    z, y, _ = shifted_valid(logits, labels)
    ce = F.cross_entropy(z, y, reduction="none")
    with torch.no_grad():
        t = max(ce.median().item(), 1e-6) if tau is None else tau
        p_pow = torch.exp(-ce / t)
        w = (ce.numel() * p_pow / p_pow.sum()).clamp(min=min_weight)
    return reduce(w * ce, num_items)


def llamafactory_eaft(logits, labels, alpha=1.0, num_items=None):
    """LLaMA-Factory 0.9.5's formula, re-derived: top-20 of the raw logits, softmax, entropy / 3.0, ^alpha."""
    z, y, _ = shifted_valid(logits, labels)
    ce = F.cross_entropy(z, y, reduction="none")
    with torch.no_grad():
        top = torch.topk(z, 20, dim=-1).values
        logp = top - torch.logsumexp(top, -1, keepdim=True)
        h = -(logp.exp() * logp).sum(-1)
        w = (h / 3.0) ** alpha
    return reduce(w * ce, num_items)


def asft(logits, ref_logits, labels, alpha=0.1, num_items=None):
    """DFT weights sg(p(y)) on CE plus α · KL(π_ref ‖ π_θ), exact over the vocabulary."""
    z, y, keep = shifted_valid(logits, labels)
    zr = ref_logits[:, :-1].float().reshape(-1, ref_logits.shape[-1])[keep]
    ce = F.cross_entropy(z, y, reduction="none")
    q = F.softmax(zr, -1)
    kl = (q * (F.log_softmax(zr, -1) - F.log_softmax(z, -1))).sum(-1)
    return reduce(torch.exp(-ce).detach() * ce + alpha * kl, num_items)


def llamafactory_asft(logits, ref_logits, labels, asft_alpha=0.1, ignore_index=-100):
    """LLaMA-Factory 0.9.5's `asft_loss_func`, transcribed from its steps (not its code): fp32 logits shifted by
    one; a DFT term, the mean over valid tokens of sg(exp(−ce)) · ce; a KL term, `F.kl_div(log_softmax(policy),
    softmax(ref), reduction="none")` summed over the vocabulary and averaged over valid tokens; their sum with
    the KL scaled by asft_alpha. It takes no num_items_in_batch."""
    vocab = logits.shape[-1]
    policy = logits.float()[:, :-1].reshape(-1, vocab)
    ref = ref_logits[:, :-1].reshape(-1, vocab)
    targets = labels[:, 1:].reshape(-1)
    valid = targets != ignore_index
    token_ce = F.cross_entropy(policy, targets, ignore_index=ignore_index, reduction="none")[valid]
    dft_term = (token_ce * torch.exp(-token_ce).detach()).mean()
    token_kl = F.kl_div(F.log_softmax(policy, -1), F.softmax(ref, -1), reduction="none").sum(-1)
    kl_term = (token_kl * valid.float()).sum() / valid.float().sum()
    return dft_term + asft_alpha * kl_term
