"""The data root: EAFT_DATA / --data-root, the default beside the repository, the error that says what to set, and
suites and task files that name it only where they need it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import eaft.data_root as data_root
from eaft import experiment as exp
from eaft.data_root import DataRootError, expand_data_root, find_data_root
from eaft.evaluate.runner import main as eval_main
from eaft.evaluate.suite import load_suite

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def no_data_root(tmp_path, monkeypatch) -> Path:
    """Neither EAFT_DATA nor a default folder: what a clone with nothing beside it sees."""
    monkeypatch.setenv("EAFT_DATA", "")  # empty counts as unset; set, so that what a test sets is undone after it
    missing = tmp_path / "shared" / "data"
    monkeypatch.setattr(data_root, "_defaults", lambda: [missing])
    return missing


def test_eaft_data_wins_and_is_made_absolute(tmp_path, monkeypatch):
    (tmp_path / "bench").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EAFT_DATA", "bench")
    assert find_data_root() == tmp_path.resolve() / "bench"
    assert expand_data_root("$EAFT_DATA/arc/a.jsonl") == str(tmp_path.resolve() / "bench" / "arc" / "a.jsonl")
    assert expand_data_root("${EAFT_DATA}") == str(tmp_path.resolve() / "bench")
    assert expand_data_root("$EAFT_DATASET/x") == "$EAFT_DATASET/x"  # another variable
    assert expand_data_root("arc/a.jsonl") == "arc/a.jsonl"
    monkeypatch.setenv("EAFT_DATA", str(tmp_path / "gone"))
    with pytest.raises(DataRootError, match=r"EAFT_DATA=.*gone: no such folder"):
        find_data_root()


def test_default_is_the_shared_data_folder_beside_the_repository(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert data_root._defaults() == [REPO.parent / "shared" / "data", tmp_path.parent / "shared" / "data"]
    monkeypatch.delenv("EAFT_DATA", raising=False)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    monkeypatch.setattr(data_root, "_defaults", lambda: [tmp_path / "none", tmp_path / "shared" / "data"])
    assert find_data_root() == (tmp_path / "shared" / "data").resolve()


def test_missing_root_names_the_variable_and_the_flag(no_data_root):
    with pytest.raises(DataRootError) as err:
        find_data_root()
    message = str(err.value)
    assert "set EAFT_DATA=DIR or pass --data-root DIR" in message and str(no_data_root) in message


def test_a_suite_needs_the_root_only_for_the_paths_under_it(tmp_path, no_data_root):
    (tmp_path / "local.jsonl").write_text('{"question": "q", "choices": ["a", "b"], "answer": 0}\n')
    (tmp_path / "plain.yaml").write_text("general:\n  - {name: mc, type: multiple_choice, path: local.jsonl}\n")
    assert load_suite(tmp_path / "plain.yaml").tasks[0].path == tmp_path / "local.jsonl"
    # data_root: $EAFT_DATA, but no task path under it (the shipped retention check has none)
    (tmp_path / "retention.yaml").write_text(
        "data_root: $EAFT_DATA\nextra:\n  - task: " + str(REPO / "configs/suites/tasks/self_consistency.yaml") + "\n"
    )
    assert load_suite(tmp_path / "retention.yaml").tasks[0].path is None
    task_file = REPO / "configs" / "suites" / "tasks" / "arc_easy.yaml"
    with pytest.raises(DataRootError, match=rf"{task_file}: no data root: set EAFT_DATA=DIR or pass --data-root"):
        load_suite(REPO / "configs" / "suites" / "arc_easy.yaml")


def test_shipped_paths_and_explicit_paths_resolve_under_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("EAFT_DATA", str(tmp_path))
    (task,) = load_suite(REPO / "configs" / "suites" / "arc_easy.yaml").tasks
    assert task.path == tmp_path.resolve() / "arc" / "arc_easy_test.jsonl"
    (tmp_path / "s.yaml").write_text("general:\n  - {name: mc, type: multiple_choice, path: $EAFT_DATA/x.jsonl}\n")
    assert load_suite(tmp_path / "s.yaml").tasks[0].path == tmp_path.resolve() / "x.jsonl"


def test_the_flag_sets_eaft_data_for_the_process_and_its_steps(tmp_path, monkeypatch, capsys, no_data_root):
    assert eval_main(["--suite", str(REPO / "configs/suites/arc_easy.yaml")]) == 2
    assert "set EAFT_DATA=DIR or pass --data-root DIR" in capsys.readouterr().err
    assert eval_main(["--suite", "x.yaml", "--data-root", str(tmp_path / "nowhere")]) == 2
    assert f"--data-root {tmp_path / 'nowhere'}: no such folder" in capsys.readouterr().err
    monkeypatch.chdir(REPO)
    experiment = "configs/experiments/smollm2_gsm8k_cpu.yaml"
    assert exp.main([experiment, "--check", "--data-root", str(tmp_path)]) == 0
    assert os.environ["EAFT_DATA"] == str(tmp_path.resolve())  # what the training and evaluation steps inherit
