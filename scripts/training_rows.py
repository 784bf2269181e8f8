"""Write the training rows of an experiment file as `messages` JSONL, for `eaft analyze --data`.

`eaft analyze` reads a file; an experiment's `dataset` may name several dataset_info.json entries, each cut to
`max_samples`. This script builds the first run's config as `eaft experiment` does and loads its rows with
`eaft train`'s own loader (`eaft.train.run.load_conversations`, then `split_heldout` with its val_size), one
conversation a line, so that analyze sees the very rows the runs train on. Run from the repository root:

    python scripts/training_rows.py configs/experiments/regime_conflict_400.yaml runs/regimes/conflict_400/rows.jsonl
"""

from __future__ import annotations

import argparse
import json
import sys

from eaft.data.sources import split_heldout
from eaft.experiment.spec import load_experiment
from eaft.io import write_text_atomic
from eaft.train.config import build_config
from eaft.train.run import load_conversations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", help="an `eaft experiment` file")
    parser.add_argument("out", help="the JSONL file to write")
    args = parser.parse_args()
    experiment = load_experiment(args.experiment)
    run = experiment.runs[0]
    train = build_config(run.config, f"{experiment.source}: run {run.name!r}").eaft
    if train.compat == "llamafactory":
        sys.exit(f"training_rows: {args.experiment}: compat: llamafactory splits its rows its own way; not written")
    conversations, _ = split_heldout(load_conversations(train), train.val_size)
    lines = [json.dumps({"messages": conv}, ensure_ascii=False) for conv in conversations]
    write_text_atomic(args.out, "\n".join(lines) + "\n")
    print(f"{args.out}: {len(lines)} conversations ({train.dataset})")


if __name__ == "__main__":
    main()
