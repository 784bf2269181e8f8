"""The public entry points of the fused op: argument checks, label alignment, backend choice, then the Function."""

from __future__ import annotations

import torch
from torch import Tensor

from eaft.objectives.base import Objective, build_objective
from eaft.objectives.loss import StepStats, reference_kl_of, step_stats
from eaft.objectives.stats import TokenStats, shift_labels
from eaft.ops.fused import (
    BACKENDS,
    TORCH_MATH,
    TORCH_MATH_REF_MODEL,
    ChunkMath,
    FusedLinearObjectiveFunction,
    _Options,
    default_chunk_size,
)


def _resolve_math(backend: str, device: torch.device, objective: Objective | None = None) -> ChunkMath:
    if backend not in BACKENDS:
        raise ValueError(f"fused loss backend must be one of {BACKENDS}, got {backend!r}")
    if objective is not None and objective.needs_reference and reference_kl_of(objective) == "ref_model":
        # The Triton kernels compute KL(π_θ ‖ π_ref) only; "auto" takes the torch math for the other direction.
        if backend == "triton":
            raise RuntimeError(
                f"fused loss backend 'triton' cannot run objective {objective.name!r}: its kernels compute "
                "KL(π_θ ‖ π_ref), the objective needs KL(π_ref ‖ π_θ); use backend='torch' or 'auto'"
            )
        return TORCH_MATH_REF_MODEL
    if backend == "torch":
        return TORCH_MATH
    from eaft.ops import triton as triton_ops  # imports no triton until a kernel is needed

    reason = triton_ops.unavailable_reason(device)
    if backend == "auto":
        return triton_ops.chunk_math() if device.type == "cuda" and reason is None else TORCH_MATH
    if reason is not None:
        raise RuntimeError(f"fused loss backend 'triton' cannot run here: {reason}")
    return triton_ops.chunk_math()


def _label_rows(labels: Tensor, lead_shape: torch.Size, shifted: bool, ignore_index: int) -> tuple[Tensor, Tensor]:
    """(flat row indices of label tokens, their targets), after the causal shift unless `shifted`."""
    if labels.shape != lead_shape:
        raise ValueError(f"labels {tuple(labels.shape)} must match the hidden states' leading dims {tuple(lead_shape)}")
    if labels.dim() not in (1, 2):
        raise ValueError(f"labels must be [T] or [B, S], got {tuple(labels.shape)}")
    targets = labels if shifted else shift_labels(labels.reshape(-1, labels.shape[-1]), ignore_index)
    flat = targets.reshape(-1)
    rows = (flat != ignore_index).nonzero().squeeze(1)
    return rows, flat[rows]


def _select_rows(x: Tensor, rows: Tensor) -> Tensor:
    """x[rows]; a view when the rows are one contiguous range (the common case), sparing a copy of the hidden."""
    n = rows.numel()
    if n and int(rows[-1]) - int(rows[0]) + 1 == n:
        return x[int(rows[0]) : int(rows[-1]) + 1]
    return x[rows]


def _static_rows(static_weights: Tensor, labels: Tensor, rows: Tensor, shifted: bool) -> Tensor:
    """Per-token weights aligned with `labels` (before the shift, as `token_statistics` takes them). -> [N]."""
    if static_weights.shape != labels.shape:
        raise ValueError(f"static_weights {tuple(static_weights.shape)} must match labels {tuple(labels.shape)}")
    w = static_weights.detach().float()
    if not shifted:
        w = w.reshape(-1, w.shape[-1])
        w = torch.cat([w[:, 1:], w.new_zeros(w.shape[0], 1)], dim=1)
    return w.reshape(-1)[rows]


def _check_inputs(hidden: Tensor, weight: Tensor, bias: Tensor | None, objective: Objective, ref: tuple) -> None:
    if hidden.dim() not in (2, 3) or weight.dim() != 2 or hidden.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"hidden must be [T, H] or [B, S, H] and weight [V, H]; got {tuple(hidden.shape)} and {tuple(weight.shape)}"
        )
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"bias must be [V]={tuple(weight.shape[:1])}, got {tuple(bias.shape)}")
    ref_hidden, ref_weight = ref
    if objective.needs_reference and (ref_hidden is None or ref_weight is None):
        raise ValueError(
            f"objective {objective.name!r} needs the reference model's last hidden states and output weight "
            "(ref_hidden=, ref_weight=) to run fused; without them use the materialized loss"
        )
    if objective.needs_reference and (ref_hidden.shape != hidden.shape or ref_weight.shape != weight.shape):
        raise ValueError(
            f"ref_hidden {tuple(ref_hidden.shape)} / ref_weight {tuple(ref_weight.shape)} must match "
            f"hidden {tuple(hidden.shape)} / weight {tuple(weight.shape)}"
        )


def fused_linear_objective(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    objective: Objective | str,
    *,
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
) -> tuple[Tensor, StepStats]:
    """Objective loss of `hidden @ weight.T + bias` against `labels`, chunk by chunk, never materializing the logits.

    Labels are unshifted (Hugging Face's convention, as `causal_lm_objective_loss`): position s is scored against
    labels[s + 1] within its row. Pass `shifted=True` when `labels[i]` is already the target of `hidden[i]`.
    `static_weights` (flow) are aligned with `labels` as given. `ref_hidden`/`ref_weight`/`ref_bias` are the frozen
    reference model's (sft_kl, asft). The loss equals `causal_lm_objective_loss` on the materialized logits.
    Shape: hidden [B, S, H] or [T, H], weight [V, H], bias [V], labels [B, S] or [T] -> scalar fp32 loss, StepStats.
    """
    if isinstance(objective, str):
        objective = build_objective(objective)
    _check_inputs(hidden, weight, bias, objective, (ref_hidden, ref_weight))
    if objective.needs_static_weight and static_weights is None:
        raise ValueError(f"objective {objective.name!r} needs precomputed per-token weights (static_weights=)")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    rows, targets = _label_rows(labels, hidden.shape[:-1], shifted, ignore_index)
    vocab = weight.shape[0]
    if targets.numel() and (targets.min() < 0 or targets.max() >= vocab):
        raise ValueError(f"label ids must lie in [0, {vocab}) or equal ignore_index={ignore_index}")
    hidden_rows = _select_rows(hidden.reshape(-1, hidden.shape[-1]), rows)
    use_ref = objective.needs_reference
    ref_rows = _select_rows(ref_hidden.reshape(-1, ref_hidden.shape[-1]), rows).detach() if use_ref else None
    grad_on = torch.is_grad_enabled()
    opt = _Options(
        objective=objective,
        math=_resolve_math(backend, hidden.device, objective),
        chunk_size=chunk_size or default_chunk_size(vocab, hidden.device),
        num_items_in_batch=num_items_in_batch,
        needs_grad=tuple(grad_on and t is not None and t.requires_grad for t in (hidden_rows, weight, bias)),
    )
    loss, logprob, entropy, lse, weights = FusedLinearObjectiveFunction.apply(
        hidden_rows,
        weight,
        bias,
        targets,
        ref_rows,
        ref_weight.detach() if use_ref else None,
        ref_bias.detach() if use_ref and ref_bias is not None else None,
        _static_rows(static_weights, labels, rows, shifted) if static_weights is not None else None,
        opt,
    )
    stats = TokenStats(target_logprob=logprob, entropy=entropy, logsumexp=lse)
    return loss, step_stats(stats, weights)


class FusedLinearObjective(torch.nn.Module):
    """Module form of `fused_linear_objective` holding the objective and options. Same argument order."""

    def __init__(
        self, objective: Objective | str, *, ignore_index: int = -100, chunk_size: int | None = None, backend="auto"
    ) -> None:
        super().__init__()
        self.objective = build_objective(objective) if isinstance(objective, str) else objective
        self.ignore_index, self.chunk_size, self.backend = ignore_index, chunk_size, backend

    def forward(self, hidden: Tensor, weight: Tensor, labels: Tensor, **kwargs) -> tuple[Tensor, StepStats]:
        options = dict(ignore_index=self.ignore_index, chunk_size=self.chunk_size, backend=self.backend)
        return fused_linear_objective(hidden, weight, labels, self.objective, **options, **kwargs)
