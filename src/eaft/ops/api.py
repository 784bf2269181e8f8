"""The public entry point of the fused op: argument checks, label alignment, backend choice, then the Function."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from eaft.ops.cpu import CPU_MATH, CPU_MATH_REF_MODEL
from eaft.ops.fused import (
    BACKENDS,
    TORCH_MATH,
    TORCH_MATH_REF_MODEL,
    ChunkMath,
    FusedLinearLossFunction,
    TokenWeights,
    _Options,
    default_chunk_size,
)
from eaft.ops.stats import EntropySpec, TokenStats, check_reference_kl
from eaft.ops.tokens import check_targets, label_rows, static_weight_rows


@dataclass(frozen=True)
class FusedLoss:
    """What the fused op returns: the scalar loss, the label tokens' statistics (detached) and the weights it used.
    Shape: loss [], stats of [N], weights [N] fp32."""

    loss: Tensor
    stats: TokenStats
    weights: Tensor


def _unit_weights(stats: TokenStats) -> Tensor:
    return torch.ones_like(stats.target_logprob)


def resolve_math(backend: str, device: torch.device, *, reference_kl: str | None = None) -> ChunkMath:
    """The per-chunk math of `backend` on `device`; `reference_kl` is the direction of a reference KL, if any."""
    if backend not in BACKENDS:
        raise ValueError(f"fused loss backend must be one of {BACKENDS}, got {backend!r}")
    cpu = device.type == "cpu"
    if reference_kl == "ref_model":
        # The Triton kernels compute KL(π_θ ‖ π_ref) only; "auto" takes the torch math for the other direction.
        if backend == "triton":
            raise RuntimeError(
                "fused loss backend 'triton' computes KL(π_θ ‖ π_ref) only, and this loss needs KL(π_ref ‖ π_θ); "
                "use backend='torch' or 'auto'"
            )
        return CPU_MATH_REF_MODEL if cpu else TORCH_MATH_REF_MODEL
    if backend == "torch" or (backend == "auto" and cpu):
        return CPU_MATH if cpu else TORCH_MATH
    from eaft.ops import triton as triton_ops  # imports no triton until a kernel is needed

    reason = triton_ops.unavailable_reason(device)
    if backend == "auto":
        return triton_ops.chunk_math() if device.type == "cuda" and reason is None else TORCH_MATH
    if reason is not None:
        raise RuntimeError(f"fused loss backend 'triton' cannot run here: {reason}")
    return triton_ops.chunk_math()


def _select_rows(x: Tensor, rows: Tensor) -> Tensor:
    """x[rows]; a view when the rows are one contiguous range (the common case), sparing a copy of the hidden."""
    n = rows.numel()
    if n and int(rows[-1]) - int(rows[0]) + 1 == n:
        return x[int(rows[0]) : int(rows[-1]) + 1]
    return x[rows]


def _check_inputs(hidden: Tensor, weight: Tensor, bias: Tensor | None, labels: Tensor, ref: tuple) -> None:
    if hidden.dim() not in (2, 3) or weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"hidden must be [T, H] or [B, S, H] and weight [V, H]; got {tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be [V]={tuple(weight.shape[:1])}, got {tuple(bias.shape)}")
    if labels.shape != hidden.shape[:-1]:
        raise ValueError(
            f"labels {tuple(labels.shape)} must match the hidden states' leading dims {tuple(hidden.shape[:-1])}"
        )
    ref_hidden, ref_weight = ref
    if (ref_hidden is None) != (ref_weight is None):
        raise ValueError(
            "the reference needs both its last hidden states and its output weight (ref_hidden=, ref_weight=)"
        )
    if ref_hidden is not None and (ref_hidden.shape != hidden.shape or ref_weight.shape != weight.shape):
        raise ValueError(
            f"ref_hidden {tuple(ref_hidden.shape)} / ref_weight {tuple(ref_weight.shape)} must match "
            f"hidden {tuple(hidden.shape)} / weight {tuple(weight.shape)}"
        )


def fused_linear_loss(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    *,
    token_weights: TokenWeights | None = None,
    batch_global: bool = False,
    entropy: EntropySpec | None = None,
    kl_coef: float = 0.0,
    reference_kl: str = "model_ref",
    bias: Tensor | None = None,
    ignore_index: int = -100,
    num_items_in_batch: int | Tensor | None = None,
    chunk_size: int | None = None,
    backend: str = "auto",
    shifted: bool = False,
    ref_hidden: Tensor | None = None,
    ref_weight: Tensor | None = None,
    ref_bias: Tensor | None = None,
    static_weights: Tensor | None = None,
) -> FusedLoss:
    """Σ_t (−w_t · log p(y_t) + kl_coef · KL_t) / num_items of `hidden @ weight.T + bias`, chunk by chunk, never
    materializing the logits.

    - `token_weights(stats) -> [n]`: the detached weights from the label tokens' statistics (`TokenStats`, entropy
      per `entropy`, default top-k 20); None gives 1 (cross-entropy). With `batch_global` it sees the whole batch
      at once, else one chunk at a time.
    - Labels are unshifted (Hugging Face's convention): position s is scored against labels[s + 1] within its row;
      `shifted=True` when labels[i] is already the target of hidden[i]. `ignore_index` positions are dropped.
    - `ref_hidden`/`ref_weight`/`ref_bias`: a frozen reference model's, for the KL in direction `reference_kl`.
    - `static_weights` (FLOW's) are aligned with `labels` as given and reach `token_weights` as `stats.static_weight`.
    - `chunk_size`: label tokens per chunk (default: `default_chunk_size`, a memory budget per chunk).
    Shape: hidden [B, S, H] or [T, H], weight [V, H], bias [V], labels [B, S] or [T] -> FusedLoss.
    """
    _check_inputs(hidden, weight, bias, labels, (ref_hidden, ref_weight))
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    use_ref = ref_hidden is not None
    direction = check_reference_kl(reference_kl)
    rows, targets = label_rows(labels, ignore_index=ignore_index, shifted=shifted)
    vocab = weight.shape[0]
    check_targets(targets, vocab, ignore_index)
    hidden_rows = _select_rows(hidden.reshape(-1, hidden.shape[-1]), rows)
    ref_rows = _select_rows(ref_hidden.reshape(-1, ref_hidden.shape[-1]), rows).detach() if use_ref else None
    grad_on = torch.is_grad_enabled()
    opt = _Options(
        token_weights=token_weights or _unit_weights,
        batch_global=batch_global,
        kl_coef=float(kl_coef) if use_ref else 0.0,
        entropy=entropy or EntropySpec(),
        math=resolve_math(backend, hidden.device, reference_kl=direction if use_ref else None),
        chunk_size=chunk_size
        or default_chunk_size(
            vocab, hidden.device, weight.element_size(), rows=targets.numel(), hidden_size=weight.shape[1]
        ),
        num_items_in_batch=num_items_in_batch,
        needs_grad=tuple(grad_on and t is not None and t.requires_grad for t in (hidden_rows, weight, bias)),
    )
    loss, logprob, token_entropy, lse, weights = FusedLinearLossFunction.apply(
        hidden_rows,
        weight,
        bias,
        targets,
        ref_rows,
        ref_weight.detach() if use_ref else None,
        ref_bias.detach() if use_ref and ref_bias is not None else None,
        static_weight_rows(static_weights, labels, rows, shifted=shifted) if static_weights is not None else None,
        opt,
    )
    return FusedLoss(loss, TokenStats(target_logprob=logprob, entropy=token_entropy, logsumexp=lse), weights)
