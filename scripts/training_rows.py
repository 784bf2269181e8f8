"""Write the training rows of an experiment file as `messages` JSONL, for `eaft analyze --data`.

`eaft analyze` reads a file; an experiment's `dataset` may name several dataset_info.json entries, each cut to
`max_samples`. This script loads them exactly as `eaft train` does (`eaft.data.sources.load_dataset_conversations`
and `split_heldout`, with the same dataset, dataset_dir, max_samples and val_size) and writes one conversation a
line, so that analyze sees the very rows the runs train on. Run from the repository root:

    python scripts/training_rows.py configs/experiments/regime_conflict_400.yaml runs/regimes/conflict_400/rows.jsonl
"""

from __future__ import annotations

import argparse
import json

from eaft.data.sources import load_dataset_conversations, split_heldout
from eaft.experiment.spec import load_experiment
from eaft.io import write_text_atomic


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help="an `eaft experiment` file")
    parser.add_argument("out", help="the JSONL file to write")
    args = parser.parse_args()
    train = load_experiment(args.experiment).runs[0].config
    conversations = load_dataset_conversations(
        train["dataset"],
        data_format=train.get("data_format", "auto"),
        dataset_dir=train.get("dataset_dir"),
        max_samples=train.get("max_samples"),
    )
    conversations, _ = split_heldout(conversations, train.get("val_size", 0.0))
    lines = [json.dumps({"messages": conv}, ensure_ascii=False) for conv in conversations]
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print(f"{args.out}: {len(lines)} conversations ({train['dataset']})")


if __name__ == "__main__":
    main()
