"""Loading: every row format and file type normalizes to messages; bad input names file:line and the field."""

from __future__ import annotations

import json

import pytest

from eaft.data import DataError, load_conversations


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return str(path)


def test_alpaca_with_input_system_and_history(tmp_path):
    row = {"instruction": "Add", "input": "2 and 3", "output": "5", "system": "Be brief.", "history": [["hi", "hey"]]}
    (conv,) = load_conversations(write_jsonl(tmp_path / "a.jsonl", [row]))
    assert conv == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hey"},
        {"role": "user", "content": "Add\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]


def test_sharegpt_roles_are_mapped(tmp_path):
    turns = [
        {"from": "system", "value": "S"},
        {"from": "human", "value": "call it"},
        {"from": "function_call", "value": '{"name": "f"}'},
        {"from": "observation", "value": "42"},
        {"from": "gpt", "value": "It is 42."},
    ]
    (conv,) = load_conversations(write_jsonl(tmp_path / "s.jsonl", [{"conversations": turns}]))
    assert [m["role"] for m in conv] == ["system", "user", "assistant", "tool", "assistant"]
    assert conv[-1]["content"] == "It is 42."


def test_messages_keep_tool_calls(tmp_path):
    call = {"type": "function", "function": {"name": "add", "arguments": '{"a": 1}'}}
    msgs = [
        {"role": "user", "content": "add"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "content": "1", "tool_call_id": "c1"},
        {"role": "assistant", "content": "one"},
    ]
    (conv,) = load_conversations(write_jsonl(tmp_path / "m.jsonl", [{"messages": msgs}]))
    assert conv[1] == {"role": "assistant", "content": "", "tool_calls": [call]}
    assert conv[2]["tool_call_id"] == "c1"


def test_prompt_completion_strings_and_lists(tmp_path):
    rows = [
        {"prompt": "2+2?", "completion": "4"},
        {"prompt": [{"role": "user", "content": "3+3?"}], "completion": [{"role": "assistant", "content": "6"}]},
    ]
    convs = load_conversations(write_jsonl(tmp_path / "p.jsonl", rows))
    assert convs[0] == [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}]
    assert convs[1][1]["content"] == "6"


def test_json_list_parquet_folder_and_max_samples(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(5)]
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a.json").write_text(json.dumps(rows[:3]), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows[3:]), tmp_path / "d" / "b.parquet")
    assert len(load_conversations(str(tmp_path / "d" / "b.parquet"))) == 2
    convs = load_conversations(str(tmp_path / "d"))
    assert [c[-1]["content"] for c in convs] == ["a0", "a1", "a2", "a3", "a4"]
    assert len(load_conversations(str(tmp_path / "d"), max_samples=2)) == 2


def test_malformed_line_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "q", "output": "a"}\n{"instruction": "q", "output": \n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl:2: malformed JSON"):
        load_conversations(str(path))


def test_a_control_character_is_named_without_a_doubled_word(tmp_path):
    path = tmp_path / "ctl.jsonl"
    path.write_text('{"instruction": "a\tb", "output": "a"}\n', encoding="utf-8")  # a raw tab inside a string
    with pytest.raises(DataError) as caught:
        load_conversations(str(path))
    assert str(caught.value).endswith("ctl.jsonl:1: malformed JSON (Invalid control character at column 19)")


def test_rows_of_json_and_parquet_files_are_counted_from_one(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"instruction": "q", "output": "a"}, {"instruction": "q"}]
    (tmp_path / "a.json").write_text(json.dumps(rows), encoding="utf-8")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    for name in ("a.json", "a.parquet"):  # the second row, as a JSON lines file's is line 2
        with pytest.raises(DataError, match=rf"{name}\[row 2\]: missing field 'output'"):
            load_conversations(str(tmp_path / name))


def test_a_repeated_key_is_said_once_with_its_line(tmp_path, caplog):
    path = tmp_path / "dup.jsonl"
    lines = ['{"instruction": "q", "output": "a"}', '{"instruction": "q", "output": "a", "output": "b"}']
    path.write_text("\n".join([*lines, lines[1]]) + "\n", encoding="utf-8")
    with caplog.at_level("WARNING", logger="eaft"):
        convs = load_conversations(str(path))
    assert convs[1][-1]["content"] == "b"  # JSON's rule: the last value
    said = [r.getMessage() for r in caplog.records if "appears twice" in r.getMessage()]
    assert said == [
        f"warning: {path}:2: the key 'output' appears twice in one object; JSON keeps the last value "
        "(reported once per file)"
    ]


def test_missing_field_names_field_and_format(tmp_path):
    path = write_jsonl(tmp_path / "a.jsonl", [{"instruction": "q", "output": "a"}, {"instruction": "q"}])
    with pytest.raises(DataError, match=r"a\.jsonl:2: missing field 'output' \(format alpaca expects instruction"):
        load_conversations(path)
    with pytest.raises(DataError, match=r"missing field 'messages' \(format messages"):
        load_conversations(path, format="messages")


def test_row_without_assistant_turn_names_its_line(tmp_path):
    rows = [{"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}]
    rows.append({"messages": [{"role": "user", "content": "only a question"}]})
    with pytest.raises(DataError, match=r"m\.jsonl:2: the conversation has no assistant turn"):
        load_conversations(write_jsonl(tmp_path / "m.jsonl", rows))


def test_unknown_role_and_undetectable_format(tmp_path):
    bad_role = [{"conversations": [{"from": "robot", "value": "x"}]}]
    with pytest.raises(DataError, match=r"s\.jsonl:1: conversations\[0\] has unknown role from='robot'"):
        load_conversations(write_jsonl(tmp_path / "s.jsonl", bad_role))
    with pytest.raises(DataError, match=r"u\.jsonl:1: cannot tell the format.*alpaca: instruction"):
        load_conversations(write_jsonl(tmp_path / "u.jsonl", [{"question": "q", "answer": "a"}]))


def test_empty_dataset_missing_file_and_bad_options(tmp_path):
    (tmp_path / "e.jsonl").write_text("\n", encoding="utf-8")
    with pytest.raises(DataError, match="empty"):
        load_conversations(str(tmp_path / "e.jsonl"))
    with pytest.raises(DataError, match="no such file"):
        load_conversations(str(tmp_path / "nope.jsonl"))
    with pytest.raises(DataError, match="unknown data format 'csv'"):
        load_conversations(str(tmp_path / "e.jsonl"), format="csv")


def test_hub_id_without_datasets_package_is_a_clear_error(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` raise ImportError
    with pytest.raises(DataError, match="needs the package `datasets`"):
        load_conversations("someone/some-dataset")


def test_real_alpaca_file_loads(real_data_root):
    files = sorted((real_data_root / "alpaca").glob("*.jsonl"))
    assert files, f"no alpaca/*.jsonl under {real_data_root}"
    convs = load_conversations(str(files[0]), max_samples=50)
    assert len(convs) == 50 and all(c[-1]["role"] == "assistant" for c in convs)
