"""Generative exact match: batched, left-padded greedy decoding equals a hand-made token-by-token loop."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from eaft.evaluate.extraction import extract_answer
from eaft.evaluate.generative import GenerativeOptions, evaluate_generative
from eaft.evaluate.lm import ModelHandle
from eaft.evaluate.tasks import TaskError, TaskSpec

from .conftest import fixture_rows, write_jsonl

MAX_NEW = 10
REPO = Path(__file__).resolve().parents[2]


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


def test_a_stop_pattern_ends_each_row_where_its_text_first_matches(tiny):
    """Each row stops after the token that completes the pattern in its own text; the other rows of the batch
    decode on as without it, and a malformed pattern is named."""
    from eaft.evaluate.lm import greedy_generate

    model, tokenizer = tiny
    prompts = [f"<|user|>{q}<|end|>\n<|assistant|>" for q in ("Write a poem.", "Sarah was", "hello")]
    free = greedy_generate(model, tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=3)
    assert all(len(ids) == MAX_NEW for ids in free), "the tiny model should not stop on its own here"
    # the digits the first row writes after its 3rd token: a pattern that only that row's text holds
    stop = r"\d+@"
    texts = [tokenizer.decode(ids, skip_special_tokens=True) for ids in free]
    assert re.search(stop, texts[0]) and not any(re.search(stop, text) for text in texts[1:])
    first = next(k for k in range(1, MAX_NEW + 1) if re.search(stop, tokenizer.decode(free[0][:k])))
    stopped = greedy_generate(model, tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=3, stop_regex=stop)
    assert 1 < first < MAX_NEW and stopped[0] == free[0][:first]
    assert stopped[1:] == free[1:]
    with pytest.raises(ValueError, match=r"stop_regex: '####\(' is not a valid regular expression"):
        greedy_generate(model, tokenizer, prompts, max_new_tokens=2, stop_regex="####(")


def test_progress_moves_per_generated_token(tiny, monkeypatch):
    """The bar counts tokens, so it moves while a batch decodes (it sat at 0/N per batch of items before)."""
    from eaft.evaluate import lm

    model, tokenizer = tiny
    updates = []
    real = lm.tqdm

    class Recording(real):
        def update(self, n=1):
            updates.append(n)
            return super().update(n)

    monkeypatch.setattr(lm, "tqdm", Recording)
    prompts = [f"<|user|>{q}<|end|>\n<|assistant|>" for q in ("Write a poem.", "Sarah was", "hello")]
    lm.greedy_generate(model, tokenizer, prompts, max_new_tokens=MAX_NEW, batch_size=2)
    assert sum(updates) == 2 * MAX_NEW  # two batches, each its whole budget (a batch stopping early jumps)
    assert updates.count(1) >= MAX_NEW  # one step at a time within a batch


def test_the_shipped_gsm8k_stop_pattern_waits_for_the_whole_answer_line():
    import yaml

    pattern = yaml.safe_load((REPO / "configs/suites/tasks/gsm8k.yaml").read_text())["stop_regex"]
    quick = yaml.safe_load((REPO / "configs/suites/quick.yaml").read_text())
    assert quick["target"][0]["stop_regex"] == pattern
    for partial in ("2 + 2 = 4\n####", "#### ", "#### 1", "#### 1,23", "#### no number\n", "no answer yet\n"):
        assert not re.search(pattern, partial), partial
    for text, answer in (("so 4.\n#### 4\n", 4), ("#### 1,234\n#### 1,234", 1234), ("####  -3.5 dollars\nok", -3.5)):
        match = re.search(pattern, text)
        assert match and extract_answer(text[: match.end()]) == answer
