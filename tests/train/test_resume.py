"""Reliability: a run killed with SIGKILL resumes from its last complete checkpoint and ends where an uninterrupted
run ends; a killed run never looks complete."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eaft.train.outputs import read_metrics

REPO = Path(__file__).resolve().parents[2]


def command(model_dir, data, run_dir, *extra):
    args = [f"model={model_dir}", f"dataset={data}", f"output_dir={run_dir}", "objective=eaft", "val_size=8"]
    args += ["max_steps=16", "logging_steps=4", "save_steps=4", "per_device_train_batch_size=4"]
    args += ["learning_rate=0.01", "lora_dropout=0.1", "seed=3", *extra]
    return [sys.executable, "-m", "eaft.cli", "train", *args]


def env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}


def in_process(argv):
    from eaft.train.cli import parse_args
    from eaft.train.run import run_training

    return run_training(parse_args(argv[4:]))  # argv without `python -m eaft.cli train`


def test_resume_after_kill_matches_an_uninterrupted_run(tmp_path, tiny_model_dir, chat_data):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    in_process(command(tiny_model_dir, chat_data, whole))

    proc = subprocess.Popen(
        command(tiny_model_dir, chat_data, killed),
        env=env(),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 300
    while not (killed / "checkpoint-4" / "trainer_state.json").is_file():
        assert proc.poll() is None and time.time() < deadline, "the run ended before its first checkpoint"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "report.md").exists() and not (killed / "adapter").exists()  # never looks complete

    in_process(command(tiny_model_dir, chat_data, killed, "resume=true"))
    final = {}
    for run in (whole, killed):
        rows = [row for row in read_metrics(run) if "loss" in row]
        assert [row["step"] for row in rows] == [4, 8, 12, 16]  # no step logged twice after the resume
        summary = json.loads((run / "summary.json").read_text())
        final[run.name] = (rows[-1]["loss"], rows[-1]["ce"], summary["heldout"]["after"]["ce"])
    assert final["killed"] == pytest.approx(final["whole"], abs=1e-4)


def test_resume_without_a_checkpoint_is_an_error(tmp_path, tiny_model_dir, chat_data):
    from eaft.train.run_dir import RunError

    with pytest.raises(RunError, match="has no complete checkpoint"):
        in_process(command(tiny_model_dir, chat_data, tmp_path / "none", "resume=true"))


def test_a_partial_checkpoint_is_skipped(tmp_path):
    from eaft.train.run_dir import complete_checkpoints

    for step, complete in ((4, True), (8, True), (12, False)):
        (tmp_path / f"checkpoint-{step}").mkdir()
        if complete:
            (tmp_path / f"checkpoint-{step}" / "trainer_state.json").write_text("{}")
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["checkpoint-8", "checkpoint-4"]
