"""LLaMA-Factory 0.9.5's supervised data rules (`compat: llamafactory`), where they show in the loss.

- **Encoding:** a conversation is a system prompt and (user, assistant) pairs; each pair is a source (the user
  slot, after the system slot on the first pair) and a target (the assistant slot), tokenized slot by slot
  (`eaft.data.lf_templates`). Only targets are labels.
- **Truncation** (`infer_seqlen`): pairs are taken in order while budget is left; each pair's budget is split
  between source and target: a target shorter than half the budget keeps all of it, else a source shorter than
  half the budget is kept whole and the target gets the rest, else both are cut in proportion to their lengths
  (the target's share rounded down). The rest of a pair's budget goes to the source.
- **Validation split** (`val_size`): a seeded random permutation of the rows (numpy's `default_rng(seed)`); its
  first `ceil(val_size * n)` rows (a fraction) or `int(val_size)` rows (a count > 1) are held out, and the
  training rows keep the permutation's order.
- **Packing**: with packing, every conversation is encoded to `cutoff_len - 1` tokens, and each group of
  `preprocessing_batch_size` (1000) examples is packed by a greedy knapsack of capacity `cutoff_len - 1`: lengths
  sorted, each row filled by repeatedly taking the longest example that still fits; every row is padded to
  `cutoff_len` tokens. `packing` keeps a plain causal mask over the row (packed sequences attend to each other,
  positions restart per sequence); `neat_packing` isolates the sequences.
"""

from __future__ import annotations

import bisect
import logging
import math
import re
from typing import Any

from eaft.data.encode import IGNORE_INDEX
from eaft.data.formats import DataError, Messages
from eaft.data.lf_templates import THOUGHT, ChatTemplate

logger = logging.getLogger(__name__)

#: LLaMA-Factory packs the examples of each preprocessing batch (`preprocessing_batch_size`, default 1000) apart.
PACKING_GROUP = 1000


def infer_seqlen(source_len: int, target_len: int, budget: int) -> tuple[int, int]:
    """(source tokens kept, target tokens kept) of one pair within `budget` tokens."""
    if target_len * 2 < budget:
        max_target = budget
    elif source_len * 2 < budget:
        max_target = budget - source_len
    else:
        max_target = int(budget * (target_len / (source_len + target_len)))
    target = min(max_target, target_len)
    source = min(max(budget - target, 0), source_len)
    return source, target


def conversation_pairs(messages: Messages, where: str) -> tuple[str, list[tuple[str, str]]] | None:
    """(system prompt, [(user, assistant), ...]) of a conversation, or None for one LLaMA-Factory drops (turns that
    do not alternate user, assistant, ... ending with the assistant). Tool turns are refused."""
    system = ""
    if messages and messages[0]["role"] == "system":
        system, messages = messages[0]["content"], messages[1:]
    for message in messages:
        if message["role"] == "tool" or message.get("tool_calls"):
            raise DataError(
                f"{where}: tool turns are not reproduced under compat: llamafactory (LLaMA-Factory formats them with "
                "its tool formatter); use compat: eaft for tool-calling data"
            )
    roles = [m["role"] for m in messages]
    if not roles or len(roles) % 2 or roles != ["user", "assistant"] * (len(roles) // 2):
        return None
    return system, [(messages[i]["content"], messages[i + 1]["content"]) for i in range(0, len(messages), 2)]


def _strip_thought(content: str) -> str:
    pattern = re.escape(THOUGHT[0]) + "(.*?)" + re.escape(THOUGHT[1])
    return re.sub(pattern, "", content, flags=re.DOTALL).lstrip("\n")


def _has_thought(content: str) -> bool:
    return THOUGHT[0].strip() in content or THOUGHT[1].strip() in content


def encode_pairs(
    tokenizer: Any,
    template: ChatTemplate,
    system: str,
    pairs: list[tuple[str, str]],
    *,
    default_system: str | None = None,
    enable_thinking: bool = True,
) -> list[tuple[list[int], list[int]]]:
    """(source ids, target ids) of every pair, each slot tokenized on its own."""

    def ids(text: str) -> list[int]:
        return list(tokenizer.encode(text, add_special_tokens=False)) if text else []

    system = system or (template.default_system if default_system is None else default_system)
    if template.reasoning and not enable_thinking:
        pairs = [(user, _strip_thought(answer)) for user, answer in pairs]
    empty_thought = ids(THOUGHT[0] + THOUGHT[1]) if template.reasoning else []
    encoded = []
    for index, (user, answer) in enumerate(pairs):
        source = []
        if index == 0:
            source += ids(template.prefix)
            source += ids(template.fill(template.system, system)) if system else []
        source += ids(template.fill(template.user, user))
        target = ids(template.fill(template.assistant, answer))
        if template.reasoning and not _has_thought(answer):
            if enable_thinking:
                target = empty_thought + target  # the empty thought is trained
            else:
                source = source + empty_thought
        encoded.append((source, target))
    return encoded


def truncate_pairs(pairs: list[tuple[list[int], list[int]]], cutoff_len: int) -> dict[str, list[int]]:
    """One example from encoded pairs under LLaMA-Factory's cutoff rule; sources are never labels."""
    input_ids: list[int] = []
    labels: list[int] = []
    for source, target in pairs:
        if len(input_ids) >= cutoff_len:
            break
        keep_source, keep_target = infer_seqlen(len(source), len(target), cutoff_len - len(input_ids))
        input_ids += source[:keep_source] + target[:keep_target]
        labels += [IGNORE_INDEX] * keep_source + target[:keep_target]
    return {"input_ids": input_ids, "labels": labels}


def encode_llamafactory(
    tokenizer: Any,
    template: ChatTemplate,
    conversations: list[Messages],
    *,
    cutoff_len: int,
    default_system: str | None = None,
    enable_thinking: bool = True,
    name: str = "dataset",
) -> list[dict[str, list[int]]]:
    """Every conversation encoded by LLaMA-Factory's rules; each example keeps its row index in `row`.

    Conversations whose turns do not alternate user/assistant are dropped, as LLaMA-Factory drops them, and so
    counted in a warning; rows whose targets were all cut off are kept (LLaMA-Factory keeps them).
    """
    examples, dropped, unlabelled = [], [], 0
    for row, messages in enumerate(conversations):
        structure = conversation_pairs(messages, f"{name}[row {row}]")
        if structure is None:
            dropped.append(row)
            continue
        system, pairs = structure
        encoded = encode_pairs(
            tokenizer, template, system, pairs, default_system=default_system, enable_thinking=enable_thinking
        )
        example = truncate_pairs(encoded, cutoff_len)
        unlabelled += all(label == IGNORE_INDEX for label in example["labels"])
        examples.append({**example, "row": [row]})
    if dropped:
        logger.warning(
            "%s: %d of %d rows are not user/assistant turns in alternation and are dropped, as LLaMA-Factory drops "
            "them (first: row %d)",
            name,
            len(dropped),
            len(conversations),
            dropped[0],
        )
    if not examples:
        raise DataError(f"{name}: no row is a conversation of alternating user/assistant turns")
    if unlabelled:
        logger.warning("%s: %d rows have no label token within cutoff_len=%d (kept)", name, unlabelled, cutoff_len)
    return examples


def split_llamafactory(
    conversations: list[Messages], val_size: float, seed: int
) -> tuple[list[Messages], list[Messages]]:
    """(train, held out) by LLaMA-Factory's seeded random split; no split when val_size is 0."""
    import numpy as np

    total = len(conversations)
    if val_size < 0:
        raise DataError(f"val_size must be >= 0, got {val_size}")
    if val_size <= 1e-6:
        return conversations, []
    count = int(val_size) if val_size >= 1 else math.ceil(val_size * total)
    if count >= total:
        raise DataError(f"val_size={val_size} holds out {count} of {total} rows, leaving none to train")
    order = np.random.default_rng(seed).permutation(total)
    return [conversations[i] for i in order[count:]], [conversations[i] for i in order[:count]]


def _knapsacks(lengths: list[int], capacity: int) -> list[list[int]]:
    """Rows of lengths: sorted ascending, each filled by taking the longest length that still fits, repeatedly."""
    pool = sorted(lengths)
    rows = []
    while pool:
        row, room = [], capacity
        while True:
            index = bisect.bisect(pool, room) - 1
            if index < 0:
                break
            room -= pool[index]
            row.append(pool.pop(index))
        rows.append(row)
    return rows


def pack_llamafactory(
    examples: list[dict[str, list]], cutoff_len: int, *, pad_token_id: int, neat: bool
) -> list[dict[str, list]]:
    """Examples encoded to `cutoff_len - 1` tokens, packed into rows of exactly `cutoff_len` tokens.

    Every row carries `position_ids` that restart per sequence; a `packing` row (neat=False) also carries an
    all-ones `attention_mask`, so the model's causal mask spans the whole row; a `neat_packing` row carries none,
    so its sequences are isolated (see `eaft.data.packing`). Per-token keys (labels, static_weights) are
    concatenated alike and padded with their pad values; `row` lists the packed rows.
    """
    from eaft.data.packing import PAD_VALUES

    capacity = cutoff_len - 1
    rows = []
    for start in range(0, len(examples), PACKING_GROUP):
        group = examples[start : start + PACKING_GROUP]
        by_length: dict[int, list[int]] = {}
        for index, example in enumerate(group):
            if len(example["input_ids"]) > capacity:
                raise ValueError(f"example {start + index} is longer than the packing capacity {capacity}")
            by_length.setdefault(len(example["input_ids"]), []).append(index)
        for lengths in _knapsacks([len(e["input_ids"]) for e in group], capacity):
            row: dict[str, list] = {}
            for length in lengths:
                example = group[by_length[length].pop()]  # the last example of that length, as LLaMA-Factory does
                for key, values in example.items():
                    row.setdefault(key, []).extend(values)
                row.setdefault("position_ids", []).extend(range(length))
            pad = cutoff_len - len(row["input_ids"])
            row["input_ids"] += [pad_token_id] * pad
            row["position_ids"] += [0] * pad
            for key, value in PAD_VALUES.items():
                if key in row:
                    row[key] += [value] * pad
            if not neat:
                row["attention_mask"] = [1] * cutoff_len
            rows.append(row)
    return rows


def llamafactory_examples(
    tokenizer: Any,
    conversations: list[Messages],
    *,
    template: str | None,
    val_size: float,
    seed: int,
    cutoff_len: int,
    packing: bool,
    default_system: str | None = None,
    enable_thinking: bool = True,
    name: str = "dataset",
) -> tuple[list[dict[str, list[int]]], list[dict[str, list[int]]]]:
    """(training examples, held-out examples) of a `compat: llamafactory` run, before packing.

    The template is resolved against the tokenizer first (a misfit is refused before anything loads); with
    packing, LLaMA-Factory encodes to `cutoff_len - 1` tokens so that a packed row plus one pad is `cutoff_len`.
    """
    from eaft.data.lf_templates import resolve_template

    chat = resolve_template(template, tokenizer)
    train, heldout = split_llamafactory(conversations, val_size, seed)
    budget = cutoff_len - 1 if packing else cutoff_len
    options = {"cutoff_len": budget, "default_system": default_system, "enable_thinking": enable_thinking}
    train_examples = encode_llamafactory(tokenizer, chat, train, name=name, **options)
    heldout_examples = encode_llamafactory(tokenizer, chat, heldout, name="held-out", **options) if heldout else []
    return train_examples, heldout_examples
