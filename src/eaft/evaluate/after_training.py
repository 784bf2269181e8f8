"""Evaluation after training (`eaft train ... eval_suite=PATH`): what did the fine-tune cost against its base?

The base model (cached by content, so a second run of the same base costs nothing) and the trained model are
scored on the suite into `<run>/eval/base/` and `<run>/eval/trained/`; `eaft report` writes `forgetting.md`,
`.json`, `.png` and `.html` into the run directory, and `report.md` gains the Δ Target / Δ General lines.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from eaft.evaluate.cache import ResultCache
from eaft.evaluate.lm import ModelHandle
from eaft.evaluate.report import write_report
from eaft.evaluate.runner import run_suite, write_run
from eaft.evaluate.suite import load_suite
from eaft.io import write_text_atomic

logger = logging.getLogger(__name__)
SECTION = "## Evaluation after training"


def check_suite(path: str, limit: int | None) -> None:
    """Parse the suite before training starts: a bad suite must not cost a run."""
    load_suite(path, limit=limit)


def evaluate_after_training(run_dir: Path, suite_path: str, *, limit: int | None, dtype: str) -> dict[str, Any]:
    """Score base and trained model on the suite, write the forgetting report into `run_dir`; returns its table."""
    summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    suite = load_suite(suite_path, limit=limit)
    saved = run_dir / summary["saved"]
    trained = (summary["model"], str(saved)) if summary["finetuning"] == "lora" else (str(saved), None)
    cache = ResultCache()
    for name, (model, adapter) in (("base", (summary["model"], None)), ("trained", trained)):
        handle = ModelHandle(model, adapter, dtype=dtype)
        logger.info("evaluation after training: %s on %s", name, suite.name)
        write_run(run_dir / "eval" / name, suite, handle, "native", run_suite(suite, handle, cache=cache))
        handle.release()
    table = write_report(run_dir / "eval" / "base", [run_dir / "eval" / "trained"], run_dir)
    add_to_report(run_dir, table)
    return table


def delta_lines(table: dict[str, Any], row: str | None = None) -> list[str]:
    """Δ Target / Δ General of `row` (default: the first run after the base) against the base, then one line per
    task of the extra group (outside both averages, e.g. self-consistency: often the one measure that moves
    after a short fine-tune)."""
    base = next(r for r in table["rows"] if r["run"] == table["base"])
    row = next(r for r in table["rows"] if r["run"] != table["base"] and (row is None or r["run"] == row))
    groups = {g: [c["task"] for c in table["columns"] if c["group"] == g] for g in ("target", "general", "extra")}
    lines = []
    for group, key in (("target", "delta_target"), ("general", "delta_general")):
        value = row[key]
        shown = "—" if value is None else f"{value:+.2f} points"
        lines.append(f"- Δ {group.capitalize()}: {shown} ({', '.join(groups[group]) or 'no tasks'})")
    for task in groups["extra"]:
        before, after = base["scores"].get(task), row["scores"].get(task)
        if before is None or after is None or task in row.get("not_compared", {}):
            continue
        lines.append(f"- Δ {task} (extra): {after - before:+.2f} points ({before:.2f} → {after:.2f})")
    return lines


def add_to_report(run_dir: Path, table: dict[str, Any], row: str | None = None) -> None:
    """report.md keeps its content and gains (or replaces) the after-training section (Δ lines of `row`)."""
    report = run_dir / "report.md"
    text = report.read_text(encoding="utf-8")
    text = text.split(f"\n{SECTION}\n")[0].rstrip("\n")
    section = [SECTION, "", *delta_lines(table, row), "", "Per task: [forgetting.md](forgetting.md)."]
    write_text_atomic(report, text + "\n\n" + "\n".join(section) + "\n")
