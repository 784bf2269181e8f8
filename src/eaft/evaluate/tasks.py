"""Task definitions shared by every task type: the resolved TaskSpec, option parsing, rows and templates.

Each task type is one module that declares its options dataclass and its `evaluate`, and registers both
(`eaft.evaluate.task_types`); an unknown option key is an error that suggests the closest valid one. Prompt
templates use `{field}` or `{field.sub}` placeholders filled from a row; any other brace (e.g. `\\boxed{}`) is
left alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eaft.data_root import expand_data_root
from eaft.errors import EaftError, UsageError
from eaft.evaluate.row_formats import PREPROCESSORS

GROUPS = ("target", "general", "extra")
LIMIT_MODES = ("first", "spread")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\}")


_CHOICES = {
    "scoring": ("raw", "per_char", "per_token"),
    "choice_format": ("text", "letter"),
    "extraction": ("auto", "hash", "boxed", "last_number"),
    "metric": ("prompt_level_strict", "inst_level_strict", "prompt_level_loose", "inst_level_loose"),
    "prompt_format": ("auto", "template", "plain"),
    "parse": ("lenient", "strict"),
    "preprocess": tuple(PREPROCESSORS),
}


@dataclass(frozen=True)
class TaskSpec:
    """One resolved task of a suite. `path` is None only for lm-eval-only tasks and the shipped prompt set."""

    name: str
    type: str | None
    group: str
    path: Path | None
    options: Any = None
    limit: int | None = None
    limit_mode: str = "first"
    lm_eval: str | dict[str, Any] | None = None  # a name, a task YAML path or an inline config
    lm_eval_metric: str | None = None
    lm_eval_fewshot: int | None = None
    source: str = ""

    def settings(self) -> dict[str, Any]:
        """Everything that changes the result, except the data file itself (hashed separately)."""
        opts = dataclasses.asdict(self.options) if self.options is not None else {}
        for volatile in ("batch_tokens", "batch_size"):  # batching does not change results
            opts.pop(volatile, None)
        return {"type": self.type, "options": opts, "limit": self.limit, "limit_mode": self.limit_mode}


class TaskError(UsageError, ValueError):
    """A task or suite definition, or a data row, is not what was expected."""


class NonFiniteScoreError(EaftError, RuntimeError):
    """The model's log-likelihoods (or a task's score) are NaN or infinite: no score can be given."""


def require_finite(task: TaskSpec, lines: list[int], values: list[Any], path: Path | None = None) -> None:
    """Refuse a task whose log-likelihoods are not numbers: a NaN never wins an argmax, so a diverged model would
    otherwise score its first choice on every item (50.00 on two choices) as if it had answered.
    `values[i]` is item `lines[i]`'s log-likelihood, or the list of its choices' log-likelihoods; `path` is the
    file the lines are in (default: the task's)."""
    bad = [line for line, v in zip(lines, values, strict=True) if not all(map(math.isfinite, _as_list(v)))]
    if bad:
        path = path or task.path
        where = f"{path}:{bad[0]}" if path is not None else f"item {bad[0]}"
        raise NonFiniteScoreError(
            f"task {task.name!r}: the model's log-likelihoods are NaN or infinite on {len(bad)} of {len(lines)} "
            f"items (first: {where}), so the task has no score. The weights are likely diverged (too high a "
            "learning rate in training); evaluate an earlier checkpoint"
        )


def _as_list(value: Any) -> list[float]:
    return [float(v) for v in value] if isinstance(value, (list, tuple)) else [float(value)]


def suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_options(kind: str, raw: Mapping[str, Any], where: str) -> Any:
    """The options dataclass of task type `kind` from a mapping; unknown keys and bad values are errors."""
    from eaft.evaluate.task_types import task_type

    cls = task_type(kind).options
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise TaskError(f"{where}: unknown option {key!r} for a {kind} task{suggest(key, names)}; valid: {names}")
    for key, allowed in _CHOICES.items():
        if key in raw and key in names and raw[key] not in allowed:
            raise TaskError(f"{where}: {key} must be one of {allowed}, got {raw[key]!r}")
    for f in dataclasses.fields(cls):
        if f.name in raw and isinstance(f.default, int) and not isinstance(f.default, bool):
            value = raw[f.name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise TaskError(f"{where}: {f.name} must be a non-negative integer, got {value!r}")
    try:
        return cls(**dict(raw))
    except ValueError as err:  # an option's own check (e.g. a malformed stop_regex)
        raise TaskError(f"{where}: {err}") from None


def resolve_path(value: str, base: Path) -> Path:
    """A path from a YAML file: a leading `$EAFT_DATA` is the data root (`eaft.data_root`), `~` and other `$VARS`
    are expanded, relative paths are taken from `base`."""
    path = Path(os.path.expandvars(os.path.expanduser(expand_data_root(str(value)))))
    return path if path.is_absolute() else (base / path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """Rows of a JSONL file; a bad line is an error naming the file and line."""
    from eaft.io import JsonlError
    from eaft.io import read_jsonl as read_lines

    if not path.is_file():
        raise TaskError(f"data file {path} does not exist")
    try:
        return [row for _, row in read_lines(path)]
    except JsonlError as err:
        raise TaskError(str(err)) from None


def select_rows(rows: list[dict[str, Any]], limit: int | None, mode: str = "first") -> list[dict[str, Any]]:
    """`first`: the first `limit` rows; `spread`: `limit` rows evenly spaced over the file (deterministic)."""
    if limit is None or limit >= len(rows):
        return rows
    if mode == "first":
        return rows[:limit]
    return [rows[(i * len(rows)) // limit] for i in range(limit)]


def field_value(row: Mapping[str, Any], name: str, where: str) -> Any:
    """`row[name]`, following dots into nested objects; a missing field names the row's fields."""
    value: Any = row
    for part in name.split("."):
        if not isinstance(value, Mapping) or part not in value:
            raise TaskError(f"{where}: no field {name!r} (the row has {sorted(row)})")
        value = value[part]
    return value


def _as_text(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return "\n".join(value)  # e.g. PubMedQA's list of abstract sections
    return str(value)


def render(template: str, row: Mapping[str, Any], where: str) -> str:
    """Fill `{field}` / `{field.sub}` placeholders from `row` in one pass (values are not re-parsed); a list of
    strings is joined with newlines."""
    return _PLACEHOLDER.sub(lambda m: _as_text(field_value(row, m.group(1), where)), template)


def iter_rows(path: Path, limit: int | None, mode: str) -> Iterator[tuple[int, dict[str, Any]]]:
    rows = read_jsonl(path)
    index = {id(row): i for i, row in enumerate(rows, start=1)}
    for row in select_rows(rows, limit, mode):
        yield index[id(row)], row


@dataclass
class TaskOutcome:
    """What a task type returns: the primary score (0–100, higher is better), all metrics, per-item samples."""

    score: float
    metric: str
    metrics: dict[str, float]
    n: int
    samples: list[dict[str, Any]] = field(default_factory=list)
    notes: str = ""
