"""`eaft train ... eval_suite=PATH`: the base and the trained model are scored, forgetting.* lands in the run
directory and report.md gains the Δ lines; a bad suite fails before training."""

from __future__ import annotations

import json

import pytest

from eaft.train import cli as train_cli
from tests.train.tiny import write_tiny_suite


def test_training_ends_with_the_forgetting_report(tmp_path, tiny_model_dir, chat_data, monkeypatch, capsys):
    import os
    import stat

    monkeypatch.setenv("EAFT_CACHE", str(tmp_path / "cache"))
    old_umask = os.umask(0o022)
    suite = write_tiny_suite(tmp_path, items=4)
    run_dir = tmp_path / "run"
    args = [f"model={tiny_model_dir}", f"dataset={chat_data}", f"output_dir={run_dir}", "max_steps=3"]
    args += ["learning_rate=0.05", f"eval_suite={suite}", "eval_limit=3", "logging_steps=1"]
    try:
        assert train_cli.main(args) == 0
    finally:
        os.umask(old_umask)
    assert "- Δ Target:" in capsys.readouterr().out
    written = ["forgetting.md", "forgetting.json", "forgetting.png", "forgetting.html", "report.md", "config.yaml"]
    written += ["eval/trained/results.json", "eval/trained/results.md", "eval/base/suite.yaml"]
    for name in written:  # eval's and report's files too: what other users of the machine can read
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o644, name
    table = json.loads((run_dir / "forgetting.json").read_text())
    assert [r["run"] for r in table["rows"]] == ["base", "trained"]
    trained = json.loads((run_dir / "eval" / "trained" / "results.json").read_text())
    assert trained["adapter"] == str(run_dir / "adapter") and trained["tasks"]["mc_general"]["n"] == 3
    assert (run_dir / "forgetting.md").is_file() and (run_dir / "forgetting.png").stat().st_size > 0
    report = (run_dir / "report.md").read_text()
    row = table["rows"][1]
    assert f"- Δ Target: {row['delta_target']:+.2f} points (mc_target)" in report
    assert f"- Δ General: {row['delta_general']:+.2f} points (mc_general)" in report
    assert report.count("## Evaluation after training") == 1 and "## Training" in report


def test_extra_tasks_get_their_delta_line_and_run_complete_comes_after_the_evaluation(
    tmp_path, tiny_model_dir, chat_data, monkeypatch, capsys, caplog
):
    import logging

    from eaft.evaluate import after_training

    monkeypatch.setenv("EAFT_CACHE", str(tmp_path / "cache"))
    real = after_training.evaluate_after_training
    events = []

    def evaluate(*args, **kwargs):
        events.append(("evaluation starts", len(caplog.records)))
        table = real(*args, **kwargs)
        events.append(("evaluation ends", len(caplog.records)))
        return table

    monkeypatch.setattr(after_training, "evaluate_after_training", evaluate)
    suite = write_tiny_suite(tmp_path, items=4, extra=True)
    run_dir = tmp_path / "run"
    args = [f"model={tiny_model_dir}", f"dataset={chat_data}", f"output_dir={run_dir}", "max_steps=3"]
    args += ["learning_rate=0.05", f"eval_suite={suite}", "eval_limit=3", "logging_steps=1"]
    with caplog.at_level(logging.INFO, logger="eaft"):
        assert train_cli.main(args) == 0
    table = json.loads((run_dir / "forgetting.json").read_text())
    before, after = (row["scores"]["mc_extra"] for row in table["rows"])
    line = f"- Δ mc_extra (extra): {after - before:+.2f} points ({before:.2f} → {after:.2f})"
    assert line in capsys.readouterr().out and line in (run_dir / "report.md").read_text()
    complete = [i for i, r in enumerate(caplog.records) if r.getMessage().startswith("run complete")]
    assert len(complete) == 1 and [name for name, _ in events] == ["evaluation starts", "evaluation ends"]
    assert complete[0] >= events[1][1]  # logged after the evaluation returned, never before it
    assert not any("run complete" in r.getMessage() for r in caplog.records[: events[0][1]])


def test_a_bad_suite_fails_before_training(tmp_path, tiny_model_dir, chat_data):
    from eaft.evaluate.tasks import TaskError

    (tmp_path / "bad.yaml").write_text("name: bad\ntarget: [{name: x, type: nope}]\n")
    args = [f"model={tiny_model_dir}", f"dataset={chat_data}", f"output_dir={tmp_path / 'run'}"]
    with pytest.raises(TaskError):
        train_cli.main([*args, f"eval_suite={tmp_path / 'bad.yaml'}"])
    assert not (tmp_path / "run").exists()
