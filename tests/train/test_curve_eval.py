"""Evaluation inside the training process (`eval_suite_steps`): each scheduled point is scored on the model in
memory, equals what `eaft eval` gives on that model saved to disk, leaves training untouched, writes no checkpoint,
and is skipped when a re-run finds it done."""

from __future__ import annotations

import json

import pytest

from eaft.train import cli as train_cli
from tests.train.tiny import write_tiny_suite


@pytest.fixture
def curve_args(tmp_path, tiny_model_dir, chat_data, monkeypatch):
    monkeypatch.setenv("EAFT_CACHE", str(tmp_path / "cache"))
    suite = write_tiny_suite(tmp_path, items=4)
    args = [f"model={tiny_model_dir}", f"dataset={chat_data}", "max_steps=5", "learning_rate=0.05"]
    args += ["logging_steps=1", "finetuning=full", f"eval_suite={suite}", "save_strategy='no'"]
    return args


def _losses(run_dir):
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [row["loss"] for row in rows if "loss" in row]


def test_points_are_scored_in_memory_and_match_a_saved_model(tmp_path, curve_args, tiny_model_dir):
    from eaft.evaluate.lm import ModelHandle
    from eaft.evaluate.runner import run_suite
    from eaft.evaluate.suite import load_suite

    run_dir = tmp_path / "run"
    assert train_cli.main([*curve_args, f"output_dir={run_dir}", "eval_suite_steps=[1, 3]"]) == 0
    points = sorted(p.name for p in (run_dir / "eval").iterdir())
    assert points == ["base", "step-1", "step-3", "step-5"]  # the last step is always scored
    assert not list(run_dir.glob("checkpoint-*"))  # nothing saved for the evaluations
    final = json.loads((run_dir / "eval" / "step-5" / "results.json").read_text())
    assert final["curve"] == {"series": "run", "step": 5, "family": "run"}
    # the final point equals a fresh evaluation of the saved model from disk, item for item
    suite = load_suite(tmp_path / "suite.yaml")
    fresh = run_suite(suite, ModelHandle(str(run_dir / "model")))
    for name, record in fresh["tasks"].items():
        assert final["tasks"][name]["score"] == pytest.approx(record["score"], abs=1e-9)
        samples = [json.loads(x) for x in (run_dir / "eval" / "step-5" / "samples" / f"{name}.jsonl").open()]
        for got, want in zip(samples, record["samples"], strict=True):
            assert got["logprobs"] == pytest.approx(want["logprobs"], abs=1e-4)
    base = json.loads((run_dir / "eval" / "base" / "results.json").read_text())
    assert base["curve"]["step"] == 0
    # the run's own frontier and Δ lines
    assert (run_dir / "frontier.md").is_file() and (run_dir / "forgetting.md").is_file()
    assert "- Δ General:" in (run_dir / "report.md").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert set(summary["evaluation"]["points"]) == {"0", "1", "3", "5"}


def test_evaluating_along_the_way_does_not_change_training(tmp_path, curve_args):
    plain, scored = tmp_path / "plain", tmp_path / "scored"
    assert train_cli.main([*curve_args, f"output_dir={plain}", "eval_suite=null"]) == 0
    assert train_cli.main([*curve_args, f"output_dir={scored}", "eval_suite_steps=geometric"]) == 0
    assert _losses(plain) == _losses(scored)


def test_a_retry_after_a_kill_scores_only_the_missing_points(tmp_path, curve_args):
    import shutil

    run_dir = tmp_path / "run"
    args = [*curve_args, f"output_dir={run_dir}", "eval_suite_steps=[2, 4]"]
    assert train_cli.main(args) == 0
    kept = {p: (run_dir / "eval" / p / "results.json").stat().st_mtime_ns for p in ("base", "step-2")}
    # as if the process was killed while scoring step 4: no model, no report, steps 4 and 5 not written
    for name in ("model", "eval/step-4", "eval/step-5"):
        shutil.rmtree(run_dir / name)
    for name in ("report.md", "summary.json"):
        (run_dir / name).unlink()
    assert train_cli.main(args) == 0  # a failed start of the same config: retried, its finished points kept
    assert (run_dir / "eval" / "step-4" / "results.json").is_file()
    assert (run_dir / "eval" / "step-5" / "results.json").is_file()
    for point, mtime in kept.items():
        assert (run_dir / "eval" / point / "results.json").stat().st_mtime_ns == mtime, point
    # another config is another run: its retry keeps nothing of the failed start
    for name in ("model", "eval/step-5"):
        shutil.rmtree(run_dir / name)
    (run_dir / "report.md").unlink()
    assert train_cli.main([*args, "learning_rate=0.01"]) == 0
    assert (run_dir / "eval" / "step-2" / "results.json").stat().st_mtime_ns != kept["step-2"]


def test_a_schedule_without_a_suite_or_malformed_is_refused(tmp_path, tiny_model_dir, chat_data):
    from eaft.train.config import ConfigError

    args = [f"model={tiny_model_dir}", f"dataset={chat_data}", f"output_dir={tmp_path / 'run'}"]
    assert train_cli.main([*args, "eval_suite_steps=geometric"]) == 2
    with pytest.raises(ConfigError, match="eval_suite_steps"):
        train_cli.parse_args([*args, "eval_suite=x.yaml", "eval_suite_steps=logarithmic"])
    with pytest.raises(ConfigError, match="eval_suite_steps"):
        train_cli.parse_args([*args, "eval_suite=x.yaml", "eval_suite_steps=[0, 3]"])
