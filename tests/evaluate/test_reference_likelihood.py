"""Reference likelihood: the teacher-forced NLL of written responses equals a hand-made full forward per row."""

from __future__ import annotations

import math

import pytest
import torch

from eaft.evaluate.lm import ModelHandle
from eaft.evaluate.reference_likelihood import ReferenceLikelihoodOptions, evaluate_reference_likelihood
from eaft.evaluate.suite import load_suite
from eaft.evaluate.tasks import TaskError, TaskSpec

from .conftest import fixture_rows, write_jsonl


def naive_nll(model, tokenizer, user: str, answer: str) -> tuple[float, int]:
    """Σ −log p(answer token) after the chat prompt, from one forward pass over prompt + answer, in float64."""
    prompt = tokenizer(f"<|user|>{user}<|end|>\n<|assistant|>", add_special_tokens=False)["input_ids"]
    reply = tokenizer(answer, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt + reply])).logits[0].double(), -1)
    return -sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(reply)), len(reply)


def task(path, **options) -> TaskSpec:
    opts = ReferenceLikelihoodOptions(prompt="Q: {question}", answer="answer", batch_tokens=300, **options)
    return TaskSpec(name="gsm_ref", type="reference_likelihood", group="target", path=path, options=opts, source="t")


def test_score_matches_naive_forward(tmp_path, tiny, tiny_model_dir):
    model, tokenizer = tiny
    rows = fixture_rows("gsm8k/test.jsonl", 5)
    path = write_jsonl(tmp_path / "gsm.jsonl", rows)
    per_row = [naive_nll(model, tokenizer, f"Q: {r['question']}", r["answer"]) for r in rows]
    total, tokens = sum(n for n, _ in per_row), sum(t for _, t in per_row)

    outcome = evaluate_reference_likelihood(task(path), ModelHandle(str(tiny_model_dir)))

    assert outcome.metric == "token_prob" and outcome.n == 5
    assert outcome.metrics["answer_tokens"] == tokens
    assert outcome.metrics["nll"] == pytest.approx(total / tokens, rel=1e-5)
    assert outcome.score == pytest.approx(100 * math.exp(-total / tokens), rel=1e-4)
    for sample, (nll, n) in zip(outcome.samples, per_row, strict=True):
        assert sample["tokens"] == n and sample["nll"] == pytest.approx(nll / n, rel=1e-5)


def test_a_better_fit_scores_higher(tmp_path, tiny, tiny_model_dir):
    """The answer the model itself finds likeliest beats a shuffled copy of it (same tokens, other order)."""
    model, tokenizer = tiny
    prompt = tokenizer("<|user|>Q: 2+2<|end|>\n<|assistant|>", add_special_tokens=False)["input_ids"]
    greedy = []
    with torch.no_grad():
        for _ in range(8):
            greedy.append(int(model(torch.tensor([prompt + greedy])).logits[0, -1].argmax()))
    liked = tokenizer.decode([t for t in greedy if t != tokenizer.eos_token_id])
    shuffled = liked[::-1]
    scores = []
    for answer in (liked, shuffled):
        path = write_jsonl(tmp_path / "one.jsonl", [{"question": "2+2", "answer": answer}])
        scores.append(evaluate_reference_likelihood(task(path), ModelHandle(str(tiny_model_dir))).score)
    assert scores[0] > scores[1]


def test_empty_reference_is_an_error_naming_the_line(tmp_path, tiny_model_dir):
    path = write_jsonl(tmp_path / "r.jsonl", [{"question": "a", "answer": "x"}, {"question": "b", "answer": " "}])
    with pytest.raises(TaskError, match=r"r.jsonl:2: field 'answer' should be a non-empty string"):
        evaluate_reference_likelihood(task(path), ModelHandle(str(tiny_model_dir)))


def test_suite_accepts_the_type_and_rejects_unknown_options(tmp_path):
    data = write_jsonl(tmp_path / "d.jsonl", [{"question": "a", "answer": "x"}])
    good = tmp_path / "good.yaml"
    good.write_text(f"target:\n  - name: ref\n    type: reference_likelihood\n    path: {data}\n    answer: answer\n")
    suite = load_suite(good)
    assert suite.tasks[0].type == "reference_likelihood" and suite.tasks[0].options.answer == "answer"
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"target:\n  - name: ref\n    type: reference_likelihood\n    path: {data}\n    max_new_tokens: 5\n")
    with pytest.raises(TaskError, match="max_new_tokens"):
        load_suite(bad)
