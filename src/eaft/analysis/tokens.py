"""Per-token statistics of the label tokens of encoded samples, in one forward pass of the model.

Each batch is right-padded and run once; the label tokens' logits come chunk by chunk in fp32 from the loss module
that training uses (`eaft.loss.ObjectiveLoss.label_logits`: from the hidden states on the fused path, else with
`logits_to_keep` set to the label positions), so the vocabulary projection only runs where a statistic is needed.
The target log-probability, top-k entropy and logsumexp come from `eaft.ops.stats.chunk_statistics` (the same math
the objectives train with), and the exact entropy and Σ_v p_v² come from one more pass over the same chunk.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from eaft.loss import ObjectiveLoss
from eaft.models import vocab_size
from eaft.ops import EntropySpec, chunk_statistics, label_rows, normalized_entropy

IGNORE_INDEX = -100
TOPK_SPEC = EntropySpec(mode="topk", k=20)
FULL_SPEC = EntropySpec(mode="full", k=20)


def entropy_column(spec: EntropySpec) -> str:
    """Column name of a normalized entropy: `entropy_topk` / `entropy_full` for k=20 and the default normalizer."""
    name = f"entropy_{spec.mode}"
    if spec.k != 20:
        name += f"_k{spec.k}"
    if spec.normalizer is not None:
        name += f"_n{spec.normalizer:g}"
    return name


@torch.no_grad()
def chunk_token_statistics(z: Tensor, targets: Tensor, specs: Sequence[EntropySpec]) -> dict[str, Tensor]:
    """Every per-token statistic of one fp32 chunk of logits.

    Returns logprob, logsumexp, entropy_nats (exact, in nats), one normalized entropy per spec (see
    `entropy_column`), and grad_sq = ‖softmax(z) − onehot(y)‖₂², the squared norm of d CE / d z.
    The exact normalized entropy is min(entropy_nats / scale, 1), as `normalized_entropy` defines it for
    mode 'full'; it is derived here so that the vocabulary is read once more, not twice.
    Shape: z [n, V], targets [n] -> each [n].
    """
    specs = list(specs)
    first_topk = next((s for s in specs if s.mode == "topk"), TOPK_SPEC)
    lse, logprob, topk_entropy, _ = chunk_statistics(z, targets, first_topk)
    logp = z - lse[:, None]
    p = logp.exp()
    entropy_nats = -(p * logp).sum(-1)
    # ‖p − e_y‖² = Σ_{v≠y} p_v² + (1 − p_y)², summed without the cancellation of Σ p² − 2 p_y + 1.
    p.scatter_(1, targets[:, None], 0.0)
    grad_sq = (p * p).sum(-1) + torch.expm1(logprob).square()
    out = {"logprob": logprob, "logsumexp": lse, "entropy_nats": entropy_nats, "grad_sq": grad_sq}
    for spec in specs:
        if spec.mode == "full":
            out[entropy_column(spec)] = (entropy_nats / spec.scale).clamp(0.0, 1.0)
        elif spec == first_topk:
            out[entropy_column(spec)] = topk_entropy
        else:
            out[entropy_column(spec)] = normalized_entropy(z, spec)
    return out


def length_batches(lengths: Sequence[int], batch_tokens: int, max_batch: int) -> list[list[int]]:
    """Group sample indices, longest first, so that each padded batch holds at most `batch_tokens` tokens
    (a longer sample goes alone) and at most `max_batch` samples."""
    if batch_tokens < 1 or max_batch < 1:
        raise ValueError(f"batch_tokens and max_batch must be >= 1, got {batch_tokens} and {max_batch}")
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        width = lengths[current[0]] if current else lengths[i]
        if current and (len(current) + 1 > max_batch or width * (len(current) + 1) > batch_tokens):
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    return batches


def pad_right(rows: Sequence[Sequence[int]], value: int) -> Tensor:
    """Right-pad integer rows to one length. Shape: -> [B, L]."""
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for b, row in enumerate(rows):
        out[b, : len(row)] = torch.as_tensor(list(row), dtype=torch.long)
    return out


def _batch_statistics(loss_module: ObjectiveLoss, model, samples, index, specs, pad_id) -> dict[str, np.ndarray] | None:
    """Statistics of one batch's label tokens, on the CPU; None when the batch has none (no forward run)."""
    input_ids = pad_right([samples[i]["input_ids"] for i in index], pad_id)
    labels = pad_right([samples[i]["labels"] for i in index], IGNORE_INDEX)
    attention_mask = pad_right([[1] * len(samples[i]["input_ids"]) for i in index], 0)
    rows, targets = label_rows(labels, ignore_index=IGNORE_INDEX)
    if not rows.numel():
        return None
    vocab = vocab_size(model)
    bad = (targets < 0) | (targets >= vocab)
    if bad.any():
        sample = int(index[int(rows[bad][0]) // labels.shape[1]])
        raise ValueError(f"sample {sample}: label ids must lie in [0, {vocab}) or equal {IGNORE_INDEX}")
    device = next(model.parameters()).device
    inputs = {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}
    parts: dict[str, list[Tensor]] = {}
    for z, chunk_targets in loss_module.label_logits(model, inputs, labels.to(device)):
        for name, value in chunk_token_statistics(z, chunk_targets, specs).items():
            parts.setdefault(name, []).append(value)
    out = {name: torch.cat(values).cpu().numpy() for name, values in parts.items()}
    out["grad_norm"] = np.sqrt(out.pop("grad_sq"))
    out["sample"] = torch.as_tensor(index, dtype=torch.long)[rows // labels.shape[1]].numpy()
    out["position"] = (rows % labels.shape[1] + 1).numpy()
    out["token_id"] = targets.numpy()
    return out


@torch.no_grad()
def token_statistics_table(
    model: torch.nn.Module,
    samples: Sequence[dict],
    *,
    specs: Sequence[EntropySpec] = (TOPK_SPEC, FULL_SPEC),
    batch_tokens: int = 2048,
    max_batch: int = 32,
    chunk_size: int | None = None,
    fused_loss: str = "auto",
    pad_id: int = 0,
    progress: bool = True,
    desc: str = "analyze",
) -> dict[str, np.ndarray]:
    """Statistics of every label token of `samples` (dicts with `input_ids` and unshifted `labels`, -100 off target).

    Returns columns sorted by (sample, position): sample (index into `samples`), position (index of the target
    token in input_ids), token_id, prob, logprob, logsumexp, entropy_nats, grad_norm (‖softmax − onehot‖₂ of the
    CE gradient w.r.t. the logits) and one normalized entropy column per spec. Shape: each [N].
    The logits come from `eaft.loss.ObjectiveLoss.label_logits`: `fused_loss` and `chunk_size` (label tokens per
    fp32 chunk) mean what they mean in `eaft train`.
    """
    for i, s in enumerate(samples):
        if len(s["input_ids"]) != len(s["labels"]):
            raise ValueError(f"sample {i}: input_ids ({len(s['input_ids'])}) and labels ({len(s['labels'])}) differ")
    loss_module = ObjectiveLoss.for_model(model, "sft", fused_loss=fused_loss, chunk_size=chunk_size)
    was_training = model.training
    model.eval()
    lengths = [len(s["input_ids"]) for s in samples]
    targets = sum(sum(1 for y in s["labels"][1:] if y != IGNORE_INDEX) for s in samples)
    parts: list[dict[str, np.ndarray]] = []
    try:
        with tqdm(total=targets, desc=desc, unit="tok", disable=not progress) as bar:
            for index in length_batches(lengths, batch_tokens, max_batch):
                part = _batch_statistics(loss_module, model, samples, index, list(specs), pad_id)
                if part is not None:
                    parts.append(part)
                    bar.update(len(part["token_id"]))
    finally:
        model.train(was_training)
    return _finish_columns(parts, specs)


def _finish_columns(parts: list[dict[str, np.ndarray]], specs: Sequence[EntropySpec]) -> dict[str, np.ndarray]:
    names = ["logprob", "logsumexp", "entropy_nats", "grad_norm", *(entropy_column(s) for s in specs)]
    if not parts:
        cols = {name: np.zeros(0, np.float32) for name in names}
        cols.update({name: np.zeros(0, np.int64) for name in ("sample", "position", "token_id")})
    else:
        cols = {name: np.concatenate([p[name] for p in parts]) for name in parts[0]}
    order = np.lexsort((cols["position"], cols["sample"]))
    cols = {name: value[order] for name, value in cols.items()}
    cols["prob"] = np.exp(cols["logprob"]).astype(np.float32)
    lead = ["sample", "position", "token_id", "prob", "logprob"]
    return {name: cols[name] for name in lead + [n for n in cols if n not in lead]}
