"""`eaft eval` end to end on the tiny model: the run directory, and caching (a re-run never loads the model)."""

from __future__ import annotations

import json

import pytest

import eaft.evaluate.lm as lm_module
from eaft.evaluate.runner import main

from .conftest import fixture_rows, write_jsonl


@pytest.fixture
def suite_file(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    write_jsonl(data / "arc.jsonl", fixture_rows("arc/arc_easy_test.jsonl", 4))
    write_jsonl(data / "gsm.jsonl", fixture_rows("gsm8k/test.jsonl", 2))
    path = tmp_path / "suite.yaml"
    path.write_text(f"""
name: tiny
data_root: {data}
target:
  - {{name: gsm8k, type: generative, path: gsm.jsonl, answer: final, max_new_tokens: 4}}
general:
  - {{name: arc, type: multiple_choice, path: arc.jsonl}}
extra:
  - {{name: retention, type: self_consistency, max_new_tokens: 4, limit: 2}}
""")
    return path


@pytest.fixture
def load_counter(monkeypatch):
    calls = []
    real = lm_module.load_model_and_tokenizer

    def counting(*args, **kwargs):
        calls.append(args)
        return real(*args, **kwargs)

    monkeypatch.setattr(lm_module, "load_model_and_tokenizer", counting)
    return calls


def run(tiny_model_dir, suite_file, out, *extra) -> dict:
    assert main(["--model", str(tiny_model_dir), "--suite", str(suite_file), "--out", str(out), *extra]) == 0
    return json.loads((out / "results.json").read_text())


def test_run_directory_and_cache(tmp_path, tiny_model_dir, suite_file, load_counter):
    first = run(tiny_model_dir, suite_file, tmp_path / "run1")
    assert len(load_counter) == 1
    assert list(first["tasks"]) == ["gsm8k", "arc", "retention"]
    assert [t["group"] for t in first["tasks"].values()] == ["target", "general", "extra"]
    assert first["tasks"]["arc"]["n"] == 4 and first["tasks"]["arc"]["metric"] == "acc_per_char"
    assert first["identity"]["model_sha256"] and not any(t.get("cached") for t in first["tasks"].values())
    for name in first["tasks"]:
        assert (tmp_path / "run1" / "samples" / f"{name}.jsonl").is_file()
    assert "| run |" in (tmp_path / "run1" / "results.md").read_text()

    second = run(tiny_model_dir, suite_file, tmp_path / "run2")
    assert len(load_counter) == 1, "a fully cached run must not load the model"
    assert all(t["cached"] for t in second["tasks"].values())
    assert {k: t["score"] for k, t in second["tasks"].items()} == {k: t["score"] for k, t in first["tasks"].items()}

    # new data or new settings miss the cache for the affected task only
    write_jsonl(tmp_path / "data" / "arc.jsonl", fixture_rows("arc/arc_easy_test.jsonl", 3))
    third = run(tiny_model_dir, suite_file, tmp_path / "run3")
    assert len(load_counter) == 2
    assert [t.get("cached", False) for t in third["tasks"].values()] == [True, False, True]
    assert third["tasks"]["arc"]["n"] == 3
    fourth = run(tiny_model_dir, suite_file, tmp_path / "run4", "--limit", "1")
    assert all(t["n"] == 1 and not t.get("cached") for t in fourth["tasks"].values())


def test_no_cache_recomputes(tmp_path, tiny_model_dir, suite_file, load_counter):
    run(tiny_model_dir, suite_file, tmp_path / "a", "--limit", "1")
    again = run(tiny_model_dir, suite_file, tmp_path / "b", "--limit", "1", "--no-cache")
    assert len(load_counter) == 2 and not any(t.get("cached") for t in again["tasks"].values())


def test_bad_suite_is_a_clean_error(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("general:\n  - {name: a, type: multiple_choice, path: nowhere.jsonl, scorring: raw}\n")
    assert main(["--suite", str(bad)]) == 2
    assert "did you mean 'scoring'" in capsys.readouterr().err
