"""Batch-spanning statistics over every rank: the token statistics of all ranks' micro-batches, gathered.

`masked_sft`'s quantile and `talr`'s median τ and softmax normaliser are defined over the batch's label tokens.
Under data parallelism the batch is split across ranks, so these objectives gather the detached [N] statistics
of every rank before computing them; each rank then weights its own tokens. With no initialised process group (or
one process) the gather returns its input. Every rank must call it once per micro-batch, in the same order,
including ranks that hold no label tokens (the fused op does).
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor


def data_parallel_world_size() -> int:
    """Processes in the default group, 1 when torch.distributed is not initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return 1


def gather_across_ranks(values: Tensor) -> Tensor:
    """Concatenate a detached 1-D tensor of any length over the ranks, in rank order. Shape: [n_r] -> [Σ_r n_r]."""
    values = values.detach()
    world = data_parallel_world_size()
    if world == 1:
        return values
    size = torch.tensor([values.numel()], device=values.device, dtype=torch.long)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s) for s in sizes]
    padded = values.new_zeros(max(max(counts), 1))
    padded[: values.numel()] = values
    parts = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, counts, strict=True)])
