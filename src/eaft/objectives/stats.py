"""Per-token statistics of label tokens, computed once from the logits, chunk by chunk in fp32.

The per-chunk math here (`chunk_statistics`, `chunk_logits_grad`) is shared by the materialized path
(`token_statistics`, from logits) and the fused linear+objective op (from hidden states), so both agree
by construction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

ENTROPY_MODES = ("topk", "full")
#: Directions of the per-token reference KL, p = π_θ and q = π_ref: "model_ref" is KL(p ‖ q) (sft_kl),
#: "ref_model" is KL(q ‖ p) (asft). An objective picks one with a class attribute `reference_kl`.
REFERENCE_KLS = ("model_ref", "ref_model")


def check_reference_kl(direction: str) -> str:
    if direction not in REFERENCE_KLS:
        raise ValueError(f"reference_kl must be one of {REFERENCE_KLS}, got {direction!r}")
    return direction


@dataclass(frozen=True)
class EntropySpec:
    """How the normalized entropy H̃ is computed.

    - `topk`: softmax renormalized over the k largest logits, entropy divided by `normalizer`
      (default ln k, so H̃ ∈ [0, 1]; `normalizer=3.0` reproduces LLaMA-Factory 0.9.5).
    - `full`: exact entropy over the whole vocabulary, divided by `normalizer` (default ln k, the same
      scale as the top-k form) and clamped to [0, 1].
    """

    mode: str = "topk"
    k: int = 20
    normalizer: float | None = None

    def __post_init__(self) -> None:
        if self.mode not in ENTROPY_MODES:
            raise ValueError(f"entropy must be one of {ENTROPY_MODES}, got {self.mode!r}")
        if self.k < 2:
            raise ValueError(f"entropy top-k needs k >= 2, got k={self.k}")
        if self.normalizer is not None and not self.normalizer > 0:
            raise ValueError(f"entropy normalizer must be > 0, got {self.normalizer}")

    @property
    def scale(self) -> float:
        return float(self.normalizer) if self.normalizer is not None else math.log(self.k)


@dataclass(frozen=True)
class TokenStats:
    """Statistics of the N label tokens of a batch (ignore_index already dropped). Shape: [N] each.

    `target_logprob` and `kl` carry gradients; every other field is detached. `kl` is the KL to the reference in
    the objective's direction (`REFERENCE_KLS`).
    """

    target_logprob: Tensor
    entropy: Tensor
    logsumexp: Tensor
    kl: Tensor | None = None
    static_weight: Tensor | None = None

    @property
    def target_prob(self) -> Tensor:
        return self.target_logprob.detach().exp()

    @property
    def num_tokens(self) -> int:
        return int(self.target_logprob.shape[0])


def normalized_entropy(z: Tensor, spec: EntropySpec) -> Tensor:
    """H̃ of fp32 logits. Shape: [n, V] -> [n]."""
    if spec.mode == "topk":
        if z.shape[-1] < spec.k:
            raise ValueError(f"top-k entropy with k={spec.k} needs a vocabulary of at least k, got {z.shape[-1]}")
        top = torch.topk(z, spec.k, dim=-1).values
        logq = torch.log_softmax(top, dim=-1)
        return -(logq.exp() * logq).sum(-1) / spec.scale
    logp = torch.log_softmax(z, dim=-1)
    h = -(logp.exp() * logp).sum(-1)
    return (h / spec.scale).clamp(0.0, 1.0)


@torch.no_grad()
def chunk_statistics(
    z: Tensor, targets: Tensor, spec: EntropySpec, ref_z: Tensor | None = None, *, reference_kl: str = "model_ref"
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """Statistics of one chunk of fp32 logits; `kl` is KL(p ‖ q) or, with reference_kl="ref_model", KL(q ‖ p).

    Shape: z [n, V], targets [n], ref_z [n, V] -> (logsumexp, target_logprob, entropy, kl), each [n].
    """
    lse = torch.logsumexp(z, dim=-1)
    target_logprob = z.gather(1, targets[:, None]).squeeze(1) - lse
    entropy = normalized_entropy(z, spec)
    kl = None
    if ref_z is not None:
        logp = z - lse[:, None]
        logq = torch.log_softmax(ref_z, dim=-1)
        if reference_kl == "ref_model":
            kl = (logq.exp() * (logq - logp)).sum(-1)
        else:
            kl = (logp.exp() * (logp - logq)).sum(-1)
    return lse, target_logprob, entropy, kl


@torch.no_grad()
def chunk_logits_grad(
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
    """d(loss)/dz for one fp32 chunk, given upstream grads of target_logprob and kl.

    d log p(y)/dz = onehot(y) - p;  d KL(p‖q)/dz = p ⊙ (log p - log q - KL);  d KL(q‖p)/dz = p - q.
    Shape: z [n, V] -> [n, V] fp32.
    """
    logp = z - lse[:, None]
    p = logp.exp()
    grad = p * (-grad_logprob[:, None])
    grad.scatter_add_(1, targets[:, None], grad_logprob[:, None])
    if grad_kl is not None and ref_z is not None:
        logq = torch.log_softmax(ref_z, dim=-1)
        if reference_kl == "ref_model":
            grad += grad_kl[:, None] * (p - logq.exp())
        else:
            grad += grad_kl[:, None] * p * (logp - logq - kl[:, None])
    return grad


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


def shift_labels(labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Next-token targets aligned with the logits positions. Shape: [B, S] -> [B, S]."""
    pad = labels.new_full((labels.shape[0], 1), ignore_index)
    return torch.cat([labels[:, 1:], pad], dim=1)


def token_statistics(
    logits: Tensor,
    labels: Tensor,
    spec: EntropySpec,
    *,
    ref_logits: Tensor | None = None,
    static_weights: Tensor | None = None,
    ignore_index: int = -100,
    chunk_size: int = 1024,
    shifted: bool = False,
    reference_kl: str = "model_ref",
) -> TokenStats:
    """Statistics of every label token of a causal-LM batch.

    Labels are shifted here unless `shifted=True`; positions equal to `ignore_index` are dropped.
    `static_weights` are aligned with `labels` (before the shift), like FLOW's precomputed weights.
    `reference_kl` is the direction of the KL to `ref_logits` (`REFERENCE_KLS`).
    Shape: logits [B, S, V], labels [B, S], ref_logits [B, S, V], static_weights [B, S] -> TokenStats of [N].
    """
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"logits {tuple(logits.shape)} and labels {tuple(labels.shape)} disagree on [B, S]")
    if ref_logits is not None and ref_logits.shape != logits.shape:
        raise ValueError(f"ref_logits {tuple(ref_logits.shape)} must match logits {tuple(logits.shape)}")
    targets = labels if shifted else shift_labels(labels, ignore_index)
    flat_targets = targets.reshape(-1)
    rows = (flat_targets != ignore_index).nonzero().squeeze(1)
    vocab = logits.shape[-1]
    logits2d = logits.reshape(-1, vocab)
    ref2d = ref_logits.reshape(-1, vocab) if ref_logits is not None else None
    picked = flat_targets[rows]
    if picked.numel() and (picked.min() < 0 or picked.max() >= vocab):
        raise ValueError(f"label ids must lie in [0, {vocab}) or equal ignore_index={ignore_index}")
    direction = check_reference_kl(reference_kl)
    logprob, entropy, lse, kl = _LogitsTokenStats.apply(logits2d, rows, picked, ref2d, spec, chunk_size, direction)
    weights = None
    if static_weights is not None:
        if static_weights.shape != labels.shape:
            raise ValueError(f"static weights {tuple(static_weights.shape)} must match labels {tuple(labels.shape)}")
        shifted_w = (
            static_weights
            if shifted
            else torch.cat([static_weights[:, 1:], static_weights.new_zeros(static_weights.shape[0], 1)], dim=1)
        )
        weights = shifted_w.reshape(-1)[rows].detach().float()
    return TokenStats(
        target_logprob=logprob,
        entropy=entropy,
        logsumexp=lse,
        kl=kl if ref2d is not None else None,
        static_weight=weights,
    )
