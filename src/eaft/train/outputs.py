"""What a run directory holds besides checkpoints: metrics.jsonl, TensorBoard events, the curve and report.md.

A run is complete when `report.md` exists: it is written last, atomically, after the final model or adapter.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from transformers import TrainerCallback

from eaft.io import finite_or_none, save_figure, write_json_atomic, write_text_atomic

METRICS = "metrics.jsonl"
REPORT = "report.md"
CURVE = "training_curve.png"
CURVE_KEYS = ("loss", "ce", "mean_weight", "conflict_share")


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def metrics_line(row: dict[str, Any]) -> str:
    """One metrics.jsonl line: strict JSON, a non-finite value written as null."""
    return json.dumps(finite_or_none(row), allow_nan=False) + "\n"


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """Drop logged steps after `last_step` (a resumed run logs them again)."""
    rows = [row for row in read_metrics(run_dir) if row.get("step", 0) <= last_step]
    write_text_atomic(Path(run_dir) / METRICS, "".join(metrics_line(row) for row in rows))


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
            handle.write(metrics_line(row))
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


def warn_if_unlogged(guard: Any, run_dir: Path, training: Any, steps: int) -> None:
    """A run with no logged step has no per-step table or curve; say why (report.md and the log) rather than
    present an empty one. `guard`: the run's RunGuard, whose warnings report.md lists."""
    if any("loss" in row for row in read_metrics(run_dir)):
        return
    strategy = getattr(training.logging_strategy, "value", training.logging_strategy)
    setting = f"logging_steps={training.logging_steps:g}" if strategy == "steps" else f"logging_strategy={strategy}"
    guard.warn(
        f"no training step was logged ({setting}; the run trained {steps} steps): report.md has no "
        "per-step table and no training curve (train_loss is over all steps); set logging_steps at most the "
        "number of steps to see them"
    )


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
    save_figure(fig, path, dpi=100)
    return path


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def write_report(run_dir: Path, summary: dict[str, Any]) -> Path:
    """report.md (and summary.json): the run's setup, first → last logged statistics, held-out CE before → after."""
    run_dir = Path(run_dir)
    rows = [row for row in read_metrics(run_dir) if "loss" in row]
    lines = [f"# Run report: {run_dir.name}", ""]
    lines += [f"- {key}: {_fmt(value)}" for key, value in summary.items() if not isinstance(value, (dict, list))]
    if summary.get("warnings"):
        lines += ["", "## Warnings", "", *[f"- **{w}**" for w in summary["warnings"]]]
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
    write_json_atomic(run_dir / "summary.json", summary, indent=2)
    write_text_atomic(run_dir / REPORT, "\n".join(lines) + "\n")
    return run_dir / REPORT
