"""Copy an experiment's small files (everything but model weights and checkpoints) to another folder, or back.

What `eaft experiment` needs to resume or to redraw its report is small: each run's report.md, summary.json,
config.yaml and metrics.jsonl (a run with report.md is finished), the stored run configs, and every evaluation
folder. The weights (model/, adapter/, checkpoint-*/) are left out. Copied back into an experiment's `out`, the
state makes `eaft experiment` skip every finished run and evaluation and continue with the rest; `eaft report`
can redraw the report from the copied evaluations alone.

    python scripts/save_experiment_state.py runs/experiments/NAME docs/results/NAME/state          # save
    python scripts/save_experiment_state.py docs/results/NAME/state runs/experiments/NAME          # restore
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

RUN_FILES = ("report.md", "summary.json", "config.yaml", "metrics.jsonl", "training_curve.png", "flow_weights.json")
SKIP_DIRS = ("model", "adapter", "tensorboard", "logs")


def small_files(source: Path) -> list[Path]:
    """The files of an experiment folder worth keeping, relative to it."""
    found = []
    for path in sorted(source.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(source)
        parts = rel.parts
        if any(p in SKIP_DIRS or p.startswith("checkpoint-") or p.startswith(".") for p in parts):
            continue
        if parts[0] == "runs" and (len(parts) != 3 or parts[2] not in RUN_FILES):
            continue
        found.append(rel)
    return found


def copy_state(source: Path, target: Path) -> int:
    files = small_files(source)
    for rel in files:
        (target / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / rel, target / rel)
    return len(files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path)
    parser.add_argument("target", type=Path)
    args = parser.parse_args()
    if not args.source.is_dir():
        parser.error(f"{args.source}: no such folder")
    print(f"copied {copy_state(args.source, args.target)} files to {args.target}")


if __name__ == "__main__":
    main()
