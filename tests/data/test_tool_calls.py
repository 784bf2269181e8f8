"""Tool-use conversations (OpenAI messages: assistant `tool_calls`, `tool` results) train on the assistant's
content and calls, never on tool results: checked token by token for a template that cannot render tool calls
(they are written into the content as JSON lines) and one that renders them itself, then through `eaft train`."""

from __future__ import annotations

import json

import pytest

from eaft.data import encode_conversation, encode_prompt, load_conversations
from eaft.evaluate.call_parsing import Call, parse_calls
from tests.data.test_encode import labelled_runs
from tests.train.tiny import CHATML, build_tokenizer

ADD = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": {"a": 2, "b": 3}}}
NOTE = {"id": "c2", "type": "function", "function": {"name": "note.save", "arguments": {"text": "five"}}}
CONV = [
    {"role": "user", "content": "what is two plus three?"},
    {"role": "assistant", "content": "", "tool_calls": [ADD, NOTE]},
    {"role": "tool", "tool_call_id": "c1", "content": "5"},
    {"role": "tool", "tool_call_id": "c2", "content": "saved: the quick brown fox"},
    {"role": "assistant", "content": "the answer is five."},
]
# Qwen-style: calls rendered by the template inside the assistant turn, results shown in a user turn.
TOOLS_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' + m['content'] }}"
    "{% for tc in m.get('tool_calls') or [] %}"
    "{{ '<tool_call>' + ({'name': tc['function']['name'], 'arguments': tc['function']['arguments']} | tojson) }}"
    "{{ '</tool_call>' }}{% endfor %}{{ '<|im_end|>\n' }}"
    "{% elif m['role'] == 'tool' %}"
    "{{ '<|im_start|>user\n<tool_response>' + m['content'] + '</tool_response><|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def call_json(call: dict) -> str:
    return json.dumps(call["function"], ensure_ascii=False)


@pytest.mark.parametrize(
    ("template", "call_text"),
    [
        (CHATML, "\n".join(call_json(c) for c in (ADD, NOTE))),  # no tools support: JSON lines in the content
        (TOOLS_TEMPLATE, "".join(f"<tool_call>{call_json(c)}</tool_call>" for c in (ADD, NOTE))),
    ],
    ids=["chatml_json_lines", "template_renders_calls"],
)
def test_loss_covers_the_calls_and_the_answer_never_the_tool_results(template, call_text):
    tokenizer = build_tokenizer(template)
    example = encode_conversation(tokenizer, CONV)
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    expected = [call_text, "the answer is five."]
    runs = labelled_runs(example)
    # token by token: each labelled run is exactly the assistant turn's tokens, then its end-of-turn marker
    assert runs == [tokenizer(text, add_special_tokens=False)["input_ids"] + [end] for text in expected]
    masked = tokenizer.decode([t for t, y in zip(example["input_ids"], example["labels"], strict=True) if y == -100])
    assert "5" in masked and "saved: the quick brown fox" in masked and "what is two plus three?" in masked
    for run in runs:
        assert "saved:" not in tokenizer.decode(run)
    # what the model learns to write is read back by the function_call task's parser
    assert parse_calls(tokenizer.decode(runs[0][:-1])).calls == [
        Call("add", {"a": 2, "b": 3}),
        Call("note.save", {"text": "five"}),
    ]


def test_prompt_for_the_final_answer_holds_the_tool_results():
    tokenizer = build_tokenizer(CHATML)
    prompt = tokenizer.decode(encode_prompt(tokenizer, CONV))
    assert prompt.endswith("<|im_start|>tool\nsaved: the quick brown fox<|im_end|>\n<|im_start|>assistant\n")


def test_openai_file_with_string_arguments_loads_and_trains_the_call(tmp_path):
    """OpenAI API rows carry `arguments` as a JSON string and `content: null`; the call is trained as written."""
    call = {"id": "c1", "type": "function", "function": {"name": "add", "arguments": '{"a": 2, "b": 3}'}}
    row = {"messages": [CONV[0], {"role": "assistant", "content": None, "tool_calls": [call]}, CONV[2], CONV[4]]}
    path = tmp_path / "tools.jsonl"
    path.write_text(json.dumps(row) + "\n", encoding="utf-8")
    (conversation,) = load_conversations(str(path))
    assert [m["role"] for m in conversation] == ["user", "assistant", "tool", "assistant"]
    tokenizer = build_tokenizer(CHATML)
    first, _ = labelled_runs(encode_conversation(tokenizer, conversation))
    text = tokenizer.decode(first[:-1])
    assert text == json.dumps(call["function"])
    assert parse_calls(text).calls == [Call("add", {"a": 2, "b": 3})]  # string arguments are decoded when scored


def test_tool_use_data_trains_through_eaft_train(tmp_path):
    from eaft.train.cli import parse_args
    from eaft.train.outputs import read_metrics
    from eaft.train.run import run_training
    from tests.train.tiny import save_tiny

    rows = []
    for i in range(24):
        add = {"id": "c", "type": "function", "function": {"name": "add", "arguments": {"a": i, "b": i}}}
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"what is {i} plus {i}?"},
                    {"role": "assistant", "content": "", "tool_calls": [add]},
                    {"role": "tool", "tool_call_id": "c", "content": str(2 * i)},
                    {"role": "assistant", "content": f"Answer: {2 * i}. Result => ok"},
                ]
            }
        )
    data = tmp_path / "tools.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    model = save_tiny(tmp_path / "tiny")
    argv = [f"model={model}", f"dataset={data}", f"output_dir={tmp_path / 'run'}", "val_size=4", "max_steps=4"]
    argv += ["logging_steps=2", "save_steps=100", "per_device_train_batch_size=4", "learning_rate=0.01"]
    run_dir = run_training(parse_args(argv))
    ces = [row["ce"] for row in read_metrics(run_dir) if "ce" in row and "loss" in row]
    assert len(ces) == 2 and ces[-1] < ces[0]
