"""`eaft train`, unchanged, under torchrun with 2 CPU processes: one run directory, written once by the main rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.train.tiny import save_tiny, write_rows

ROOT = Path(__file__).resolve().parents[2]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]


def launch(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    model = save_tiny(tmp_path / "model")
    data = write_rows(tmp_path / "chat.jsonl", count=24)
    argv = [f"model={model}", f"dataset={data}", f"output_dir={tmp_path / 'run'}", "val_size=4", "max_steps=2"]
    argv += ["logging_steps=1", "save_steps=100", "per_device_train_batch_size=4", "objective=eaft", *overrides]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    command = [*TORCHRUN, "-m", "eaft.cli", "train", *argv]
    return subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=180)


def test_eaft_train_under_torchrun_writes_one_complete_run(tmp_path):
    done = launch(tmp_path, "use_cpu=true")
    assert done.returncode == 0, done.stderr[-4000:]
    run = tmp_path / "run"
    assert (run / "report.md").is_file() and (run / "adapter").is_dir()
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "label_tokens" in r and "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2]  # logged once (main process), not once per rank
    summary = json.loads((run / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["loss_path"] == "fused"
