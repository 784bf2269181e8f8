"""LLaMA-Factory 0.9.5's data rules (compat: llamafactory) on rows of known lengths: the cutoff split between prompt
and response, the template's tokens and labels, the seeded validation split, and packing with and without
cross-attention. The expected values are worked out from the rules, so no LLaMA-Factory is needed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eaft.data import IGNORE_INDEX, CausalLMCollator, DataError, encode_conversation
from eaft.data.lf_templates import TEMPLATES, resolve_template, template_from_tokenizer
from eaft.data.llamafactory import (
    encode_llamafactory,
    encode_pairs,
    infer_seqlen,
    llamafactory_examples,
    pack_llamafactory,
    split_llamafactory,
    truncate_pairs,
)
from tests.train.tiny import build_model, build_tokenizer

CONV = [
    {"role": "user", "content": "what is two plus three?"},
    {"role": "assistant", "content": "the answer is five."},
]


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


@pytest.mark.parametrize(
    ("source", "target", "budget", "expected"),
    [
        (500, 40, 100, (60, 40)),  # a target under half the budget is kept whole; the source gets the rest
        (30, 200, 100, (30, 70)),  # else a source under half is kept whole; the target gets the rest
        (80, 120, 100, (40, 60)),  # else both in proportion: int(100 * 120 / 200) = 60 for the target
        (90, 60, 101, (61, 40)),  # the target's share is rounded down: int(101 * 60 / 150) = 40
        (10, 20, 100, (10, 20)),  # a pair within the budget is untouched
        (5000, 200, 256, (247, 9)),  # a long prompt squeezes the answer: int(256 * 200 / 5200) = 9
    ],
)
def test_infer_seqlen_splits_the_budget_between_source_and_target(source, target, budget, expected):
    assert infer_seqlen(source, target, budget) == expected


def test_truncation_keeps_pairs_in_order_while_budget_is_left():
    pairs = [([1] * 6, [2] * 4), ([3] * 30, [4] * 50), ([5] * 3, [6] * 3)]
    example = truncate_pairs(pairs, cutoff_len=40)
    # pair 1: 10 tokens; pair 2 gets 30: target 50 >= 15 and source 30 >= 15, so int(30 * 50 / 80) = 18 target
    assert example["input_ids"] == [1] * 6 + [2] * 4 + [3] * 12 + [4] * 18
    assert example["labels"] == [IGNORE_INDEX] * 6 + [2] * 4 + [IGNORE_INDEX] * 12 + [4] * 18
    # eaft's own rule would have kept the first 40 tokens: 30 of the second source and none of its target
    assert truncate_pairs(pairs, cutoff_len=10)["input_ids"] == [1] * 6 + [2] * 4  # the third pair never starts


def test_smollm2_template_tokens_are_its_slots_tokenized_one_by_one():
    tokenizer = build_tokenizer()
    template = TEMPLATES["smollm2"]
    [example] = encode_llamafactory(tokenizer, template, [CONV], cutoff_len=1024)
    system = ids(tokenizer, f"<|im_start|>system\n{template.default_system}<|im_end|>\n")
    user = ids(tokenizer, "<|im_start|>user\nwhat is two plus three?<|im_end|>\n<|im_start|>assistant\n")
    answer = ids(tokenizer, "the answer is five.<|im_end|>\n")
    assert template.default_system.endswith("Hugging Face.")  # LLaMA-Factory's, with the full stop
    assert example["input_ids"] == system + user + answer
    assert example["labels"] == [IGNORE_INDEX] * (len(system) + len(user)) + answer
    assert tokenizer.decode(answer[-2:]) == "<|im_end|>\n"  # the newline after the marker is a label
    native = encode_conversation(tokenizer, CONV)  # eaft's own rule stops the labels at the marker
    assert tokenizer.decode([t for t in native["labels"] if t != IGNORE_INDEX]).endswith("<|im_end|>")


def test_a_row_system_prompt_replaces_the_default_and_default_system_overrides_it():
    tokenizer = build_tokenizer()
    template = TEMPLATES["qwen"]
    row = [{"role": "system", "content": "be brief"}, *CONV]
    [(source, _)] = encode_pairs(tokenizer, template, "be brief", [(CONV[0]["content"], CONV[1]["content"])])
    assert tokenizer.decode(source).startswith("<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user")
    [example] = encode_llamafactory(tokenizer, template, [row], cutoff_len=1024)
    assert example["input_ids"][: len(source)] == source
    [default] = encode_llamafactory(tokenizer, template, [CONV], cutoff_len=1024, default_system="hello world")
    assert tokenizer.decode(default["input_ids"]).startswith("<|im_start|>system\nhello world<|im_end|>")


def test_qwen3_trains_an_empty_thought_or_puts_it_in_the_prompt():
    tokenizer = build_tokenizer()
    thought = ids(tokenizer, "<think>\n\n</think>\n\n")
    answer = ids(tokenizer, "the answer is five.<|im_end|>\n")
    [thinking] = encode_llamafactory(tokenizer, TEMPLATES["qwen3"], [CONV], cutoff_len=1024)
    assert [t for t in thinking["labels"] if t != IGNORE_INDEX] == thought + answer
    [plain] = encode_llamafactory(tokenizer, TEMPLATES["qwen3"], [CONV], cutoff_len=1024, enable_thinking=False)
    assert [t for t in plain["labels"] if t != IGNORE_INDEX] == answer
    assert plain["input_ids"] == thinking["input_ids"]  # same tokens, the thought moved to the prompt side
    reasoned = [CONV[0], {"role": "assistant", "content": "<think>\nadd\n</think>\n\nthe answer is five."}]
    [kept] = encode_llamafactory(tokenizer, TEMPLATES["qwen3"], [reasoned], cutoff_len=1024)
    [removed] = encode_llamafactory(tokenizer, TEMPLATES["qwen3"], [reasoned], cutoff_len=1024, enable_thinking=False)
    assert "add" in tokenizer.decode(kept["input_ids"]) and "add" not in tokenizer.decode(removed["input_ids"])
    assert removed == plain


def test_without_a_template_the_tokenizers_own_is_read_as_slots():
    tokenizer = build_tokenizer()  # its chat template writes "You are a tiny test model." as the default system
    template = template_from_tokenizer(tokenizer)
    assert template.default_system == "You are a tiny test model."
    assert template.user == "<|im_start|>user\n{{content}}<|im_end|>\n<|im_start|>assistant\n"
    assert template.assistant == "{{content}}<|im_end|>\n"
    [example] = encode_llamafactory(tokenizer, resolve_template(None, tokenizer), [CONV], cutoff_len=1024)
    rendered = tokenizer.apply_chat_template(CONV, tokenize=False)
    assert tokenizer.decode(example["input_ids"]) == rendered


def test_turns_that_do_not_alternate_are_dropped_and_tool_turns_refused(caplog):
    tokenizer = build_tokenizer()
    broken = [CONV[0], CONV[0], CONV[1]]
    examples = encode_llamafactory(tokenizer, TEMPLATES["chatml"], [broken, CONV], cutoff_len=64)
    assert [e["row"] for e in examples] == [[1]]
    assert "1 of 2 rows are not user/assistant turns" in caplog.text
    tool = [*CONV, {"role": "tool", "content": "5"}, {"role": "assistant", "content": "ok"}]
    with pytest.raises(DataError, match=r"dataset\[row 0\]: tool turns are not reproduced"):
        encode_llamafactory(tokenizer, TEMPLATES["chatml"], [tool], cutoff_len=64)


LLAMA3_LIKE = (
    "{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + "
    "message['content'] + '<|eot_id|>' }}{% endfor %}"
)


def test_a_template_that_is_not_reproduced_or_does_not_fit_is_refused_naming_the_models_own():
    chatml = build_tokenizer()
    with pytest.raises(DataError, match=r"template='llama3' is not one eaft reproduces.*own chat template is ChatML"):
        resolve_template("llama3", chatml)
    llama3 = build_tokenizer()
    llama3.chat_template = LLAMA3_LIKE
    with pytest.raises(DataError, match=r"template='qwen' does not fit .*own chat template is Llama 3"):
        resolve_template("qwen", llama3)
    plain = _tokenizer_without_chatml_tokens()
    with pytest.raises(DataError, match=r"<\|im_start\|>, <\|im_end\|> is not one token.*no template eaft"):
        resolve_template("smollm2", plain)
    assert resolve_template("smollm2", chatml) is TEMPLATES["smollm2"]


def _tokenizer_without_chatml_tokens():
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<pad>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(["hello world"] * 5, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>")


@pytest.mark.parametrize(("val_size", "held"), [(0.25, 3), (0.2, 2), (3, 3), (0.0, 0)])
def test_validation_split_is_a_seeded_permutation(val_size, held):
    rows = [[{"role": "user", "content": str(i)}] for i in range(10)]
    train, heldout = split_llamafactory(rows, val_size, seed=42)
    assert len(heldout) == held  # ceil(0.25 * 10) = 3, ceil(0.2 * 10) = 2, a count > 1 as it is
    if held:
        order = list(np.random.default_rng(42).permutation(10))
        assert heldout == [rows[i] for i in order[:held]] and train == [rows[i] for i in order[held:]]
        assert train != rows[held:]  # not eaft's own rule (the last rows)
        assert split_llamafactory(rows, val_size, seed=7)[1] != heldout
    else:
        assert train == rows
    with pytest.raises(DataError, match="leaving none to train"):
        split_llamafactory(rows, 10, seed=42)


def test_packing_fills_rows_greedily_from_sorted_lengths_and_pads_to_cutoff_len():
    lengths = [5, 3, 8, 2, 6, 4]
    examples = [{"input_ids": [i + 1] * n, "labels": [i + 1] * n, "row": [i]} for i, n in enumerate(lengths)]
    rows = pack_llamafactory(examples, cutoff_len=11, pad_token_id=0, neat=False)
    # capacity 10: sorted 2 3 4 5 6 8 -> [8, 2], [6, 4], [5, 3]
    assert [r["row"] for r in rows] == [[2, 3], [4, 5], [0, 1]]
    assert rows[0]["input_ids"] == [3] * 8 + [4] * 2 + [0]
    assert rows[0]["position_ids"] == list(range(8)) + [0, 1] + [0]
    assert rows[2]["labels"] == [1] * 5 + [2] * 3 + [IGNORE_INDEX] * 3
    assert all(len(r["input_ids"]) == 11 and r["attention_mask"] == [1] * 11 for r in rows)
    neat = pack_llamafactory(examples, cutoff_len=11, pad_token_id=0, neat=True)
    assert all("attention_mask" not in r for r in neat)
    twins = [{"input_ids": [7] * 4, "labels": [7] * 4, "row": [i]} for i in range(2)]
    assert pack_llamafactory(twins, cutoff_len=5, pad_token_id=0, neat=True)[0]["row"] == [1]  # the last one first


def test_packing_attends_across_sequences_and_neat_packing_does_not():
    tokenizer = build_tokenizer()
    convs = [CONV, [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "fine thanks"}]]
    examples = encode_llamafactory(tokenizer, TEMPLATES["chatml"], convs, cutoff_len=63)
    model = build_model("llama", vocab_size=len(tokenizer)).eval()
    alone = [model(input_ids=torch.tensor([e["input_ids"]]), use_cache=False).logits[0] for e in examples]
    for neat in (True, False):
        rows = pack_llamafactory(examples, cutoff_len=64, pad_token_id=tokenizer.pad_token_id, neat=neat)
        assert len(rows) == 1
        batch = CausalLMCollator(tokenizer.pad_token_id, pad_to_multiple_of=8)(rows)
        assert ("attention_mask" in batch) is not neat
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        with torch.no_grad():
            packed = model(**inputs, use_cache=False).logits[0]
        order = rows[0]["row"]
        head, tail = alone[order[0]], alone[order[1]]
        cut = len(examples[order[0]]["input_ids"])
        torch.testing.assert_close(packed[:cut], head, rtol=1e-5, atol=1e-5)  # the first sequence sees itself only
        second = packed[cut : cut + len(tail)]
        assert torch.allclose(second, tail, rtol=1e-5, atol=1e-5) is neat  # packing lets it see the first


def test_llamafactory_examples_encode_to_cutoff_minus_one_when_packing():
    tokenizer = build_tokenizer()
    long = [{"role": "user", "content": "the quick brown fox " * 10}, {"role": "assistant", "content": "ok " * 20}]
    options = {"template": "chatml", "val_size": 0.0, "seed": 42, "cutoff_len": 32}
    [plain], _ = llamafactory_examples(tokenizer, [long], packing=False, **options)
    [packed], _ = llamafactory_examples(tokenizer, [long], packing=True, **options)
    assert (len(plain["input_ids"]), len(packed["input_ids"])) == (32, 31)
