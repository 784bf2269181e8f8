"""What a run directory holds besides checkpoints: metrics.jsonl, TensorBoard events, the curve and report.md.

A run is complete when `report.md` exists: it is written last, atomically, after the final model or adapter.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

METRICS = "metrics.jsonl"
REPORT = "report.md"
CURVE = "training_curve.png"
CURVE_KEYS = ("loss", "ce", "mean_weight", "conflict_share")


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def atomic_save_dir(target: Path, save: Any) -> None:
    """`save(tmp_dir)` then rename the folder onto `target` (replacing an older one)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        save(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Drop logged steps after `last_step` (a resumed run logs them again)."""
    rows = [row for row in read_metrics(run_dir) if row.get("step", 0) <= last_step]
    atomic_write_text(Path(run_dir) / METRICS, "".join(json.dumps(row) + "\n" for row in rows))


class CheckpointAtSteps(TrainerCallback):
    """Saves a checkpoint at each listed step, besides Trainer's every-save_steps ones."""

    def __init__(self, steps: list[int]) -> None:
        self.steps = frozenset(steps)

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.steps:
            control.should_save = True
        return control


class MetricsCallback(TrainerCallback):
    """Appends every log to metrics.jsonl and TensorBoard (main process only)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = Path(run_dir)
        self.writer = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        row = {"step": state.global_step, **{k: v for k, v in logs.items() if isinstance(v, (int, float))}}
        with (self.run_dir / METRICS).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(row) + "\n")
        if self.writer is None:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tensorboard"))
        for key, value in row.items():
            if key != "step" and math.isfinite(float(value)):
                self.writer.add_scalar(f"train/{key}", value, state.global_step)
        self.writer.flush()

    def on_train_end(self, args, state, control, **kwargs):
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def plot_curve(run_dir: Path) -> Path | None:
    """training_curve.png: loss and CE, mean weight and conflict share per logged step."""
    rows = [row for row in read_metrics(run_dir) if "loss" in row]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [row["step"] for row in rows]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    for key in ("loss", "ce"):
        top.plot(steps, [row.get(key, math.nan) for row in rows], marker="o", ms=3, label=key)
    top.set_ylabel("nats per label token")
    top.legend()
    for key in ("mean_weight", "conflict_share"):
        bottom.plot(steps, [row.get(key, math.nan) for row in rows], marker="o", ms=3, label=key)
    bottom.set_xlabel("optimizer step")
    bottom.set_ylim(bottom=0)
    bottom.legend()
    fig.suptitle(f"training curve: {Path(run_dir).name}")
    fig.tight_layout()
    path = Path(run_dir) / CURVE
    tmp = path.with_name(f".{CURVE}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return path


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_report(run_dir: Path, summary: dict[str, Any]) -> Path:
    """report.md (and summary.json): the run's setup, first → last logged statistics, held-out CE before → after."""
    run_dir = Path(run_dir)
    rows = [row for row in read_metrics(run_dir) if "loss" in row]
    lines = [f"# Run report: {run_dir.name}", ""]
    lines += [f"- {key}: {_fmt(value)}" for key, value in summary.items() if not isinstance(value, dict)]
    if rows:
        first, last = rows[0], rows[-1]
        lines += ["", f"## Training (logged steps {first['step']} → {last['step']})", ""]
        lines += ["| metric | first | last |", "|---|---|---|"]
        for key in ("loss", "ce", "mean_entropy", "mean_weight", "conflict_share"):
            if key in last:
                lines.append(f"| {key} | {_fmt(first.get(key))} | {_fmt(last[key])} |")
    heldout = summary.get("heldout") or {}
    if heldout:
        lines += ["", f"## Held-out rows ({heldout['rows']} rows, {heldout['tokens']} label tokens)", ""]
        lines += ["| metric | before | after |", "|---|---|---|"]
        for key in ("ce", "mean_entropy", "conflict_share"):
            lines.append(f"| {key} | {_fmt(heldout['before'][key])} | {_fmt(heldout['after'][key])} |")
    if (run_dir / CURVE).is_file():
        lines += ["", f"![training curve]({CURVE})"]
    atomic_write_text(run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(run_dir / REPORT, "\n".join(lines) + "\n")
    return run_dir / REPORT
