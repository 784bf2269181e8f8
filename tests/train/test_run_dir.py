"""The run directory: one run writes it at a time, a damaged checkpoint is named with the way back, a failed save
says where and what to do, an interrupt says how to resume, and weights are written with normal permissions."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from eaft.train.outputs import read_metrics
from eaft.train.run_dir import RunError
from tests.train.test_reliability import Killed, argv, train

REPO = Path(__file__).resolve().parents[2]


def test_a_second_run_into_a_live_runs_folder_is_refused_and_the_first_is_untouched(
    tmp_path, tiny_model_dir, chat_data
):
    run_dir = tmp_path / "run"
    first = [*argv(tiny_model_dir, chat_data, run_dir, "max_steps=100", "logging_steps=10", "save_steps=1000")]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": str(REPO / "src")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "eaft.cli", "train", *first], env=env, cwd=REPO, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.time() + 120
        while not (run_dir / "config.yaml").is_file():  # the first run has claimed and started its folder
            assert proc.poll() is None and time.time() < deadline, "the first run ended before it started"
            time.sleep(0.02)
        with pytest.raises(Exception, match=rf"{run_dir} is in use by eaft train \(pid {proc.pid} on "):
            train(argv(tiny_model_dir, chat_data, run_dir, "seed=1"))  # "a failed start" it must not clear
    finally:
        _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-2000:]
    config = (run_dir / "config.yaml").read_text()
    assert "seed: 3" in config and "seed: 1" not in config
    steps = [row["step"] for row in read_metrics(run_dir) if "loss" in row]
    assert steps == list(range(10, 101, 10))  # one run's logs, once each
    assert json.loads((run_dir / "summary.json").read_text())["steps"] == 100
    assert not (tmp_path / ".run.eaft-lock").exists()


def test_a_truncated_checkpoint_is_named_with_the_way_back_to_the_previous_one(tmp_path, tiny_model_dir, chat_data):
    from eaft.train import run as run_module

    run_dir = tmp_path / "run"
    real_save = run_module.save_final

    def killed_save(*args, **kwargs):
        raise Killed()

    run_module.save_final = killed_save
    try:
        with pytest.raises(Killed):
            train(argv(tiny_model_dir, chat_data, run_dir))
    finally:
        run_module.save_final = real_save
    weights = run_dir / "checkpoint-6" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # a disk that filled up, a copy cut short
    with pytest.raises(
        RunError,
        match=rf"{weights} cannot be read \(.*\): the checkpoint was cut short; to fall back to checkpoint-4, delete "
        rf"{run_dir / 'checkpoint-6'} and run with resume=true again",
    ):
        train(argv(tiny_model_dir, chat_data, run_dir, "resume=true"))
    (run_dir / "checkpoint-2" / "optimizer.pt").write_bytes(b"PK\x03\x04")  # a zip cut after its first bytes
    with pytest.raises(RunError, match=r"checkpoint-2/optimizer.pt cannot be read .*no older complete checkpoint"):
        train(argv(tiny_model_dir, chat_data, run_dir, f"resume_from_checkpoint={run_dir / 'checkpoint-2'}"))


def test_a_full_disk_during_a_checkpoint_names_the_folder_and_says_what_to_do(
    tmp_path, tiny_model_dir, chat_data, monkeypatch
):
    import torch

    real_save = torch.save

    def to_a_full_disk(obj, f, *args, **kwargs):  # /dev/full: every write fails with ENOSPC
        if str(f).endswith("optimizer.pt") and "checkpoint-4" in str(f):
            return real_save(obj, "/dev/full", *args, **kwargs)
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", to_a_full_disk)
    run_dir = tmp_path / "run"
    with pytest.raises(RunError) as caught:
        train(argv(tiny_model_dir, chat_data, run_dir))
    message = str(caught.value)
    assert f"could not write the checkpoint {run_dir / 'checkpoint-4'}" in message
    assert "GB free there): the disk is likely full. Free space or choose another output_dir" in message
    assert message.endswith("resume=true continues from checkpoint-2")


def test_an_interrupt_says_how_to_resume(tmp_path, capsys, monkeypatch):
    from eaft import cli
    from eaft.train import run as run_module

    run_dir = tmp_path / "run"

    def interrupted(config):
        (run_dir / "checkpoint-2").mkdir(parents=True)
        (run_dir / "checkpoint-2" / "trainer_state.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "run_training", interrupted)
    assert cli.main(["train", f"output_dir={run_dir}"]) == 130
    err = capsys.readouterr().err.strip()
    assert err == (
        f"eaft train: interrupted; `eaft train {run_dir / 'config.yaml'} resume=true` continues from checkpoint-2"
    )


def test_weight_files_have_normal_permissions(tmp_path, tiny_model_dir, chat_data):
    old = os.umask(0o022)
    try:
        run_dir = train(argv(tiny_model_dir, chat_data, tmp_path / "run", "max_steps=2"))
    finally:
        os.umask(old)
    for name in ("adapter/adapter_model.safetensors", "checkpoint-2/adapter_model.safetensors"):
        assert stat.S_IMODE((run_dir / name).stat().st_mode) == 0o644, name  # safetensors alone writes 0600
