"""Fused chunked linear + weighted token loss: any objective's loss from hidden states, without [tokens × vocab] logits.

This pure-PyTorch op is the spec and the CPU path; `eaft.ops.triton` swaps in fused kernels for the per-chunk
softmax math and keeps everything else here.

Design:
- Rows whose label equals `ignore_index` are dropped before any matmul; the N label rows are cut into chunks of
  `chunk_size`, and only one chunk's logits ([chunk, V]) exist at a time.
- Per chunk the shared `eaft.ops.stats.chunk_statistics` (or its CPU twin in `eaft.ops.cpu`) gives log-sum-exp,
  target log-prob, entropy (the caller's `EntropySpec`) and the reference KL; `chunk_logits_grad` gives
  d(loss)/d(logits). Neither is re-derived here, so the fused and materialized paths agree by construction.
- The per-token weights come from a callable on those statistics (an objective's `token_weights`): the op knows
  no objective.
- Gradients are formed in the forward (as Liger-Kernel's fused linear cross-entropy does): each chunk's logits are
  used once for the statistics and once for d(loss)/d(logits), then dropped. That costs three matmul-equivalents
  (the logits, grad_hidden, grad_weight), the same as a materialized loss; recomputing in the backward would cost a
  fourth. Backward only scales the stored gradients by the upstream gradient.
- Per-token weights (`batch_global=False`: sft, eaft, dft, sft_kl, flow) are formed per chunk, in one pass.
  Batch-global weights (masked_sft's quantile, talr's softmax over tokens) need every token's statistics first:
  a statistics pass over all chunks, the weights over the whole batch, then a gradient pass that recomputes each
  chunk's logits (four matmul-equivalents).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import Tensor

from eaft.ops.stats import (
    EntropySpec,
    TokenStats,
    chunk_logits_grad,
    chunk_statistics,
    loss_denominator,
    reduce_token_loss,
    token_loss,
)

BACKENDS = ("auto", "torch", "triton")
#: Bytes of the one [chunk, V] logits buffer (in the weight's dtype) of the CPU math (`eaft.ops.cpu`) when
#: `chunk_size` is not given: it and [2048, chunk] fp32 blocks are all the chunk math holds beside the fp32 weight
#: gradient, so that at V=151,936 fp32 (160 rows) a step stays within 700 MB up to T=8192
#: (benchmarks/loss_memory.py). Above 32 MiB, glibc's ceiling for its dynamic mmap threshold, the buffer is
#: mmapped and given back when freed; smaller buffers on the malloc heap were seen to fragment it.
CPU_CHUNK_BYTES = 96 * 2**20
GPU_CHUNK_BYTES = 256 * 2**20
#: Vocabulary rows per step of a 16-bit weight gradient's fp32 accumulation ([8192, H] products).
WEIGHT_GRAD_BLOCK = 8192
#: Least bytes of one slab of a 16-bit weight gradient's fp32 accumulator: the accumulator is a list of slabs of
#: whole WEIGHT_GRAD_BLOCKs, each above glibc's 32 MiB mmap ceiling, so that each slab is given back as soon as it
#: is rounded into the 16-bit gradient and the two never stand whole side by side (545 + 272 MB at V=151,936).
WEIGHT_GRAD_SLAB_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ScaledGrad:
    """d(loss)/d(logits) of a chunk as `token_scale[:, None] * values`: a per-token scale that the gradient products
    fold into their [n, H] operands, so that no pass over [n, V] applies it. Shape: values [n, V], token_scale [n]."""

    values: Tensor
    token_scale: Tensor

    def dense(self) -> Tensor:
        """The gradient itself, in fp32 (for checks)."""
        return self.values.float() * self.token_scale[:, None]


@dataclass(frozen=True)
class ChunkMath:
    """The per-chunk math of one backend; `statistics` and `logits_grad` keep the signatures of the shared ones.

    `logits(h, W, b, out)` gives the chunk's logits in the dtype `statistics` reads, computed into `out` (a reused
    [rows, V] buffer in the weight's dtype); `logits_grad` may overwrite them, and so may `statistics` (the CPU
    math leaves exp(z − max) there, which its `logits_grad` on the same tensor hands on as a `ScaledGrad`): after
    the statistics, a chunk's logits serve only its gradient, or are recomputed. `logits_grad` returns the
    gradient as a tensor or as a `ScaledGrad`.
    """

    name: str
    logits: Callable[[Tensor, Tensor, Tensor | None, Tensor], Tensor]
    statistics: Callable[..., tuple[Tensor, Tensor, Tensor, Tensor | None]]
    logits_grad: Callable[..., Tensor]


def linear(hidden: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor | None = None) -> Tensor:
    """hidden @ weight.T (+ bias) in the weight's dtype, into `out` when given. Shape: [n, H], [V, H], [V] -> [n, V]."""
    hidden = hidden.to(weight.dtype)
    if bias is None:
        return torch.mm(hidden, weight.T, out=out)
    return torch.addmm(bias.to(weight.dtype), hidden, weight.T, out=out)


def _torch_logits(hidden: Tensor, weight: Tensor, bias: Tensor | None, out: Tensor) -> Tensor:
    """The chunk's fp32 logits, computed into `out`."""
    return linear(hidden, weight, bias, out).float()


TORCH_MATH = ChunkMath(
    name="torch",
    logits=_torch_logits,
    statistics=chunk_statistics,
    logits_grad=chunk_logits_grad,
)
#: The torch math with the reference KL taken as KL(π_ref ‖ π_θ) (asft); the Triton kernels compute only the other
#: direction, KL(π_θ ‖ π_ref).
TORCH_MATH_REF_MODEL = ChunkMath(
    name="torch",
    logits=_torch_logits,
    statistics=partial(chunk_statistics, reference_kl="ref_model"),
    logits_grad=partial(chunk_logits_grad, reference_kl="ref_model"),
)


def default_chunk_size(
    vocab: int,
    device: torch.device | str = "cpu",
    itemsize: int = 4,
    *,
    rows: int | None = None,
    hidden_size: int | None = None,
) -> int:
    """Label tokens per chunk, a multiple of 8 from 16 to 4096. CPU: the most whose [chunk, V] buffer of
    `itemsize`-byte elements (the weight's) fits CPU_CHUNK_BYTES; for 16-bit weights, given the step's label `rows`
    and the `hidden_size`, all of them in one chunk when rows ≤ 2 · hidden_size, where the one [rows, V] buffer is
    no larger than the fp32 slabs of the weight gradient it spares (at T=512, H=896, V=151,936 bf16: 0.73× CE's
    time at 427 MB, against 1.14× at 716 MB in two chunks; benchmarks/loss_memory.py). CUDA: about GPU_CHUNK_BYTES
    per fp32 buffer (the caching allocator reuses them; an untuned guess)."""
    if torch.device(device).type == "cuda":
        chunk = -(-(GPU_CHUNK_BYTES // (4 * max(vocab, 1)) + 1) // 8) * 8
    else:
        chunk = CPU_CHUNK_BYTES // (itemsize * max(vocab, 1)) // 8 * 8
        if itemsize < 4 and rows is not None and hidden_size is not None and rows <= 2 * hidden_size:
            chunk = max(chunk, -(-rows // 8) * 8)
    return int(min(max(chunk, 16), 4096))


#: Per-token weights from a chunk's (or, batch-global, the whole batch's) statistics. Shape: TokenStats of [n] -> [n].
TokenWeights = Callable[[TokenStats], Tensor]


@dataclass(frozen=True)
class _Options:
    token_weights: TokenWeights
    batch_global: bool
    kl_coef: float
    entropy: EntropySpec
    math: ChunkMath
    chunk_size: int
    num_items_in_batch: int | Tensor | None
    needs_grad: tuple[bool, bool, bool]  # hidden, weight, bias


@dataclass
class _Rows:
    """The N label rows. Shape: hidden [N, H], targets [N], ref_hidden [N, H], static_weights [N]."""

    hidden: Tensor
    weight: Tensor
    bias: Tensor | None
    targets: Tensor
    ref_hidden: Tensor | None
    ref_weight: Tensor | None
    ref_bias: Tensor | None
    static_weights: Tensor | None
    buffers: dict[str, Tensor] = field(default_factory=dict)

    def chunks(self, size: int) -> list[slice]:
        return [slice(start, start + size) for start in range(0, self.targets.numel(), size)]

    def logits(self, sl: slice, math: ChunkMath) -> tuple[Tensor, Tensor | None]:
        """One chunk's logits (and the reference's), in buffers reused across chunks: a fresh [chunk, V] tensor per
        chunk costs page faults on CPU, where large allocations are mmapped anew each time."""
        n = self.hidden[sl].shape[0]
        z = math.logits(self.hidden[sl], self.weight, self.bias, self._buffer("z", self.weight, n))
        if self.ref_hidden is None:
            return z, None
        ref_out = self._buffer("ref_z", self.ref_weight, n)
        return z, math.logits(self.ref_hidden[sl], self.ref_weight, self.ref_bias, ref_out)

    def _buffer(self, name: str, weight: Tensor, rows: int) -> Tensor:
        if name not in self.buffers or self.buffers[name].shape[0] < rows:
            self.buffers[name] = weight.new_empty(rows, weight.shape[0])
        return self.buffers[name][:rows]

    def stats(self, sl: slice, lse: Tensor, logprob: Tensor, entropy: Tensor, kl: Tensor | None) -> TokenStats:
        weights = self.static_weights[sl] if self.static_weights is not None else None
        return TokenStats(target_logprob=logprob, entropy=entropy, logsumexp=lse, kl=kl, static_weight=weights)


class _Grads:
    """Gradient accumulators; None where no gradient is needed.

    The weight gradient is summed over chunks in fp32: for fp32 weights in the result itself, the first chunk's
    product written rather than added to zeros; for 16-bit weights in fp32 slabs (see WEIGHT_GRAD_SLAB_BYTES),
    with the last chunk's sum rounded straight into the 16-bit result and each slab let go once it is (a single
    chunk's product goes to the result directly, as a materialized loss's would).
    """

    def __init__(self, rows: _Rows, needs: tuple[bool, bool, bool]) -> None:
        h, w, b = rows.hidden, rows.weight, rows.bias
        self.hidden = torch.zeros_like(h) if needs[0] else None
        # Untouched until the first product is written into it (or the last chunk's sums, for 16-bit weights).
        self.weight = torch.empty(w.shape, dtype=w.dtype, device=w.device) if needs[1] else None
        self.slabs: list[Tensor | None] = []  # 16-bit weights over several chunks: the fp32 sums
        self.product: Tensor | None = None
        self.bias = torch.zeros(b.shape, dtype=torch.float32, device=b.device) if needs[2] else None
        self._bias_dtype = b.dtype if b is not None else None
        self.rows_total, self.rows_done = rows.targets.numel(), 0

    @property
    def any(self) -> bool:
        return self.hidden is not None or self.weight is not None or self.bias is not None

    def add_chunk(self, grad_logits: Tensor | ScaledGrad, sl: slice, rows: _Rows) -> None:
        """Back-propagate d(loss)/d(logits) of one chunk through the linear layer; chunks come in order, each once.
        Shape: [n, V], any layout.

        A `ScaledGrad`'s per-token scale multiplies the [n, H] hidden rows before the weight-gradient product and
        the [n, H] hidden-gradient product after it: g = s ⊙ v gives gᵀ h = vᵀ (s ⊙ h) and g W = s ⊙ (v W).
        """
        scale = None
        if isinstance(grad_logits, ScaledGrad):
            grad_logits, scale = grad_logits.values, grad_logits.token_scale
        g = grad_logits.to(rows.weight.dtype)
        first = self.rows_done == 0
        self.rows_done += g.shape[0]
        last = self.rows_done >= self.rows_total
        if self.hidden is not None:
            # The same product either way; measured on CPU with g the CPU math's [V, n] buffer viewed [n, V]: fp32
            # g W under MKL 0.82× the time of (Wᵀ gᵀ)ᵀ at 160 rows, bf16 (Wᵀ gᵀ)ᵀ under oneDNN 0.62× of g W.
            product = torch.mm(g, rows.weight) if g.dtype == torch.float32 else torch.mm(rows.weight.T, g.T).T
            if scale is not None:
                product = product.float() * scale[:, None]
            self.hidden[sl] = product.to(self.hidden.dtype)
        if self.weight is not None:
            hidden = rows.hidden[sl] if scale is None else rows.hidden[sl].float() * scale[:, None]
            self._add_weight_grad(g.T, hidden.to(g.dtype), first, last)
        if self.bias is not None:
            if scale is None:
                self.bias += g.sum(0, dtype=torch.float32)
            else:
                self.bias += torch.mv(g.T, scale.to(g.dtype)).float()

    def _add_weight_grad(self, gt: Tensor, hidden: Tensor, first: bool, last: bool) -> None:
        """grad_W += gᵀ h. Shape: gt [V, n], hidden [n, H]."""
        weight = self.weight
        if weight.dtype == torch.float32 or (first and last):
            if first:
                torch.mm(gt, hidden, out=weight)
            else:
                weight.addmm_(gt, hidden)
            return
        if first:
            blocks = max(1, -(-WEIGHT_GRAD_SLAB_BYTES // (4 * WEIGHT_GRAD_BLOCK * max(weight.shape[1], 1))))
            step = blocks * WEIGHT_GRAD_BLOCK
            self.slabs = [
                torch.empty(min(step, weight.shape[0] - at), weight.shape[1], dtype=torch.float32, device=gt.device)
                for at in range(0, weight.shape[0], step)
            ]
        # 16-bit: each product in the weight's dtype (fp32 accumulation inside the matmul) over a vocabulary block,
        # added to its fp32 slab, so no [V, chunk] or [V, H] fp32 copy is made.
        # One reused product buffer: fresh [block, H] products, two alive at a time, were seen to make glibc trim
        # and refault its heap at every block and double the time.
        if self.product is None:
            self.product = weight.new_empty(min(WEIGHT_GRAD_BLOCK, weight.shape[0]), weight.shape[1])
        start, slabs = 0, self.slabs
        for index in range(len(slabs)):
            slab = slabs[index]
            for at in range(0, slab.shape[0], WEIGHT_GRAD_BLOCK):
                part = slab[at : at + WEIGHT_GRAD_BLOCK]
                rows = slice(start + at, start + at + part.shape[0])
                product = torch.mm(gt[rows], hidden, out=self.product[: part.shape[0]])
                if first:
                    part.copy_(product)
                elif last:  # the sum in fp32, rounded once (torch.add(..., out=weight[rows]) is 5× slower)
                    weight[rows].copy_(part.add_(product))
                else:
                    part += product
            start += slab.shape[0]
            if last:
                slabs[index] = None  # given back now: the result's pages fill as the slabs empty
            del slab, part, product
        if last:
            self.slabs, self.product = [], None

    def finish(self) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        if self.weight is not None and self.rows_done == 0:
            self.weight.zero_()  # no label rows
        bias = self.bias.to(self._bias_dtype) if self.bias is not None else None
        return self.hidden, self.weight, bias


def _chunk_grad(opt: _Options, z, ref_z, targets, lse, kl, weights, scale) -> Tensor:
    grad_kl = None
    if kl is not None and opt.kl_coef:
        grad_kl = torch.full_like(kl, opt.kl_coef) * scale
    return opt.math.logits_grad(z, targets, lse, -weights * scale, ref_z, kl, grad_kl)


def _local_pass(rows: _Rows, opt: _Options, grads: _Grads, scale) -> list[tuple[Tensor, ...]]:
    """One pass: statistics, per-chunk weights and gradients. Returns per chunk (lse, logprob, entropy, kl, w)."""
    records = []
    for sl in rows.chunks(opt.chunk_size):
        z, ref_z = rows.logits(sl, opt.math)
        targets = rows.targets[sl]
        lse, logprob, entropy, kl = opt.math.statistics(z, targets, opt.entropy, ref_z)
        weights = opt.token_weights(rows.stats(sl, lse, logprob, entropy, kl)).detach().float()
        records.append((lse, logprob, entropy, kl, weights))
        if grads.any:
            grads.add_chunk(_chunk_grad(opt, z, ref_z, targets, lse, kl, weights, scale), sl, rows)
        del z, ref_z
    return records


def _global_pass(rows: _Rows, opt: _Options, grads: _Grads, scale) -> list[tuple[Tensor, ...]]:
    """Two passes: statistics of every chunk, weights over the whole batch, then gradients from recomputed logits."""
    chunks = rows.chunks(opt.chunk_size)
    parts = []
    for sl in chunks:
        z, ref_z = rows.logits(sl, opt.math)
        parts.append(opt.math.statistics(z, rows.targets[sl], opt.entropy, ref_z))
        del z, ref_z
    lse, logprob, entropy = (torch.cat([p[i] for p in parts]) for i in range(3))
    kl = torch.cat([p[3] for p in parts]) if rows.ref_hidden is not None else None
    weights = opt.token_weights(rows.stats(slice(None), lse, logprob, entropy, kl)).detach().float()
    if grads.any:
        for sl in chunks:
            z, ref_z = rows.logits(sl, opt.math)
            g = _chunk_grad(
                opt, z, ref_z, rows.targets[sl], lse[sl], None if kl is None else kl[sl], weights[sl], scale
            )
            grads.add_chunk(g, sl, rows)
            del z, ref_z, g
    return [(lse, logprob, entropy, kl, weights)]


class FusedLinearLossFunction(torch.autograd.Function):
    """Weighted token loss over the label rows; gradients formed in the forward, scaled in the backward.

    Tensors first (None where absent), then one options record. Outputs: loss (scalar) and, not differentiable,
    logprob, entropy, logsumexp, weights ([N] fp32) for the step statistics.
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, ref_hidden, ref_weight, ref_bias, static_weights, opt: _Options):
        rows = _Rows(hidden, weight, bias, targets, ref_hidden, ref_weight, ref_bias, static_weights)
        grads = _Grads(rows, opt.needs_grad)
        scale = 1.0 / loss_denominator(targets.numel(), opt.num_items_in_batch, hidden.device)
        run = _global_pass if opt.batch_global else _local_pass
        records = run(rows, opt, grads, scale) if targets.numel() else []
        if not targets.numel() and opt.batch_global:
            # Batch-global weights gather statistics over ranks: a rank without label tokens still takes part.
            empty = hidden.new_zeros(0, dtype=torch.float32)
            opt.token_weights(TokenStats(empty, empty, empty))
        rows.buffers.clear()
        lse, logprob, entropy, weights = (
            torch.cat([r[i] for r in records]) if records else hidden.new_zeros(0, dtype=torch.float32)
            for i in (0, 1, 2, 4)
        )
        kl = torch.cat([r[3] for r in records]) if rows.ref_hidden is not None and records else None
        loss = reduce_token_loss(token_loss(weights, logprob, kl, opt.kl_coef), opt.num_items_in_batch)
        ctx.save_for_backward(*grads.finish())
        ctx.consumed = False
        ctx.mark_non_differentiable(logprob, entropy, lse, weights)
        return loss, logprob, entropy, lse, weights

    @staticmethod
    def backward(ctx, grad_loss, *_unused):
        if ctx.consumed:
            raise RuntimeError("the fused linear loss forms its gradients in the forward; back-propagate it once")
        ctx.consumed = True
        grads = []
        for g in ctx.saved_tensors:
            # In place: the weight gradient is as large as the weight, and these buffers are used only here.
            grads.append(g.mul_(grad_loss.to(g.dtype)) if g is not None else None)
        return (*grads, None, None, None, None, None, None)
