"""Self-consistency: NLL under the evaluated model of the reference model's greedy answers, by hand."""

from __future__ import annotations

import math

import pytest
import torch

from eaft.evaluate.cache import ResultCache
from eaft.evaluate.lm import ModelHandle
from eaft.evaluate.self_consistency import GENERAL_PROMPTS, SelfConsistencyOptions, evaluate_self_consistency
from eaft.evaluate.tasks import TaskSpec, read_jsonl
from eaft.models import load_model_and_tokenizer

from .conftest import build_model

MAX_NEW = 6


def greedy_ids(model, tokenizer, user: str) -> tuple[list[int], list[int]]:
    prompt = tokenizer(f"<|user|>{user}<|end|>\n<|assistant|>", add_special_tokens=False)["input_ids"]
    new: list[int] = []
    with torch.no_grad():
        for _ in range(MAX_NEW):
            new.append(int(model(torch.tensor([prompt + new])).logits[0, -1].argmax()))
            if new[-1] == tokenizer.eos_token_id:
                break
    return prompt, new


def naive_nll(model, prompt: list[int], answer: list[int]) -> float:
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([prompt + answer])).logits[0].double(), -1)
    return -sum(float(logp[len(prompt) - 1 + i, t]) for i, t in enumerate(answer))


def task(limit: int = 4, reference: str | None = None) -> TaskSpec:
    opts = SelfConsistencyOptions(max_new_tokens=MAX_NEW, batch_size=3, reference=reference)
    return TaskSpec(name="sc", type="self_consistency", group="general", path=None, options=opts, limit=limit)


def expected_score(reference_model, evaluated_model, tokenizer, limit: int) -> tuple[float, float]:
    users = [r["prompt"] for r in read_jsonl(GENERAL_PROMPTS)[:limit]]
    total, tokens = 0.0, 0
    for user in users:
        prompt, answer = greedy_ids(reference_model, tokenizer, user)
        total += naive_nll(evaluated_model, prompt, answer)
        tokens += len(answer)
    return total / tokens, 100 * math.exp(-total / tokens)


@pytest.fixture(scope="module")
def adapter_dir(tiny_model_dir, tmp_path_factory):
    from peft import LoraConfig, get_peft_model

    model, _ = load_model_and_tokenizer(str(tiny_model_dir))
    torch.manual_seed(1)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    folder = tmp_path_factory.mktemp("adapter")
    get_peft_model(model, config).save_pretrained(folder)
    return folder


def test_adapter_run_scores_the_base_answers(tiny_model_dir, adapter_dir, tmp_path):
    from peft import PeftModel

    base, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    tuned = PeftModel.from_pretrained(load_model_and_tokenizer(str(tiny_model_dir))[0], str(adapter_dir)).eval()
    nll, score = expected_score(base, tuned, tokenizer, 4)
    cache = ResultCache(tmp_path / "cache")
    handle = ModelHandle(str(tiny_model_dir), str(adapter_dir))
    outcome = evaluate_self_consistency(task(), handle, cache)
    assert outcome.metrics["nll"] == pytest.approx(nll, rel=1e-4)
    assert outcome.score == pytest.approx(score, rel=1e-4) and outcome.metric == "token_prob"
    # the base's own answers under the base: a different (and here, lower) NLL
    own = evaluate_self_consistency(task(), ModelHandle(str(tiny_model_dir)), cache)
    assert own.metrics["nll"] == pytest.approx(expected_score(base, base, tokenizer, 4)[0], rel=1e-4)
    assert own.metrics["nll"] < outcome.metrics["nll"]


def test_reference_answers_are_cached_and_another_reference_is_loaded(tiny_model_dir, tmp_path, monkeypatch):
    other_dir = tmp_path / "other"
    evaluated, tokenizer = load_model_and_tokenizer(str(tiny_model_dir))
    other = build_model(len(tokenizer), seed=3)
    other.save_pretrained(other_dir)
    tokenizer.save_pretrained(other_dir)
    nll, _ = expected_score(other, evaluated, tokenizer, 3)
    cache = ResultCache(tmp_path / "cache")
    outcome = evaluate_self_consistency(task(3, str(other_dir)), ModelHandle(str(tiny_model_dir)), cache)
    assert outcome.metrics["nll"] == pytest.approx(nll, rel=1e-4)
    assert len(list((tmp_path / "cache" / "reference_answers").glob("*.json"))) == 1

    def no_generation(*args, **kwargs):
        raise AssertionError("reference answers should come from the cache")

    monkeypatch.setattr("eaft.evaluate.self_consistency.greedy_generate", no_generation)
    again = evaluate_self_consistency(task(3, str(other_dir)), ModelHandle(str(tiny_model_dir)), cache)
    assert again.metrics["nll"] == pytest.approx(nll, rel=1e-4)


def test_shipped_prompt_set():
    rows = read_jsonl(GENERAL_PROMPTS)
    assert 30 <= len(rows) <= 60
    assert len({r["id"] for r in rows}) == len(rows) and all(r["prompt"].strip() for r in rows)
