"""The per-chunk math of every loss: statistics of label tokens from fp32 logits, their gradient, the token loss.

This is the spec that the Triton kernels twin. `chunk_statistics` and `chunk_logits_grad` serve the materialized
path (`eaft.ops.tokens.token_statistics`, from logits) and the fused linear op (`eaft.ops.fused`, from hidden
states), so both agree by construction. `token_loss` and `reduce_token_loss` are the one loss formula:
L = Σ_t (−w_t · log p(y_t) + kl_coef · KL_t) / num_items.
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


def token_loss(weights: Tensor, target_logprob: Tensor, kl: Tensor | None = None, kl_coef: float = 0.0) -> Tensor:
    """Per-token loss −w · log p(y) (+ kl_coef · KL). Shape: [N] each -> [N]."""
    loss = -weights * target_logprob
    if kl_coef and kl is not None:
        loss = loss + kl_coef * kl
    return loss


def loss_denominator(n: int, num_items_in_batch: int | Tensor | None, device: torch.device) -> float | Tensor:
    """What the summed token loss is divided by: `num_items_in_batch` (label tokens of the whole accumulation
    window, all ranks; Hugging Face's contract) when given, else the local label-token count; at least 1."""
    if num_items_in_batch is None:
        return float(max(n, 1))
    if isinstance(num_items_in_batch, Tensor):
        return num_items_in_batch.to(device, torch.float32).clamp_min(1)
    return max(float(num_items_in_batch), 1.0)


def reduce_token_loss(token_losses: Tensor, num_items_in_batch: int | Tensor | None = None) -> Tensor:
    """Σ token_losses / `loss_denominator`. An empty input gives a zero that back-propagates."""
    return token_losses.sum() / loss_denominator(token_losses.shape[0], num_items_in_batch, token_losses.device)
