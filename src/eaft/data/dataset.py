"""A whole dataset encoded for training: conversations -> token examples, with the checks that must fail early."""

from __future__ import annotations

import logging
from typing import Any

from eaft.data.encode import count_labels, encode_conversation
from eaft.data.formats import DataError, Messages

logger = logging.getLogger(__name__)


def encode_dataset(
    tokenizer: Any, conversations: list[Messages], *, cutoff_len: int | None = None, name: str = "dataset"
) -> list[dict[str, list[int]]]:
    """Encode every conversation; each example keeps its row index in `row`.

    Rows whose assistant tokens all fall beyond `cutoff_len` are dropped, and the count is logged as a warning;
    if that leaves nothing to train, it is an error that names `cutoff_len` and the longest prompt.
    """
    if not conversations:
        raise DataError(f"{name}: the dataset is empty (no rows)")
    examples, dropped, longest = [], [], 0
    for row, messages in enumerate(conversations):
        example = encode_conversation(tokenizer, messages, cutoff_len=cutoff_len)
        if count_labels(example) == 0:
            dropped.append(row)
            full = encode_conversation(tokenizer, messages)
            longest = max(longest, next(i for i, label in enumerate(full["labels"]) if label != -100))
            continue
        examples.append({**example, "row": [row]})
    if not examples:
        raise DataError(
            f"{name}: every label is cut off by cutoff_len={cutoff_len} (all {len(conversations)} rows); the "
            f"assistant turns start as late as token {longest}, so raise cutoff_len"
        )
    if dropped:
        logger.warning(
            "%s: %d of %d rows have no assistant token within cutoff_len=%s and are skipped (first: row %d, "
            "counting from 1)",
            name,
            len(dropped),
            len(conversations),
            cutoff_len,
            dropped[0] + 1,
        )
    return examples
