"""Named row preprocessing for multiple-choice tasks (`preprocess: <name>` in a task file): the steps an
lm-evaluation-harness task applies to its documents before filling its templates, so that the task file's
prompts and choices are exactly lm-eval's. Each step takes a row in the benchmark data root's layout and returns
a new row with the fields the task file's templates name; `tests/evaluate/test_lm_eval_prompts.py` checks them
against lm-eval's own task code.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Row = dict[str, Any]

_BRACKETED = re.compile(r"\[.*?\]")


def _wikihow_clean(text: str) -> str:
    """HellaSwag's WikiHow items carry `[header]`, `[title]`, `[step]`, `[substeps]` markers: a ` [title]` becomes
    a sentence break, every other marker goes, and the double spaces left behind become single."""
    text = text.strip().replace(" [title]", ". ")
    return _BRACKETED.sub("", text).replace("  ", " ")


def hellaswag(row: Row) -> Row:
    """lm-eval `hellaswag`: `query` = `{activity_label}: {ctx_a} {ctx_b}` with ctx_b's first letter capitalised
    (and the rest lowered, as `str.capitalize` does), and `choices` = the endings, all cleaned of WikiHow markers."""
    context = f"{row['activity_label']}: {row['ctx_a']} {str(row['ctx_b']).capitalize()}"
    return {**row, "query": _wikihow_clean(context), "choices": [_wikihow_clean(str(e)) for e in row["choices"]]}


def mmlu(row: Row) -> Row:
    """lm-eval `mmlu` and `mmlu_continuation`: the question stripped of surrounding whitespace, and `subject_name`
    = the subject with spaces for underscores (as its descriptions name it)."""
    return {**row, "question": str(row["question"]).strip(), "subject_name": str(row["subject"]).replace("_", " ")}


#: name -> (the fields it reads, the step)
PREPROCESSORS: dict[str, tuple[tuple[str, ...], Callable[[Row], Row]]] = {
    "hellaswag": (("activity_label", "ctx_a", "ctx_b", "choices"), hellaswag),
    "mmlu": (("question", "subject"), mmlu),
}
