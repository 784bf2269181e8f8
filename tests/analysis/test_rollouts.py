"""Rollouts see the prompt only, left padding does not change them, and they are labelled on the response only."""

from __future__ import annotations

import pytest

from eaft.analysis.rollouts import cut_response, generate_rollouts, pad_left
from eaft.data import encode_conversation, encode_prompt
from tests.analysis.conftest import conversations


def contains(seq, sub) -> bool:
    return any(seq[i : i + len(sub)] == sub for i in range(len(seq) - len(sub) + 1))


def test_rollouts_generate_from_the_prompt_only(model, tokenizer, monkeypatch):
    convs = conversations(5, seed=4)
    marker = "zebra zebra zebra"  # the reference answer: must never reach the model
    for conv in convs:
        conv[-1]["content"] = marker
    prompts = [encode_prompt(tokenizer, conv) for conv in convs]
    seen = []
    real_generate = model.generate

    def spy(input_ids, attention_mask, **kwargs):
        for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
            seen.append([t for t, m in zip(ids, mask, strict=True) if m])
        return real_generate(input_ids=input_ids, attention_mask=attention_mask, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    rollouts = generate_rollouts(model, tokenizer, prompts, k=2, max_new_tokens=6, batch_size=2, progress=False)
    assert seen == prompts  # exactly encode_prompt's ids, nothing more
    answer_ids = tokenizer(marker, add_special_tokens=False)["input_ids"]
    for conv, prompt in zip(convs, prompts, strict=True):
        full = encode_conversation(tokenizer, conv)["input_ids"]
        assert contains(full, answer_ids) and not contains(prompt, answer_ids)
        assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")
    assert [(r["sample"], r["rollout"]) for r in rollouts] == [(i, r) for i in range(5) for r in range(2)]
    for r in rollouts:
        prompt = prompts[r["sample"]]
        assert r["input_ids"][: len(prompt)] == prompt and r["labels"][: len(prompt)] == [-100] * len(prompt)
        response = r["input_ids"][len(prompt) :]
        assert r["labels"][len(prompt) :] == response and 1 <= len(response) <= 6


def test_left_padding_does_not_change_greedy_rollouts(model, tokenizer):
    prompts = [encode_prompt(tokenizer, conv) for conv in conversations(4, seed=2)]
    assert len({len(p) for p in prompts}) > 1  # the batch really is padded
    options = dict(k=1, max_new_tokens=5, temperature=0.0, progress=False)
    batched = generate_rollouts(model, tokenizer, prompts, batch_size=4, **options)
    alone = generate_rollouts(model, tokenizer, prompts, batch_size=1, **options)
    assert [r["input_ids"] for r in batched] == [r["input_ids"] for r in alone]
    with pytest.raises(ValueError, match="greedy"):
        generate_rollouts(model, tokenizer, prompts, k=2, temperature=0.0, progress=False)


def test_sampled_rollouts_follow_the_seed(model, tokenizer):
    prompts = [encode_prompt(tokenizer, conv) for conv in conversations(2, seed=5)]
    a, b, c = (
        generate_rollouts(model, tokenizer, prompts, k=3, max_new_tokens=5, seed=s, progress=False) for s in (1, 1, 2)
    )
    assert [r["input_ids"] for r in a] == [r["input_ids"] for r in b] != [r["input_ids"] for r in c]


def test_response_stops_at_the_first_end_token_and_left_pad():
    assert cut_response([5, 6, 2, 7, 0], stops={2}, pad_id=0) == [5, 6, 2]
    assert cut_response([5, 6, 0, 0], stops={2}, pad_id=0) == [5, 6]
    ids, mask = pad_left([[1, 2, 3], [4]], value=0)
    assert ids.tolist() == [[1, 2, 3], [0, 0, 4]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
