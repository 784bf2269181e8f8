"""Task definitions: a local JSONL file plus a small YAML mapping naming the type, the fields and the options.

Each task type declares its options as a dataclass (`OPTIONS[type]`); an unknown key is an error that suggests
the closest valid one. Prompt templates use `{field}` or `{field.sub}` placeholders filled from a row; any other
brace (e.g. `\\boxed{}`) is left alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eaft.data_root import expand_data_root
from eaft.errors import UsageError

GROUPS = ("target", "general", "extra")
LIMIT_MODES = ("first", "spread")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_]+)*)\}")


@dataclass(frozen=True)
class MultipleChoiceOptions:
    """Log-likelihood multiple choice. Each choice's continuation `target_delimiter + text` is scored after the
    prompt (`Question: ...\\nAnswer:` by default); `contexts`+`continuation` is the partial form (WinoGrande):
    one context per choice, a shared continuation."""

    prompt: str | None = field(default=None, metadata={"help": "template; default by choice_format"})
    choices: str | list[str] = field(default="choices", metadata={"help": "field holding the choices, or a list"})
    answer: str = field(default="answer", metadata={"help": "field with the 0-based gold index (or a letter)"})
    contexts: str | None = field(default=None, metadata={"help": "partial form: field with one context per choice"})
    continuation: str | None = field(default=None, metadata={"help": "partial form: field of the shared ending"})
    target_delimiter: str = field(default=" ", metadata={"help": "between prompt and continuation"})
    choice_format: str = field(default="text", metadata={"help": "text: score choice text; letter: score ' A'.."})
    scoring: str = field(default="per_char", metadata={"help": "raw | per_char | per_token (length normalization)"})
    description: str = field(default="", metadata={"help": "template put once before the few-shot examples"})
    few_shot: int = field(default=0, metadata={"help": "number of solved examples before each question"})
    few_shot_path: str | None = field(default=None, metadata={"help": "JSONL of examples; default the task file"})
    few_shot_match: str | None = field(default=None, metadata={"help": "only examples with the same field value"})
    chat: bool = field(default=False, metadata={"help": "wrap the prompt in the chat template (user turn)"})
    max_length: int = field(default=2048, metadata={"help": "tokens kept per sequence (context cut on the left)"})
    batch_tokens: int = field(default=4096, metadata={"help": "padded tokens per forward batch"})


@dataclass(frozen=True)
class GenerativeOptions:
    """Greedy generation through the chat template, answer extraction, numeric comparison."""

    prompt: str = field(default="{question}", metadata={"help": "template of the user message"})
    answer: str = field(default="answer", metadata={"help": "field with the gold answer (#### form accepted)"})
    extraction: str = field(default="auto", metadata={"help": "auto | hash | boxed | last_number"})
    system: str | None = field(default=None, metadata={"help": "optional system message"})
    chat: bool = field(default=True, metadata={"help": "use the chat template (false: plain prompt)"})
    max_new_tokens: int = field(default=512, metadata={"help": "generation budget per item"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})


@dataclass(frozen=True)
class IFEvalOptions:
    """IFEval prompts (`key`, `prompt`, `instruction_id_list`, `kwargs`), scored by lm-eval's checkers."""

    metric: str = field(default="prompt_level_strict", metadata={"help": "which of the four is the score"})
    system: str | None = field(default=None, metadata={"help": "optional system message"})
    max_new_tokens: int = field(default=1024, metadata={"help": "generation budget per item"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})


@dataclass(frozen=True)
class SelfConsistencyOptions:
    """NLL, under the evaluated model, of the reference (base) model's greedy answers to general prompts."""

    prompt: str = field(default="{prompt}", metadata={"help": "template of the user message"})
    reference: str | None = field(
        default=None, metadata={"help": "base model; default: the evaluated model with its adapter switched off"}
    )
    max_new_tokens: int = field(default=128, metadata={"help": "length of the reference answers"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})
    batch_tokens: int = field(default=4096, metadata={"help": "padded tokens per forward batch"})


@dataclass(frozen=True)
class ReferenceLikelihoodOptions:
    """Teacher-forced NLL of each row's reference response after its prompt: how well the model has learnt a
    domain's written answers, without generating (cheap, and not floored at chance like exact match)."""

    prompt: str = field(default="{question}", metadata={"help": "template of the user message"})
    answer: str = field(default="answer", metadata={"help": "field with the reference response"})
    system: str | None = field(default=None, metadata={"help": "optional system message"})
    chat: bool = field(default=True, metadata={"help": "use the chat template (false: plain prompt)"})
    max_length: int = field(default=2048, metadata={"help": "tokens kept per sequence (context cut on the left)"})
    batch_tokens: int = field(default=4096, metadata={"help": "padded tokens per forward batch"})


@dataclass(frozen=True)
class FunctionCallOptions:
    """BFCL-style function calling (`eaft.evaluate.function_call`): `path` is a folder of `BFCL_v3_<category>.json`
    files with their `possible_answer/` folder; `limit` applies per category; the score averages the categories."""

    categories: list[str] = field(
        default_factory=lambda: ["simple", "multiple", "parallel", "parallel_multiple", "irrelevance"],
        metadata={"help": "BFCL categories scored and averaged (file BFCL_v3_<category>.json each)"},
    )
    prompt_format: str = field(default="auto", metadata={"help": "auto | template (tools=) | plain (system msg)"})
    instruction: str | None = field(default=None, metadata={"help": "plain format's system text; has {functions}"})
    parse: str = field(default="lenient", metadata={"help": "lenient: calls inside prose count | strict"})
    reply_prefix: str | None = field(default=None, metadata={"help": "start of the reply, e.g. '<tool_call>['"})
    max_new_tokens: int = field(default=256, metadata={"help": "generation budget per item"})
    batch_size: int = field(default=8, metadata={"help": "prompts per generate call"})


OPTIONS: dict[str, type] = {
    "multiple_choice": MultipleChoiceOptions,
    "generative": GenerativeOptions,
    "ifeval": IFEvalOptions,
    "self_consistency": SelfConsistencyOptions,
    "function_call": FunctionCallOptions,
    "reference_likelihood": ReferenceLikelihoodOptions,
}
_CHOICES = {
    "scoring": ("raw", "per_char", "per_token"),
    "choice_format": ("text", "letter"),
    "extraction": ("auto", "hash", "boxed", "last_number"),
    "metric": ("prompt_level_strict", "inst_level_strict", "prompt_level_loose", "inst_level_loose"),
    "prompt_format": ("auto", "template", "plain"),
    "parse": ("lenient", "strict"),
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
    lm_eval: str | None = None
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


def suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def parse_options(kind: str, raw: Mapping[str, Any], where: str) -> Any:
    """The options dataclass of task type `kind` from a mapping; unknown keys and bad values are errors."""
    cls = OPTIONS[kind]
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
    return cls(**dict(raw))


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
