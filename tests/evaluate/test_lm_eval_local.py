"""Local lm-eval tasks through `--backend lm-eval`, offline: the suite's three forms of `lm_eval:` (a name on the
include path, a YAML path, an inline config), the cache key over a task's YAML and data, an end-to-end run on the
tiny model with no network, and parity with the native backend on the same items."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from eaft.evaluate.cache import ResultCache
from eaft.evaluate.lm import ModelHandle
from eaft.evaluate.lm_eval_local import include_folders, task_name
from eaft.evaluate.runner import main, run_suite
from eaft.evaluate.suite import load_suite
from eaft.evaluate.tasks import TaskError

from .conftest import fixture_rows, write_jsonl

TASK_BODY = """dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
  - metric: acc_norm
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def inline_config(name: str, data: Path) -> dict:
    return {
        "task": name,
        "dataset_path": "json",
        "dataset_kwargs": {"data_files": {"test": str(data)}},
        "test_split": "test",
        "output_type": "multiple_choice",
        "doc_to_text": "Question: {{question}}\nAnswer:",
        "doc_to_choice": "{{choices}}",
        "doc_to_target": "answer",
        "metric_list": [{"metric": "acc"}, {"metric": "acc_norm"}],
    }


@pytest.fixture
def local_tasks(tmp_path) -> dict[str, Path]:
    """The fixture's ARC rows, a task folder with `local_mc` (by name) and `path_mc` (given by path)."""
    (tmp_path / "data").mkdir()
    data = write_jsonl(tmp_path / "data" / "rows.jsonl", fixture_rows("arc/arc_easy_test.jsonl", 4))
    folder = tmp_path / "lm_eval_tasks"
    write(folder / "local_mc.yaml", "task: local_mc\n" + TASK_BODY.format(data=data))
    write(tmp_path / "other" / "path_mc.yaml", "task: path_mc\n" + TASK_BODY.format(data=data))
    return {"data": data, "folder": folder, "yaml": tmp_path / "other" / "path_mc.yaml"}


def suite_text(local_tasks, *, include: bool = True) -> str:
    entries = [
        {"name": "by_name", "lm_eval": "local_mc", "lm_eval_metric": "acc,none"},
        {"lm_eval": "other/path_mc.yaml", "lm_eval_metric": "acc_norm,none"},
        {"name": "inline", "lm_eval": inline_config("inline_mc", local_tasks["data"]), "lm_eval_metric": "acc,none"},
    ]
    head = "lm_eval_include: lm_eval_tasks\n" if include else ""
    return head + "general:\n" + "".join(f"  - {json.dumps(e)}\n" for e in entries)


def test_suite_forms_of_lm_eval(tmp_path, local_tasks, monkeypatch):
    suite = load_suite(write(tmp_path / "suite.yaml", suite_text(local_tasks)))
    by_name, by_path, inline = suite.tasks
    assert [t.name for t in suite.tasks] == ["by_name", "path_mc", "inline"]
    assert by_path.lm_eval == str(local_tasks["yaml"].resolve())  # relative to the suite's folder
    assert [task_name(t.lm_eval) for t in suite.tasks] == ["local_mc", "path_mc", "inline_mc"]
    assert suite.lm_eval_include == (local_tasks["folder"],)
    monkeypatch.setenv("EAFT_LM_EVAL_INCLUDE", str(tmp_path / "other"))
    flag = tmp_path / "data"
    assert include_folders([flag], suite.lm_eval_include) == (flag, local_tasks["folder"], tmp_path / "other")
    with pytest.raises(TaskError, match="include path .*nowhere is not a folder"):
        include_folders([tmp_path / "nowhere"])
    for bad, message in [
        ("{lm_eval: {dataset_path: json}}", "needs a `task`"),
        ("{lm_eval: 3}", "must be a task name, a task YAML path or a task config"),
    ]:
        with pytest.raises(TaskError, match=message):
            load_suite(write(tmp_path / "bad.yaml", f"general:\n  - {bad}\n"))
    with pytest.raises(TaskError, match="lm_eval_include must be a folder or a list"):
        load_suite(write(tmp_path / "bad.yaml", "lm_eval_include: 3\ngeneral:\n  - {lm_eval: x}\n"))


def test_cache_key_covers_the_task_yaml_and_its_data(tmp_path, local_tasks, monkeypatch):
    suite = load_suite(write(tmp_path / "suite.yaml", suite_text(local_tasks)))
    include = suite.lm_eval_include
    cache = ResultCache(tmp_path / "cache")

    def keys() -> list[str]:
        return [cache.task_key({"m": 1}, t, "lm-eval", lm_eval_include=include) for t in suite.tasks]

    first = keys()
    assert len(set(first)) == 3 and keys() == first  # stable while nothing changes
    yaml_file = local_tasks["folder"] / "local_mc.yaml"
    yaml_file.write_text(yaml_file.read_text().replace("Answer:", "A:"))
    changed = keys()
    assert changed[0] != first[0] and changed[1:] == first[1:]  # only the task whose YAML changed
    with local_tasks["data"].open("a") as handle:
        handle.write(json.dumps({"id": 9, "question": "q", "choices": ["a", "b"], "answer": 0}) + "\n")
    assert all(a != b for a, b in zip(keys(), changed, strict=True))  # all three read the data file
    # an included YAML and the module its !function names are part of the task
    write(tmp_path / "lm_eval_tasks" / "base.yaml", "doc_to_text: !function helpers.prompt\n")
    write(tmp_path / "lm_eval_tasks" / "helpers.py", "def prompt(doc):\n    return doc['question']\n")
    yaml_file.write_text(yaml_file.read_text() + "include: base.yaml\n")
    before = keys()[0]
    write(tmp_path / "lm_eval_tasks" / "helpers.py", "def prompt(doc):\n    return doc['question'] + '?'\n")
    assert keys()[0] != before
    # lm-eval's own tasks: keyed by name and lm-eval's version
    builtin = load_suite(write(tmp_path / "b.yaml", "general:\n  - {lm_eval: arc_easy}\n")).tasks[0]
    key = cache.task_key({"m": 1}, builtin, "lm-eval")
    monkeypatch.setattr("eaft.evaluate.lm_eval_backend.lm_eval_version", lambda: "9.9")
    assert cache.task_key({"m": 1}, builtin, "lm-eval") != key


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError(f"network access in an offline test: {args[1:] if len(args) > 1 else args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def test_local_tasks_run_offline(tmp_path, tiny_model_dir, local_tasks, no_network):
    pytest.importorskip("lm_eval")
    suite = write(tmp_path / "suite.yaml", suite_text(local_tasks, include=False))
    args = ["--model", str(tiny_model_dir), "--suite", str(suite), "--backend", "lm-eval"]
    args += ["--lm-eval-include", str(local_tasks["folder"]), "--out", str(tmp_path / "run")]
    assert main(args) == 0
    results = json.loads((tmp_path / "run" / "results.json").read_text())["tasks"]
    assert list(results) == ["by_name", "path_mc", "inline"]
    for name, metric, lm_eval_name in [("by_name", "acc", "local_mc"), ("path_mc", "acc_norm", "path_mc"),
                                       ("inline", "acc", "inline_mc")]:  # fmt: skip
        record = results[name]
        assert record["backend"] == "lm-eval" and record["type"] == f"lm-eval:{lm_eval_name}" and record["n"] == 4
        assert set(record["metrics"]) == {"acc,none", "acc_norm,none"}  # no sample_len, no stderr
        samples = [json.loads(line) for line in (tmp_path / "run" / "samples" / f"{name}.jsonl").open()]
        assert [s["doc_id"] for s in samples] == [0, 1, 2, 3] and all(len(s["filtered_resps"]) == 4 for s in samples)
        assert record["score"] == pytest.approx(100 * sum(s[metric] for s in samples) / 4)
        assert str(local_tasks["data"]) in record["data"]
    # a re-run is cached; a changed data file is not
    assert main([*args[:-1], str(tmp_path / "again")]) == 0
    again = json.loads((tmp_path / "again" / "results.json").read_text())["tasks"]
    assert all(r.get("cached") for r in again.values())
    with local_tasks["data"].open("a") as handle:
        handle.write(json.dumps({"id": 9, "question": "Is it?", "choices": ["yes", "no"], "answer": 0}) + "\n")
    assert main([*args[:-1], str(tmp_path / "edited")]) == 0
    edited = json.loads((tmp_path / "edited" / "results.json").read_text())["tasks"]
    assert not any(r.get("cached") for r in edited.values()) and edited["by_name"]["n"] == 5


def test_native_and_lm_eval_backends_agree(tmp_path, tiny_model_dir, no_network):
    """One local multiple-choice task through both backends: the same log-likelihoods (1e-4), per-item choices
    and accuracies, raw (lm-eval's acc) and per character (its acc_norm)."""
    pytest.importorskip("lm_eval")
    rows = fixture_rows("arc/arc_easy_test.jsonl", 7)
    data = write_jsonl(tmp_path / "rows.jsonl", rows)
    entry = {"name": "mc", "type": "multiple_choice", "path": str(data), "lm_eval": inline_config("mc_lm", data),
             "lm_eval_metric": "acc,none"}  # fmt: skip
    suite = load_suite(write(tmp_path / "suite.yaml", f"general:\n  - {json.dumps(entry)}\n"))
    handle = ModelHandle(str(tiny_model_dir))
    native = run_suite(suite, handle)["tasks"]["mc"]
    lm_eval = run_suite(suite, handle, backend="lm-eval")["tasks"]["mc"]
    assert native["backend"] == "native" and lm_eval["backend"] == "lm-eval"
    by_doc = sorted(lm_eval["samples"], key=lambda s: s["doc_id"])
    assert len(native["samples"]) == len(by_doc) == len(rows)
    for ours, theirs, row in zip(native["samples"], by_doc, rows, strict=True):
        logprobs = [float(r[0]) for r in theirs["filtered_resps"]]
        assert ours["logprobs"] == pytest.approx(logprobs, abs=1e-4)
        assert ours["pred"]["raw"] == max(range(len(logprobs)), key=logprobs.__getitem__)
        assert (ours["pred"]["raw"] == row["answer"]) == bool(theirs["acc"])
        assert (ours["pred"]["per_char"] == row["answer"]) == bool(theirs["acc_norm"])
    assert native["metrics"]["acc_raw"] == pytest.approx(lm_eval["metrics"]["acc,none"])
    assert native["metrics"]["acc_per_char"] == pytest.approx(lm_eval["metrics"]["acc_norm,none"])
