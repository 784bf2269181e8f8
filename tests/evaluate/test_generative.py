"""Generative exact match: batched, left-padded greedy decoding equals a hand-made token-by-token loop."""

from __future__ import annotations

import pytest
import torch

from eaft.evaluate.extraction import extract_answer
from eaft.evaluate.generative import GenerativeOptions, evaluate_generative
from eaft.evaluate.lm import ModelHandle
from eaft.evaluate.tasks import TaskError, TaskSpec

from .conftest import fixture_rows, write_jsonl

MAX_NEW = 10


def naive_greedy(model, tokenizer, user: str) -> str:
    """Chat-template prompt, then argmax of a full forward pass per step until <|end|>."""
    text = f"<|user|>{user}<|end|>\n<|assistant|>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    new = []
    with torch.no_grad():
        for _ in range(MAX_NEW):
            token = int(model(torch.tensor([ids + new])).logits[0, -1].argmax())
            new.append(token)
            if token == tokenizer.eos_token_id:
                break
    return tokenizer.decode(new, skip_special_tokens=True)


def test_generation_and_scoring_match_naive_loop(tmp_path, tiny, tiny_model_dir):
    model, tokenizer = tiny
    rows = fixture_rows("gsm8k/test.jsonl", 6)
    responses = [naive_greedy(model, tokenizer, f"{r['question']}\nGive the number.") for r in rows]
    extracted = [extract_answer(r) for r in responses]
    valid = [i for i, e in enumerate(extracted) if e is not None]
    assert len(valid) >= 2, "the tiny model should emit digits in some answers"
    # gold: the naive answer where one was extracted, except for the last such row; a wrong number elsewhere
    for i, (row, value) in enumerate(zip(rows, extracted, strict=True)):
        row["final"] = str(value) if i in valid[:-1] else "-987654"
    expected = len(valid) - 1
    path = write_jsonl(tmp_path / "gsm.jsonl", rows)
    opts = GenerativeOptions(
        prompt="{question}\nGive the number.", answer="final", max_new_tokens=MAX_NEW, batch_size=4
    )
    task = TaskSpec(name="gsm8k", type="generative", group="target", path=path, options=opts, source="test")
    outcome = evaluate_generative(task, ModelHandle(str(tiny_model_dir)))
    assert [s["response"] for s in outcome.samples] == responses
    assert [s["pred"] for s in outcome.samples] == extracted
    assert outcome.metric == "exact_match" and outcome.n == 6
    assert outcome.score == pytest.approx(100.0 * expected / 6)
    assert outcome.metrics["extracted"] == pytest.approx(100.0 * sum(e is not None for e in extracted) / 6)


def test_gold_must_be_numeric(tmp_path, tiny_model_dir):
    path = write_jsonl(tmp_path / "g.jsonl", [{"question": "q", "answer": "seven"}])
    task = TaskSpec(name="g", type="generative", group="target", path=path, options=GenerativeOptions(), source="test")
    with pytest.raises(TaskError, match=r"g.jsonl:1: gold answer 'seven' is not a number"):
        evaluate_generative(task, ModelHandle(str(tiny_model_dir)))
