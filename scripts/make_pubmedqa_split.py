"""Write the PubMedQA regime's files under configs/experiments/data/regimes/ from the data root's PQA-L set.

- pubmedqa_train.jsonl: the 500 rows whose `official_test` is false, as alpaca rows (instruction = the question,
  output = the long answer, id = the PMID), in source order. The question alone, without its abstract contexts:
  with them a row takes a median of ~415 tokens, beyond the regimes' cutoff_len of 256 (the question and long
  answer take at most 191).
- pubmedqa_test_40.jsonl: 40 of the 500 official-test rows, evenly spread over them (rows 0, 12, 25, ... of the
  test rows in source order), with `question` and `long_answer`: the target `pubmedqa_fit` of
  configs/suites/pubmedqa_frontier.yaml.

Deterministic. Run from the repository root (the data root is `../shared/data` beside it, or EAFT_DATA):

    python scripts/make_pubmedqa_split.py
"""

from __future__ import annotations

import json
from pathlib import Path

from eaft.data_root import find_data_root
from eaft.io import read_jsonl, write_text_atomic

OUT = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "data" / "regimes"
SOURCE = "pubmedqa/pubmedqa_labeled_1000.jsonl"
TEST_ROWS = 40


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def main() -> None:
    rows = [row for _, row in read_jsonl(find_data_root() / SOURCE)]
    kept = [r for r in rows if not r["official_test"]]
    train = [{"id": r["id"], "instruction": r["question"], "output": r["long_answer"]} for r in kept]
    test = [r for r in rows if r["official_test"]]
    picked = [test[i * len(test) // TEST_ROWS] for i in range(TEST_ROWS)]
    write_text_atomic(OUT / "pubmedqa_train.jsonl", jsonl(train))
    write_text_atomic(
        OUT / f"pubmedqa_test_{TEST_ROWS}.jsonl",
        jsonl([{"id": r["id"], "question": r["question"], "long_answer": r["long_answer"]} for r in picked]),
    )
    print(f"wrote {len(train)} training rows and {len(picked)} test rows to {OUT}")


if __name__ == "__main__":
    main()
