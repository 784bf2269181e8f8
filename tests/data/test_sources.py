"""Resolving `dataset`: shipped sets, LLaMA-Factory dataset_info entries (columns, sharegpt tags), held-out rows."""

from __future__ import annotations

import json

import pytest

from eaft.data import DataError
from eaft.data.sources import load_dataset_conversations, split_heldout
from eaft.data_root import DataRootError


def test_shipped_house_calc_set():
    convs = load_dataset_conversations("house_calc")
    assert len(convs) == 360
    assert all(c[-1]["content"].startswith("[calc] ") and "\n[result] " in c[-1]["content"] for c in convs)


def test_dataset_info_sharegpt_with_openai_tags_and_comma_list(tmp_path):
    rows = [{"msgs": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}], "sys": "S"}]
    (tmp_path / "chat.json").write_text(json.dumps(rows))
    alpaca = [{"instruction": "q", "output": "a"}]
    (tmp_path / "plain.json").write_text(json.dumps(alpaca))
    info = {
        "chat": {
            "file_name": "chat.json",
            "formatting": "sharegpt",
            "columns": {"messages": "msgs", "system": "sys"},
            "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"},
        },
        "plain": {"file_name": "plain.json"},
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    convs = load_dataset_conversations("chat, plain", dataset_dir=str(tmp_path))
    assert convs[0] == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "hello"},
    ]
    assert convs[1][-1] == {"role": "assistant", "content": "a"}


def test_dataset_info_errors_name_the_entry(tmp_path):
    info = {
        "hub": {"hf_hub_url": "someone/x"},
        "gone": {"file_name": "missing.json"},
        "odd": {"file_name": "x", "ranking": True},
    }
    (tmp_path / "dataset_info.json").write_text(json.dumps(info))
    with pytest.raises(DataError, match=r"\[hub\]: only local datasets"):
        load_dataset_conversations("hub", dataset_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"\[gone\]: file_name 'missing.json': no such file"):
        load_dataset_conversations("gone", dataset_dir=str(tmp_path))
    with pytest.raises(DataError, match=r"\[odd\]: unsupported dataset_info keys \['ranking'\]"):
        load_dataset_conversations("odd", dataset_dir=str(tmp_path))


def test_dataset_info_file_name_under_the_data_root(tmp_path, monkeypatch):
    import eaft.data_root

    (tmp_path / "bench" / "gsm8k").mkdir(parents=True)
    (tmp_path / "bench" / "gsm8k" / "train.jsonl").write_text('{"question": "1+1?", "answer": "#### 2"}\n')
    columns = {"prompt": "question", "response": "answer"}
    info = {"gsm": {"file_name": "$EAFT_DATA/gsm8k/train.jsonl", "columns": columns}}
    (tmp_path / "info").mkdir()
    (tmp_path / "info" / "dataset_info.json").write_text(json.dumps(info))
    monkeypatch.setenv("EAFT_DATA", str(tmp_path / "bench"))
    (conv,) = load_dataset_conversations("gsm", dataset_dir=str(tmp_path / "info"))
    assert conv[-1] == {"role": "assistant", "content": "#### 2"}
    monkeypatch.delenv("EAFT_DATA")
    monkeypatch.setattr(eaft.data_root, "_defaults", lambda: [tmp_path / "nowhere"])
    with pytest.raises(DataRootError, match=r"dataset_info.json\[gsm\]: no data root: set EAFT_DATA=DIR or pass"):
        load_dataset_conversations("gsm", dataset_dir=str(tmp_path / "info"))


def test_split_heldout_counts_and_fractions():
    rows = [[{"role": "assistant", "content": str(i)}] for i in range(10)]
    train, held = split_heldout(rows, 3)
    assert len(train) == 7 and held[0][0]["content"] == "7"
    assert [len(x) for x in split_heldout(rows, 0.2)] == [8, 2]
    assert split_heldout(rows, 0) == (rows, [])
    with pytest.raises(DataError, match="leaving none to train"):
        split_heldout(rows, 10)
