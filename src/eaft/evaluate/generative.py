"""Generative exact match: greedy decoding through the chat template, final-answer extraction, numeric equality.

Each row's prompt template becomes one user turn (an optional system turn first). The response is decoded
without special tokens, its answer extracted (`eaft.evaluate.extraction`) and compared with the gold answer read
the same way. A response with no extractable answer scores as wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from eaft.evaluate.extraction import extract_answer, gold_number, numbers_equal
from eaft.evaluate.lm import ModelHandle, chat_prompt, decode, greedy_generate
from eaft.evaluate.stopping import compile_stop
from eaft.evaluate.task_types import register_task_type
from eaft.evaluate.tasks import TaskError, TaskOutcome, TaskSpec, field_value, iter_rows, render


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
    stop_regex: str | None = field(
        default=None,
        metadata={
            "help": "end an item's generation once its response matches this regular expression (e.g. the "
            "completed '#### <number>' line); the answer extracted is the same, the rest is not decoded"
        },
    )

    def __post_init__(self) -> None:
        compile_stop(self.stop_regex)


def prompt_text(tokenizer: Any, user: str, *, system: str | None, chat: bool) -> str:
    """The text handed to the model: the chat rendering of one user turn, or the plain prompt."""
    if chat:
        return chat_prompt(tokenizer, user, system)
    if system:
        raise TaskError("`system` needs `chat: true`")
    return user


def evaluate_generative(task: TaskSpec, handle: ModelHandle) -> TaskOutcome:
    opts: GenerativeOptions = task.options
    rows = list(iter_rows(task.path, task.limit, task.limit_mode))
    golds, users = [], []
    for line, row in rows:
        where = f"{task.path}:{line}"
        gold = gold_number(field_value(row, opts.answer, where))
        if gold is None:
            raise TaskError(f"{where}: gold answer {field_value(row, opts.answer, where)!r} is not a number")
        golds.append(gold)
        users.append(render(opts.prompt, row, where))
    model, tokenizer = handle.load()
    prompts = [prompt_text(tokenizer, u, system=opts.system, chat=opts.chat) for u in users]
    outputs = greedy_generate(
        model,
        tokenizer,
        prompts,
        max_new_tokens=opts.max_new_tokens,
        batch_size=opts.batch_size,
        add_special_tokens=not opts.chat,
        desc=task.name,
        stop_regex=opts.stop_regex,
    )
    samples, correct, extracted = [], 0, 0
    for (line, _), gold, ids in zip(rows, golds, outputs, strict=True):
        response = decode(tokenizer, ids)
        pred = extract_answer(response, opts.extraction)
        ok = numbers_equal(pred, gold)
        correct += ok
        extracted += pred is not None
        samples.append({"line": line, "gold": gold, "pred": pred, "correct": ok, "response": response})
    n = len(rows)
    metrics = {"exact_match": 100.0 * correct / max(n, 1), "extracted": 100.0 * extracted / max(n, 1)}
    notes = f"greedy, max_new_tokens={opts.max_new_tokens}, extraction={opts.extraction}"
    notes += f", stop_regex={opts.stop_regex!r}" if opts.stop_regex else ""
    return TaskOutcome(metrics["exact_match"], "exact_match", metrics, n, samples, notes=notes)


register_task_type("generative", GenerativeOptions, evaluate_generative)
