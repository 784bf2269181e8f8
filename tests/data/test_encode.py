"""Label masking token by token, prompts, cutoff_len, and packing that never crosses sample boundaries."""

from __future__ import annotations

import pytest
import torch

from eaft.data import (
    IGNORE_INDEX,
    CausalLMCollator,
    DataError,
    encode_conversation,
    encode_dataset,
    encode_prompt,
    pack_examples,
)
from tests.train.tiny import CHATML, LLAMA3, build_model, build_tokenizer

CONV = [
    {"role": "user", "content": "what is two plus three?"},
    {"role": "assistant", "content": "the answer is five."},
    {"role": "user", "content": "and the fox?"},
    {"role": "assistant", "content": "quick brown fox"},
]


def labelled_runs(example: dict[str, list[int]]) -> list[list[int]]:
    """The label tokens of an encoded example, as runs of consecutive positions (each label equals its input)."""
    runs, current = [], []
    for token, label in zip(example["input_ids"], example["labels"], strict=True):
        if label != IGNORE_INDEX:
            assert label == token
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    return runs + ([current] if current else [])


@pytest.mark.parametrize(("template", "eot"), [(CHATML, "<|im_end|>"), (LLAMA3, "<|eot|>")])
def test_labels_cover_exactly_every_assistant_turn_and_its_end_marker(template, eot):
    tokenizer = build_tokenizer(template)
    example = encode_conversation(tokenizer, CONV)
    runs = labelled_runs(example)
    assert [tokenizer.decode(run) for run in runs] == ["the answer is five." + eot, "quick brown fox" + eot]
    # token by token: the labelled tokens are exactly the tokens of each assistant content, then the marker
    for run, message in zip(runs, [CONV[1], CONV[3]], strict=True):
        content_ids = tokenizer(message["content"], add_special_tokens=False)["input_ids"]
        assert run == content_ids + [tokenizer.convert_tokens_to_ids(eot)]
    # everything else (system, user turns, role headers, trailing newline) is masked
    unlabelled = [t for t, lab in zip(example["input_ids"], example["labels"], strict=True) if lab == IGNORE_INDEX]
    text = tokenizer.decode(unlabelled)
    assert "what is two plus three?" in text and "and the fox?" in text and "five" not in text


def test_prompt_is_the_prefix_before_the_last_assistant_turn():
    tokenizer = build_tokenizer()
    example = encode_conversation(tokenizer, CONV)
    prompt = encode_prompt(tokenizer, CONV)
    assert example["input_ids"][: len(prompt)] == prompt
    # the prompt stops exactly where the last labelled run begins
    assert example["labels"][len(prompt)] != IGNORE_INDEX and example["labels"][len(prompt) - 1] == IGNORE_INDEX
    assert all(lab != IGNORE_INDEX for lab in example["labels"][len(prompt) : -1])
    assert tokenizer.decode(prompt).endswith("<|im_start|>assistant\n")


def test_tool_calls_are_trained_when_the_template_cannot_render_them():
    tokenizer = build_tokenizer()
    call = {"type": "function", "function": {"name": "add", "arguments": "{}"}}
    conv = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "", "tool_calls": [call]}]
    (run,) = labelled_runs(encode_conversation(tokenizer, conv))
    assert '"name": "add"' in tokenizer.decode(run)


def test_cutoff_len_truncates_and_fully_cut_dataset_is_an_error():
    tokenizer = build_tokenizer()
    full = encode_conversation(tokenizer, CONV)
    cut = encode_conversation(tokenizer, CONV, cutoff_len=20)
    assert cut["input_ids"] == full["input_ids"][:20] and cut["labels"] == full["labels"][:20]
    with pytest.raises(DataError, match=r"every label is cut off by cutoff_len=8 .*raise cutoff_len"):
        encode_dataset(tokenizer, [CONV, CONV], cutoff_len=8)
    first_label = next(i for i, lab in enumerate(full["labels"]) if lab != IGNORE_INDEX)
    short = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
    kept = encode_dataset(tokenizer, [CONV, short], cutoff_len=first_label)
    assert [e["row"] for e in kept] == [[1]]  # the long row has no label left; the short one is kept


def test_template_without_chat_template_is_refused():
    tokenizer = build_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(DataError, match="no chat template"):
        encode_conversation(tokenizer, CONV)


def test_collator_pads_labels_and_mask():
    batch = CausalLMCollator(pad_token_id=0)(
        [{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]}, {"input_ids": [8], "labels": [8]}]
    )
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, 6, 7], [8, -100, -100]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


@pytest.mark.parametrize("kind", ["llama", "qwen2"])
def test_packed_logits_equal_unpacked_logits(kind):
    tokenizer = build_tokenizer()
    convs = [CONV, CONV[:2], [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "fine thanks"}]]
    examples = [encode_conversation(tokenizer, c) for c in convs]
    model = build_model(kind, vocab_size=len(tokenizer)).eval()
    rows = pack_examples(examples, max_length=sum(len(e["input_ids"]) for e in examples) + 3)
    assert len(rows) == 1
    batch = CausalLMCollator(tokenizer.pad_token_id, pad_to_multiple_of=8)(rows)
    assert "attention_mask" not in batch
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits[0]
        offset = 0
        for example in examples:
            n = len(example["input_ids"])
            alone = model(input_ids=torch.tensor([example["input_ids"]]), use_cache=False).logits[0]
            torch.testing.assert_close(packed[offset : offset + n], alone, rtol=1e-5, atol=1e-5)
            assert batch["labels"][0, offset] == IGNORE_INDEX  # nothing predicts a sample's first token
            offset += n
    assert (batch["labels"][0, offset:] == IGNORE_INDEX).all()


def test_packing_splits_rows_at_max_length_and_rejects_long_examples():
    examples = [{"input_ids": [1] * 4, "labels": [1] * 4}, {"input_ids": [2] * 3, "labels": [2] * 3}]
    rows = pack_examples(examples + examples, max_length=7)
    assert [len(r["input_ids"]) for r in rows] == [7, 7]
    assert rows[0]["position_ids"] == [0, 1, 2, 3, 0, 1, 2]
    assert rows[0]["labels"] == [-100, 1, 1, 1, -100, 2, 2]
    with pytest.raises(ValueError, match="more than the packing length 3"):
        pack_examples(examples, max_length=3)
