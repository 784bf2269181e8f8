"""Batching: right padding with an attention mask, or packing several samples into one row.

Packing never lets attention or labels cross sample boundaries: a packed row carries `position_ids` that restart
at 0 for every sample and no `attention_mask`, from which Hugging Face models (transformers >= 4.53, eager / sdpa /
flex / flash attention) build a block-diagonal causal mask; and the first token of every sample is never a label, so
the last token of one sample is never trained to predict the first token of the next.
"""

from __future__ import annotations

from typing import Any

import torch

from eaft.data.encode import IGNORE_INDEX

#: Per-token keys a collator knows how to pad, and their pad values. `static_weights` carries FLOW's weights.
PAD_VALUES = {"labels": IGNORE_INDEX, "static_weights": 0.0}


def pack_examples(examples: list[dict[str, list]], max_length: int) -> list[dict[str, list]]:
    """Concatenate examples in order into rows of at most `max_length` tokens, with per-sample `position_ids`.

    Every per-token key (input_ids, labels, static_weights, ...) is concatenated alike. An example longer than
    `max_length` is an error (truncate with `cutoff_len` first).
    """
    if max_length < 2:
        raise ValueError(f"packing needs max_length >= 2, got {max_length}")
    rows: list[dict[str, list]] = []
    current: dict[str, list] = {}
    for index, example in enumerate(examples):
        length = len(example["input_ids"])
        if length > max_length:
            raise ValueError(f"example {index} has {length} tokens, more than the packing length {max_length}")
        if current and len(current["input_ids"]) + length > max_length:
            rows.append(current)
            current = {}
        labels = [IGNORE_INDEX] + list(example["labels"][1:])  # nothing may predict a sample's first token
        piece = {**example, "labels": labels, "position_ids": list(range(length))}
        for key, values in piece.items():
            current.setdefault(key, []).extend(values)
    if current:
        rows.append(current)
    return rows


class CausalLMCollator:
    """Pads a list of examples into a batch of tensors.

    Unpacked examples give `input_ids`, `labels`, `attention_mask` (1 on real tokens); packed examples (those
    with `position_ids`) give `input_ids`, `labels`, `position_ids` and no attention mask: padding then forms its
    own short sequence with positions restarting at 0 and no labels. An example that carries its own
    `attention_mask` (LLaMA-Factory's `packing`: one causal mask over the packed row) keeps it, padded with 0.
    Float keys such as `static_weights` are padded with 0. Shape: every tensor [B, S], S the longest example
    (rounded up to `pad_to_multiple_of`).
    """

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(f["input_ids"]) for f in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        packed = "position_ids" in features[0]
        batch: dict[str, list] = {}
        for feature in features:
            pad = length - len(feature["input_ids"])
            for key, values in feature.items():
                if key == "position_ids":
                    padded = list(values) + list(range(pad))
                elif key == "attention_mask":  # a packed row that spans one causal mask (LLaMA-Factory's packing)
                    padded = list(values) + [0] * pad
                elif key == "input_ids":
                    padded = list(values) + [self.pad_token_id] * pad
                elif key in PAD_VALUES:
                    padded = list(values) + [PAD_VALUES[key]] * pad
                else:
                    continue  # sample-level metadata does not go to the model
                batch.setdefault(key, []).append(padded)
            if not packed and "attention_mask" not in feature:
                batch.setdefault("attention_mask", []).append([1] * len(feature["input_ids"]) + [0] * pad)
        out = {}
        for key, rows in batch.items():
            dtype = torch.float32 if key == "static_weights" else torch.long
            out[key] = torch.tensor(rows, dtype=dtype)
        return out
