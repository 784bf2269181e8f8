"""An analysis folder appears whole: a kill mid-write leaves the earlier analysis, a new one leaves nothing of the
old beside it, `--compare` refuses a folder that mixes two, and a folder of other files is never replaced."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest

from eaft.analysis import run as run_module
from eaft.analysis.run import AnalyzeConfig, run_analysis
from eaft.cli import main as eaft_main
from tests.analysis.conftest import conversations, peaked, write_jsonl
from tests.train.tiny import build_model, build_tokenizer


class Killed(Exception):
    """A kill between two of the analysis's files, raised in-process."""


@pytest.fixture(scope="module")
def tiny():
    tokenizer = build_tokenizer()
    return build_model(vocab_size=len(tokenizer)).eval(), tokenizer


def analyze(tiny, data, out, **options) -> dict:
    model, tokenizer = tiny
    config = AnalyzeConfig(data=data, out=str(out), progress=False, bins=10, top_n=2, html=False, **options)
    return run_analysis(config, model=model, tokenizer=tokenizer)


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_kill_between_files_leaves_the_earlier_analysis_whole(tmp_path, tiny, monkeypatch):
    data = write_jsonl(tmp_path / "data.jsonl", conversations(6, seed=1))
    out = tmp_path / "out"
    analyze(tiny, data, out)
    before = {p.name: sha(p) for p in out.iterdir()}

    def killed(*args, **kwargs):  # the token table of the new analysis is written by now
        raise Killed()

    monkeypatch.setattr(run_module, "plot_landscape", killed)
    with pytest.raises(Killed):
        analyze(tiny, write_jsonl(tmp_path / "other.jsonl", conversations(9, seed=2)), out)
    assert {p.name: sha(p) for p in out.iterdir()} == before  # the old analysis, every file of it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.jsonl", "other.jsonl", "out"]  # no partial left
    monkeypatch.undo()
    assert eaft_main(["analyze", "--compare", str(out), str(out)]) == 0


def test_a_new_analysis_leaves_no_file_of_the_old_one(tmp_path, tiny):
    data = write_jsonl(tmp_path / "data.jsonl", conversations(6, seed=1))
    out = tmp_path / "out"
    analyze(tiny, data, out, rollouts=1, max_new_tokens=3, table_format="jsonl")
    assert (out / "rollout_tokens.jsonl").is_file() and (out / "tokens.jsonl").is_file()
    summary = analyze(tiny, data, out)
    assert sorted(p.name for p in out.iterdir()) == sorted({*summary["files"].values(), "report.md", "summary.json"})
    assert not (out / "rollout_tokens.jsonl").exists() and not (out / "tokens.jsonl").exists()


def test_compare_refuses_a_folder_that_mixes_two_analyses(tmp_path, tiny, capsys):
    model, tokenizer = tiny
    data = write_jsonl(tmp_path / "data.jsonl", conversations(6, seed=1))
    analyze(tiny, data, tmp_path / "a")
    analyze((peaked(build_model(vocab_size=len(tokenizer), seed=1)), tokenizer), data, tmp_path / "b")
    shutil.copy(tmp_path / "b" / "tokens.parquet", tmp_path / "a" / "tokens.parquet")  # what a kill used to leave
    capsys.readouterr()
    assert eaft_main(["analyze", "--compare", str(tmp_path / "a"), str(tmp_path / "b")]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'a' / 'tokens.parquet'} is not the file summary.json was written with" in err
    assert "mixes files of two analyses" in err and "Traceback" not in err
    legacy = json.loads((tmp_path / "b" / "summary.json").read_text())
    del legacy["sha256"]  # an analysis written before the checksums
    (tmp_path / "b" / "summary.json").write_text(json.dumps(legacy))
    assert eaft_main(["analyze", "--compare", str(tmp_path / "b"), str(tmp_path / "b")]) == 0
    assert (
        "recorded no checksums, so whether its files belong to one analysis cannot be checked"
        in capsys.readouterr().out
    )


def test_a_folder_of_other_files_is_not_replaced(tmp_path, tiny):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match=r"--out .*mine holds files this command does not write \(notes.txt\)"):
        analyze(tiny, write_jsonl(tmp_path / "data.jsonl", conversations(4)), out)
    assert (out / "notes.txt").read_text() == "keep me"
