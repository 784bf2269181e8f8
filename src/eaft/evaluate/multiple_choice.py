"""Multiple choice by log-likelihood: the choice whose continuation the model finds most probable wins.

Prompt format (default): `Question: {question}\\nAnswer:` followed by `" " + choice text` — the plain
continuation scoring of lm-evaluation-harness's ARC/PIQA/MedQA tasks. `choice_format: letter` lists the choices
as `A. ...` lines and scores `" A"`, `" B"`, ... (MMLU's original form). `chat: true` puts the prompt in a user
turn of the chat template and scores the choice as the start of the assistant's answer (no delimiter).
`preprocess: <name>` runs a named step on each row first (`eaft.evaluate.row_formats`: lm-eval's document
processing for HellaSwag and MMLU), so that a task file can build an lm-eval task's prompts exactly.

Scoring (all three are computed; `scoring` picks the reported one):
- `raw`: Σ log p(continuation tokens);
- `per_char`: raw / number of characters of the choice text (lm-eval's `acc_norm`);
- `per_token`: raw / number of continuation tokens.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any

from eaft.evaluate.lm import (
    ModelHandle,
    chat_prompt,
    continuation_logprobs,
    encode_pair,
    shared_context_logprobs,
)
from eaft.evaluate.row_formats import PREPROCESSORS
from eaft.evaluate.task_types import register_task_type
from eaft.evaluate.tasks import (
    TaskError,
    TaskOutcome,
    TaskSpec,
    field_value,
    iter_rows,
    read_jsonl,
    render,
    require_finite,
    resolve_path,
)


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
    preprocess: str | None = field(
        default=None, metadata={"help": "a named row step before the templates (hellaswag, mmlu): lm-eval's"}
    )
    max_length: int = field(default=2048, metadata={"help": "tokens kept per sequence (context cut on the left)"})
    batch_tokens: int = field(default=2048, metadata={"help": "padded tokens per forward batch"})


LETTERS = string.ascii_uppercase
SCORINGS = ("raw", "per_char", "per_token")


@dataclass(frozen=True)
class ChoiceItem:
    """One question as text pairs: choice i is scored as `continuations[i]` after `contexts[i]`.

    `lengths[i]` is the character count used by per-character normalization (the choice text alone).
    """

    contexts: list[str]
    continuations: list[str]
    lengths: list[int]
    gold: int


def default_prompt(opts: MultipleChoiceOptions) -> str:
    if opts.prompt is not None:
        return opts.prompt
    return "{question}\n{options}\nAnswer:" if opts.choice_format == "letter" else "Question: {question}\nAnswer:"


def gold_index(value: Any, n_choices: int, where: str) -> int:
    """A 0-based index from an int, a digit string or a letter."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().upper() in LETTERS:
        value = LETTERS.index(value.strip().upper())
    if not isinstance(value, int) or not 0 <= value < n_choices:
        raise TaskError(f"{where}: answer must be a 0-based index below {n_choices} or a letter, got {value!r}")
    return value


def row_choices(opts: MultipleChoiceOptions, row: dict[str, Any], where: str) -> list[str]:
    choices = opts.choices if isinstance(opts.choices, list) else field_value(row, opts.choices, where)
    if not isinstance(choices, list) or len(choices) < 2:
        raise TaskError(f"{where}: choices must be a list of at least 2 strings, got {choices!r}")
    return [str(c) for c in choices]


def solved_text(opts: MultipleChoiceOptions, row: dict[str, Any], where: str) -> str:
    """A few-shot example: the prompt followed by its gold continuation."""
    item = build_item(opts, row, where, prefix="")
    return item.contexts[item.gold] + item.continuations[item.gold]


def build_item(opts: MultipleChoiceOptions, row: dict[str, Any], where: str, prefix: str = "") -> ChoiceItem:
    """The text pairs of one row (before any chat templating). `prefix` holds description and few-shot text."""
    delimiter = "" if opts.chat else opts.target_delimiter
    if opts.contexts is not None:
        if opts.continuation is None:
            raise TaskError(f"{where}: `contexts` needs `continuation` (the shared ending field)")
        contexts = field_value(row, opts.contexts, where)
        if not isinstance(contexts, list) or len(contexts) < 2:
            raise TaskError(f"{where}: {opts.contexts!r} must be a list of at least 2 contexts")
        ending = str(field_value(row, opts.continuation, where))
        gold = gold_index(field_value(row, opts.answer, where), len(contexts), where)
        n = len(contexts)
        return ChoiceItem([prefix + str(c) for c in contexts], [delimiter + ending] * n, [len(ending)] * n, gold)
    choices = row_choices(opts, row, where)
    if opts.choice_format == "letter" and len(choices) > len(LETTERS):
        raise TaskError(f"{where}: letter format supports at most {len(LETTERS)} choices")
    options = "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(choices))
    context = prefix + render(default_prompt(opts), {**row, "options": options}, where)
    texts = list(LETTERS[: len(choices)]) if opts.choice_format == "letter" else choices
    gold = gold_index(field_value(row, opts.answer, where), len(choices), where)
    return ChoiceItem([context] * len(texts), [delimiter + t for t in texts], [len(t) for t in texts], gold)


def few_shot_prefix(
    opts: MultipleChoiceOptions, row: dict[str, Any], pool: list[dict[str, Any]], task: TaskSpec, where: str
) -> str:
    """Description, then `few_shot` solved examples (file order, same `few_shot_match` value, never the row)."""
    parts = [render(opts.description, row, where)] if opts.description else []
    if opts.few_shot:
        key = opts.few_shot_match
        wanted = field_value(row, key, where) if key else None
        shots = [s for s in pool if s != row and (key is None or s.get(key) == wanted)][: opts.few_shot]
        if len(shots) < opts.few_shot:
            which = f" with {key}={wanted!r}" if key else ""
            raise TaskError(
                f"{where}: task {task.name!r} asks for {opts.few_shot} few-shot examples{which}, "
                f"the few-shot file has {len(shots)}"
            )
        parts += [solved_text(opts, s, f"{where} (few-shot example)") for s in shots]
    return "".join(p + "\n\n" for p in parts)


def preprocessed(opts: MultipleChoiceOptions, row: dict[str, Any], where: str) -> dict[str, Any]:
    """The row after the task's `preprocess` step (the row itself without one)."""
    if opts.preprocess is None:
        return row
    fields, step = PREPROCESSORS[opts.preprocess]
    for name in fields:
        field_value(row, name, f"{where} (preprocess: {opts.preprocess})")
    return step(row)


def build_items(task: TaskSpec) -> list[tuple[int, ChoiceItem]]:
    """(line number, item) for the selected rows of the task file."""
    opts: MultipleChoiceOptions = task.options
    pool: list[dict[str, Any]] = []
    if opts.few_shot:
        source = resolve_path(opts.few_shot_path, task.path.parent) if opts.few_shot_path else task.path
        pool = [preprocessed(opts, row, f"{source}:{i}") for i, row in enumerate(read_jsonl(source), start=1)]
    items = []
    for line, row in iter_rows(task.path, task.limit, task.limit_mode):
        where = f"{task.path}:{line}"
        row = preprocessed(opts, row, where)
        items.append((line, build_item(opts, row, where, few_shot_prefix(opts, row, pool, task, where))))
    return items


def choose(logprobs: list[float], item: ChoiceItem, token_counts: list[int]) -> dict[str, int]:
    """The predicted index under each scoring."""
    scores = {
        "raw": logprobs,
        "per_char": [lp / max(n, 1) for lp, n in zip(logprobs, item.lengths, strict=True)],
        "per_token": [lp / n for lp, n in zip(logprobs, token_counts, strict=True)],
    }
    return {name: max(range(len(s)), key=s.__getitem__) for name, s in scores.items()}


def score_items(task: TaskSpec, items: list[ChoiceItem], model: Any, tokenizer: Any) -> list[tuple[list, list]]:
    """(log-likelihoods, continuation token counts) per item. Items whose choices share one tokenized context
    run the context once (`shared_context_logprobs`); the others (e.g. the partial form) pair by pair."""
    opts: MultipleChoiceOptions = task.options
    pairs = []
    for item in items:
        contexts = [chat_prompt(tokenizer, c) if opts.chat else c for c in item.contexts]
        pairs.append(
            [
                encode_pair(tokenizer, c, k, add_special_tokens=not opts.chat)
                for c, k in zip(contexts, item.continuations, strict=True)
            ]
        )
    shared = [i for i, p in enumerate(pairs) if all(ctx == p[0][0] for ctx, _ in p)]
    single = [i for i in range(len(items)) if i not in set(shared)]
    kwargs = {"batch_tokens": opts.batch_tokens, "max_length": opts.max_length, "desc": task.name}
    logprobs: dict[int, list[float]] = {}
    groups = [(pairs[i][0][0], [cont for _, cont in pairs[i]]) for i in shared]
    logprobs.update(zip(shared, shared_context_logprobs(model, groups, **kwargs), strict=True))
    flat = continuation_logprobs(model, [pair for i in single for pair in pairs[i]], **kwargs)
    start = 0
    for i in single:
        logprobs[i], start = flat[start : start + len(pairs[i])], start + len(pairs[i])
    return [(logprobs[i], [len(cont) for _, cont in pairs[i]]) for i in range(len(items))]


def evaluate_multiple_choice(task: TaskSpec, handle: ModelHandle) -> TaskOutcome:
    opts: MultipleChoiceOptions = task.options
    items = build_items(task)
    model, tokenizer = handle.load()
    scored = score_items(task, [item for _, item in items], model, tokenizer)
    require_finite(task, [line for line, _ in items], [logprobs for logprobs, _ in scored])
    correct = dict.fromkeys(SCORINGS, 0)
    samples = []
    for (line, item), (logprobs, counts) in zip(items, scored, strict=True):
        preds = choose(logprobs, item, counts)
        for name in SCORINGS:
            correct[name] += preds[name] == item.gold
        samples.append({"line": line, "gold": item.gold, "pred": preds, "logprobs": logprobs})
    n = len(items)
    metrics = {f"acc_{name}": 100.0 * correct[name] / max(n, 1) for name in SCORINGS}
    primary = f"acc_{opts.scoring}"
    return TaskOutcome(metrics[primary], primary, metrics, n, samples, notes=f"scoring: {opts.scoring}")


register_task_type("multiple_choice", MultipleChoiceOptions, evaluate_multiple_choice)
