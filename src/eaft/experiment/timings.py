"""`<out>/report/timings.md`: where an experiment's wall time went, training and evaluation apart.

Per run: its training process's wall time (summary.json), of which in-process evaluation (the seconds it spent
scoring its points); on the checkpoint path, each `eaft eval` process's task seconds. The base evaluation and
the whole invocation's wall time (this invocation only: a resumed experiment counts what it ran).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from eaft.experiment.spec import Experiment
from eaft.io import write_text_atomic


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def task_seconds(results: Path) -> float:
    data = _json(results) or {}
    return sum(float(t.get("seconds") or 0.0) for t in data.get("tasks", {}).values() if not t.get("cached"))


def run_timings(experiment: Experiment) -> list[dict[str, Any]]:
    rows = []
    for run in experiment.runs:
        summary = _json(run.run_dir / "summary.json") or {}
        wall = float(summary.get("wall_seconds") or 0.0)
        if experiment.in_process:
            evaluation = float((summary.get("evaluation") or {}).get("seconds") or 0.0)
            training = wall - evaluation
        else:
            folders = (experiment.evals / run.name).glob("step-*/results.json")
            evaluation, training = sum(task_seconds(p) for p in folders), wall
        rows.append({"run": run.name, "training": training, "evaluation": evaluation})
    return rows


def write_timings(experiment: Experiment, report: Path, wall: float) -> Path:
    rows = run_timings(experiment)
    base = task_seconds(experiment.evals / "base" / "results.json")
    how = "in each run's training process" if experiment.in_process else "by `eaft eval` from saved checkpoints"
    lines = [
        f"# Timings: {experiment.name}",
        "",
        f"This invocation: {wall:.0f} s wall ({wall / 60:.1f} min). Evaluation {how}.",
        "",
        "| run | training (s) | evaluation (s) |",
        "|---|---|---|",
        *[f"| {r['run']} | {r['training']:.0f} | {r['evaluation']:.0f} |" for r in rows],
        f"| base (`eaft eval`, task seconds) | — | {base:.0f} |",
        f"| **all** | {sum(r['training'] for r in rows):.0f} | {sum(r['evaluation'] for r in rows) + base:.0f} |",
    ]
    path = report / "timings.md"
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
