"""Label tokens of a causal-LM batch: the shift, the ignore filter, and their statistics from materialized logits.

`label_rows` is the one place where labels are aligned with the positions that predict them; the fused op
(`eaft.ops.api`) and `token_statistics` (from logits) both select their rows with it.
"""

from __future__ import annotations

import torch
from torch import Tensor

from eaft.ops.stats import EntropySpec, TokenStats, check_reference_kl, chunk_logits_grad, chunk_statistics

#: Label tokens per fp32 chunk of the statistics when the logits are materialized and no chunk_size is given:
#: the logits exist already, the chunk only bounds their fp32 upcast and softmax temporaries.
LOGITS_CHUNK_TOKENS = 1024


def shift_labels(labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Next-token targets aligned with the logits positions. Shape: [B, S] -> [B, S]."""
    pad = labels.new_full((labels.shape[0], 1), ignore_index)
    return torch.cat([labels[:, 1:], pad], dim=1)


def label_rows(labels: Tensor, *, ignore_index: int = -100, shifted: bool = False) -> tuple[Tensor, Tensor]:
    """(flat indices of the positions that predict a label token, their targets), after the causal shift within
    each row unless `shifted` (then labels[i] is already the target of position i). Shape: [B, S] or [T] -> [N], [N].
    """
    if labels.dim() not in (1, 2):
        raise ValueError(f"labels must be [T] or [B, S], got {tuple(labels.shape)}")
    targets = labels if shifted else shift_labels(labels.reshape(-1, labels.shape[-1]), ignore_index)
    flat = targets.reshape(-1)
    rows = (flat != ignore_index).nonzero().squeeze(1)
    return rows, flat[rows]


def check_targets(targets: Tensor, vocab: int, ignore_index: int) -> None:
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= vocab):
        raise ValueError(f"label ids must lie in [0, {vocab}) or equal ignore_index={ignore_index}")


def static_weight_rows(static_weights: Tensor, labels: Tensor, rows: Tensor, *, shifted: bool = False) -> Tensor:
    """Precomputed per-token weights (FLOW's), aligned with `labels` as given, picked at `rows`. Shape: -> [N] fp32."""
    if static_weights.shape != labels.shape:
        raise ValueError(f"static_weights {tuple(static_weights.shape)} must match labels {tuple(labels.shape)}")
    w = static_weights.detach().float()
    if not shifted:
        w = w.reshape(-1, w.shape[-1])
        w = torch.cat([w[:, 1:], w.new_zeros(w.shape[0], 1)], dim=1)
    return w.reshape(-1)[rows]


class _LogitsTokenStats(torch.autograd.Function):
    """Chunked statistics over selected rows of a [M, V] logits matrix, without an fp32 copy of it."""

    @staticmethod
    def forward(ctx, logits, rows, targets, ref_logits, spec, chunk_size, reference_kl):
        outs = [], [], [], []
        for start in range(0, rows.numel(), chunk_size):
            idx = rows[start : start + chunk_size]
            ref_z = ref_logits[idx].float() if ref_logits is not None else None
            for acc, value in zip(
                outs,
                chunk_statistics(
                    logits[idx].float(), targets[start : start + chunk_size], spec, ref_z, reference_kl=reference_kl
                ),
                strict=True,
            ):
                acc.append(value)
        lse, logprob, entropy = (torch.cat(o) if o else logits.new_zeros(0, dtype=torch.float32) for o in outs[:3])
        # autograd outputs must be tensors: an empty kl stands for "no reference".
        kl = torch.cat(outs[3]) if ref_logits is not None and outs[3] else logits.new_zeros(0, dtype=torch.float32)
        ctx.save_for_backward(logits, rows, targets, lse, ref_logits, kl)
        ctx.spec, ctx.chunk_size, ctx.reference_kl = spec, chunk_size, reference_kl
        ctx.mark_non_differentiable(entropy, lse)
        return logprob, entropy, lse, kl

    @staticmethod
    def backward(ctx, grad_logprob, _grad_entropy, _grad_lse, grad_kl):
        logits, rows, targets, lse, ref_logits, kl = ctx.saved_tensors
        grad_logits = torch.zeros_like(logits)
        if grad_logprob is None:
            grad_logprob = torch.zeros_like(lse)
        for start in range(0, rows.numel(), ctx.chunk_size):
            sl = slice(start, start + ctx.chunk_size)
            idx = rows[sl]
            ref_z = ref_logits[idx].float() if ref_logits is not None else None
            has_kl = ref_z is not None and grad_kl is not None
            g = chunk_logits_grad(
                logits[idx].float(),
                targets[sl],
                lse[sl],
                grad_logprob[sl],
                ref_z,
                kl[sl] if has_kl else None,
                grad_kl[sl] if has_kl else None,
                reference_kl=ctx.reference_kl,
            )
            grad_logits[idx] = g.to(logits.dtype)
        return grad_logits, None, None, None, None, None, None


def token_statistics(
    logits: Tensor,
    labels: Tensor,
    spec: EntropySpec,
    *,
    ref_logits: Tensor | None = None,
    static_weights: Tensor | None = None,
    ignore_index: int = -100,
    chunk_size: int | None = None,
    shifted: bool = False,
    reference_kl: str = "model_ref",
) -> TokenStats:
    """Statistics of every label token of a causal-LM batch, from materialized logits.

    Labels are shifted here unless `shifted=True`; positions equal to `ignore_index` are dropped. `chunk_size`:
    label tokens per fp32 chunk (default LOGITS_CHUNK_TOKENS). `static_weights` are aligned with `labels` (before
    the shift), like FLOW's precomputed weights. `reference_kl` is the direction of the KL to `ref_logits`.
    Shape: logits [B, S, V], labels [B, S], ref_logits [B, S, V], static_weights [B, S] -> TokenStats of [N].
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on [B, S]")
    if ref_logits is not None and ref_logits.shape != logits.shape:
        raise ValueError(f"ref_logits {tuple(ref_logits.shape)} must match logits {tuple(logits.shape)}")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows, picked = label_rows(labels, ignore_index=ignore_index, shifted=shifted)
    vocab = logits.shape[-1]
    check_targets(picked, vocab, ignore_index)
    logits2d = logits.reshape(-1, vocab)
    ref2d = ref_logits.reshape(-1, vocab) if ref_logits is not None else None
    direction = check_reference_kl(reference_kl)
    chunk = chunk_size or LOGITS_CHUNK_TOKENS
    logprob, entropy, lse, kl = _LogitsTokenStats.apply(logits2d, rows, picked, ref2d, spec, chunk, direction)
    weights = static_weight_rows(static_weights, labels, rows, shifted=shifted) if static_weights is not None else None
    return TokenStats(
        target_logprob=logprob,
        entropy=entropy,
        logsumexp=lse,
        kl=kl if ref2d is not None else None,
        static_weight=weights,
    )
