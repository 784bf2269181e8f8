"""Fixtures: the tiny tokenizer and random models of tests/train/tiny.py, and encoded conversations."""

from __future__ import annotations

import json

import pytest
import torch

from eaft.data import encode_conversation
from tests.train.tiny import build_model, build_tokenizer

WORDS = "the quick brown fox jumps over lazy dog what is two plus three answer five hello world how are you".split()


def conversations(n: int, seed: int = 0) -> list[list[dict]]:
    """`n` chat conversations of random words, some with two assistant turns."""
    gen = torch.Generator().manual_seed(seed)

    def words(k):
        return " ".join(WORDS[i] for i in torch.randint(0, len(WORDS), (k,), generator=gen).tolist())

    out = []
    for i in range(n):
        conv = [{"role": "user", "content": words(3 + i % 4)}, {"role": "assistant", "content": words(4 + i % 7)}]
        if i % 3 == 0:
            conv += [{"role": "user", "content": words(2)}, {"role": "assistant", "content": words(5)}]
        out.append(conv)
    return out


def peaked(model, scale: float = 40.0):
    """Sharpen a random model's predictions, so that low-entropy wrong tokens (confident conflicts) appear."""
    with torch.no_grad():
        model.lm_head.weight.mul_(scale)
    return model


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def model(tokenizer):
    return build_model(vocab_size=len(tokenizer)).eval()


@pytest.fixture(scope="module")
def samples(tokenizer):
    return [encode_conversation(tokenizer, conv) for conv in conversations(12)]


def write_jsonl(path, convs) -> str:
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in convs), encoding="utf-8")
    return str(path)
