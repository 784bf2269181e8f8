"""What greedy generation checks after every token: a progress bar that moves per token, and a task's stop pattern.

A generative task whose answer has a known form (GSM8K's `#### <number>` line) can end each item as soon as that
form is complete, instead of decoding to `max_new_tokens`: a small model that states its answer and then repeats
it costs the whole budget otherwise. The pattern is searched in the decoded new text of each row; a row that
matches stops (the batch runs on for the others), and its ids are cut after the token that completed the match.
"""

from __future__ import annotations

import re
from typing import Any

import torch
from transformers import StoppingCriteria


def compile_stop(pattern: str | None, where: str = "stop_regex") -> re.Pattern | None:
    """The compiled pattern, or None; a malformed one is a ValueError naming `where`."""
    if pattern is None:
        return None
    try:
        return re.compile(pattern)
    except re.error as err:
        raise ValueError(f"{where}: {pattern!r} is not a valid regular expression ({err})") from None


class GenerationWatch(StoppingCriteria):
    """Called by `generate` once per new token of a batch: advances `bar` by one token, and marks finished each
    row whose new text (from position `start` on) matches `stop`. `matched[row]` = new tokens at its first match."""

    def __init__(self, tokenizer: Any, start: int, stop: re.Pattern | None, bar: Any) -> None:
        self.tokenizer, self.start, self.stop, self.bar = tokenizer, start, stop, bar
        self.matched: dict[int, int] = {}
        self.steps = 0

    def __call__(self, input_ids: torch.Tensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        self.steps += 1
        self.bar.update(1)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        if self.stop is None:
            return done
        for row in range(input_ids.shape[0]):
            if row not in self.matched:
                text = self.tokenizer.decode(input_ids[row, self.start :], skip_special_tokens=True)
                if self.stop.search(text):
                    self.matched[row] = input_ids.shape[1] - self.start
            done[row] = row in self.matched
        return done

    def cut(self, row: int, ids: list[int]) -> list[int]:
        """A row's new ids, ending with the token that completed its stop pattern (all of them if none did)."""
        return ids[: self.matched[row]] if row in self.matched else ids
