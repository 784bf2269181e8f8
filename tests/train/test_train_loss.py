"""report.md and summary.json give the Trainer's own `train_loss` whatever `logging_steps` is, and a run that
logged no step says so instead of presenting an empty table."""

from __future__ import annotations

import json

import pytest

from eaft.train.cli import parse_args
from eaft.train.outputs import read_metrics
from eaft.train.run import run_training


def train(tmp_path, model_dir, data, name: str, logging_steps: int):
    argv = [f"model={model_dir}", f"dataset={data}", f"output_dir={tmp_path / name}", "objective=eaft"]
    argv += ["max_steps=4", "per_device_train_batch_size=4", "learning_rate=0.01", "seed=3", "save_steps=100"]
    run_dir = run_training(parse_args([*argv, f"logging_steps={logging_steps}"]))
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    rows = read_metrics(run_dir)
    trainers = [row["train_loss"] for row in rows if "train_loss" in row]  # Trainer's final metrics line
    assert len(trainers) == 1
    return run_dir, summary, trainers[0], [row["loss"] for row in rows if "loss" in row]


@pytest.fixture(scope="module")
def every_step(tmp_path_factory, tiny_model_dir, chat_data):
    return train(tmp_path_factory.mktemp("every"), tiny_model_dir, chat_data, "every", logging_steps=1)


def test_every_step_logged_train_loss_is_the_mean_of_the_steps(every_step):
    _, summary, trainers, steps = every_step
    assert len(steps) == 4
    assert summary["train_loss"] == pytest.approx(sum(steps) / 4, rel=1e-6)
    assert summary["train_loss"] == pytest.approx(trainers, rel=1e-6)


@pytest.mark.parametrize("logging_steps", [3, 5])
def test_unlogged_last_steps_count_once(tmp_path, tiny_model_dir, chat_data, every_step, logging_steps):
    """logging_steps 5 > max_steps 4 (nothing logged: this was exactly 2x) and 3 (the 4th step unlogged)."""
    _, summary, trainers, _ = train(tmp_path, tiny_model_dir, chat_data, "run", logging_steps)
    assert summary["train_loss"] == pytest.approx(trainers, rel=1e-6)
    assert summary["train_loss"] == pytest.approx(every_step[1]["train_loss"], rel=1e-5)


def test_a_run_that_logged_no_step_says_so(tmp_path, tiny_model_dir, chat_data):
    run_dir, summary, _, steps = train(tmp_path, tiny_model_dir, chat_data, "run", logging_steps=5)
    assert steps == []
    report = (run_dir / "report.md").read_text(encoding="utf-8")
    assert "no training step was logged" in report and "logging_steps=5" in report
    assert any("no training step was logged" in w for w in summary["warnings"])
    assert "## Training" not in report and "training_curve.png" not in report
    assert not (run_dir / "training_curve.png").exists()
