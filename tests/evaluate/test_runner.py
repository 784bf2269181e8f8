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


def test_a_diverged_model_is_refused_not_scored(tmp_path, capsys):
    """Weights of 1e30 (what one step at learning_rate=1e30 leaves) give NaN log-likelihoods; a NaN never wins an
    argmax, so without a check every item picks its first choice and the task scores as if answered."""
    import torch

    from .conftest import build_model, build_tokenizer

    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer))
    with torch.no_grad():
        for proj in (model.model.layers[0].self_attn.q_proj, model.model.layers[0].self_attn.k_proj):
            proj.weight.fill_(1e30)  # attention scores overflow: inf - inf in the softmax
    model.save_pretrained(tmp_path / "diverged")
    tokenizer.save_pretrained(tmp_path / "diverged")
    rows = [{"question": f"q{i}", "choices": ["a", "b"], "answer": 1} for i in range(4)]
    write_jsonl(tmp_path / "mc.jsonl", rows)
    (tmp_path / "suite.yaml").write_text("name: s\ngeneral:\n  - {name: mc, type: multiple_choice, path: mc.jsonl}\n")
    args = [
        "--model",
        str(tmp_path / "diverged"),
        "--suite",
        str(tmp_path / "suite.yaml"),
        "--out",
        str(tmp_path / "o"),
    ]
    from eaft import cli

    assert cli.main(["eval", *args]) == 1
    err = capsys.readouterr().err
    assert (
        f"task 'mc': the model's log-likelihoods are NaN or infinite on 4 of 4 items (first: {tmp_path}/mc.jsonl:1)"
        in err
    )
    assert "evaluate an earlier checkpoint" in err and not (tmp_path / "o").exists()


def test_an_evaluation_folder_is_replaced_whole_and_owned_by_one_eval(tmp_path, tiny_model_dir, suite_file):
    from tests.test_ownership import holder

    out = tmp_path / "run"
    run(tiny_model_dir, suite_file, out)
    assert (out / "samples" / "retention.jsonl").is_file()
    suite_file.write_text(suite_file.read_text().split("extra:")[0])  # the suite drops its extra task
    run(tiny_model_dir, suite_file, out)
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["arc.jsonl", "gsm8k.jsonl"]  # no stale samples
    other = holder(out)  # another process owns the folder, as a second `eaft eval --out` into it would meet
    try:
        with pytest.raises(Exception, match=rf"{out} is in use by a test holder \(pid {other.pid} on "):
            main(["--model", str(tiny_model_dir), "--suite", str(suite_file), "--out", str(out)])
    finally:
        other.kill()
        other.wait()
    assert sorted(p.name for p in (out / "samples").iterdir()) == ["arc.jsonl", "gsm8k.jsonl"]


def test_a_result_recorded_before_an_option_existed_is_not_stale(tmp_path):
    # results.json of an older eaft lacks options added since; left unset they change nothing, so an experiment
    # resumed under a newer eaft must not score (and, in process, retrain) every finished point again
    from eaft.evaluate.runner import data_files, file_sha256, results_are_stale
    from eaft.evaluate.suite import load_suite
    from tests.train.tiny import write_tiny_suite

    suite = load_suite(write_tiny_suite(tmp_path))
    path = tmp_path / "results.json"

    def record(edit):
        tasks = {}
        for task in suite.tasks:
            settings = json.loads(json.dumps(task.settings()))
            edit(settings["options"])
            files = {str(i): file_sha256(p) for i, p in enumerate(data_files(task))}
            tasks[task.name] = {"backend": "native", "settings": settings, "data": files}
        path.write_text(json.dumps({"tasks": tasks}), encoding="utf-8")
        return results_are_stale(path, suite)

    assert "preprocess" in suite.tasks[0].settings()["options"]  # an option that older records lack
    assert record(lambda options: None) is False
    assert record(lambda options: options.pop("preprocess")) is False  # recorded before the option existed
    assert record(lambda options: options.update(preprocess="hellaswag")) is True  # recorded with it set
    assert record(lambda options: options.update(scoring="per_token")) is True  # a real change still counts
    assert record(lambda options: options.pop("scoring")) is True  # ... and so does a set option gone missing
