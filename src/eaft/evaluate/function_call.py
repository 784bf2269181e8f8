"""Function calling, BFCL v3 style: the model sees a request and function documentation, and its reply's calls
are checked against the possible answers the AST way (`eaft.evaluate.call_matching`).

Data: `path` is a folder holding `BFCL_v3_<category>.json` (question rows `id`, `question` — a list holding one
turn, a list of messages —, `function` — the documentation) and, for the categories with answers,
`possible_answer/BFCL_v3_<category>.json` (rows `id`, `ground_truth`). Both are JSON lines despite the name.
How a category is scored follows from its name, as in BFCL: `…irrelevance…` is right when the reply makes no
call, `…relevance…` when it makes at least one, any other category against its answers, in any order for
`…parallel…` categories and in order otherwise. `limit` applies to each category.

Prompt (`prompt_format`): `template` hands the documentation to the chat template as `tools=[{"type":
"function", "function": doc}]` (BFCL's types mapped to JSON schema: dict→object, float→number, tuple→array,
any→no type); `plain` puts it, one JSON object per function, in a system message (`instruction`, default
`PLAIN_INSTRUCTION`) that asks for a JSON list of `{"name": ..., "arguments": {...}}` calls in `<tool_call>` tags;
`auto` picks `template` when the chat template renders tools, else `plain`. A system message of the question
follows the instruction. `reply_prefix` (e.g. `<tool_call>[`) is put at the start of the assistant's turn and
counts as part of the reply: it steers small models into the call syntax. Greedy decoding. Every syntax of
`eaft.evaluate.call_parsing` is read, so a model that answers with one JSON call per line — the form `eaft.data`
trains tool calls in when a template cannot render them — is scored the same.

Score: the mean of the per-category accuracies (each category counts once, whatever its size); the notes name
the categories averaged.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from eaft.evaluate.call_matching import Verdict, check_no_call, check_reply, check_some_call, find_doc
from eaft.evaluate.call_parsing import parse_calls
from eaft.evaluate.lm import ModelHandle, decode, greedy_generate
from eaft.evaluate.task_types import register_task_type
from eaft.evaluate.tasks import TaskError, TaskOutcome, TaskSpec, iter_rows, read_jsonl


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


QUESTION_FILE = "BFCL_v3_{}.json"
ANSWER_FOLDER = "possible_answer"
PLAIN_INSTRUCTION = (
    "You can call these functions (JSON documentation, one per line):\n<tools>\n{functions}\n</tools>\n\n"
    "To call functions, reply only with a JSON list of the calls the request needs, in tool_call tags: "
    '<tool_call>[{"name": "<function name>", "arguments": {"<parameter>": <value>}}]</tool_call>\n'
    "If no function fits the request, make no call and say why."
)
_SCHEMA_TYPES = {"dict": "object", "float": "number", "tuple": "array"}
_PROBE = "eaft_probe_function_7f3a"


@dataclass(frozen=True)
class Item:
    """One question of one category; `answer` is None for the categories scored without answers."""

    category: str
    line: int
    id: str
    messages: list[dict[str, Any]]
    functions: list[dict[str, Any]]
    answer: list[dict[str, Any]] | None


def scoring_mode(category: str) -> str:
    """`no_call`, `some_call`, `unordered` or `ordered`, from the category name as BFCL does."""
    if "irrelevance" in category:
        return "no_call"
    if "relevance" in category:
        return "some_call"
    return "unordered" if "parallel" in category else "ordered"


def category_files(task: TaskSpec) -> list[Path]:
    """The question file of every category, followed by its answer file when it is scored against answers."""
    folder, categories = task.path, task.options.categories
    if not (isinstance(categories, list) and categories and all(isinstance(c, str) and c for c in categories)):
        raise TaskError(f"{task.source}: categories must be a non-empty list of names, got {categories!r}")
    if len(set(categories)) != len(categories):
        raise TaskError(f"{task.source}: categories are listed twice: {categories}")
    instruction = task.options.instruction
    if instruction is not None and "{functions}" not in instruction:
        raise TaskError(f"{task.source}: instruction must contain {{functions}} (where the documentation goes)")
    if folder is None or not folder.is_dir():
        raise TaskError(f"{task.source}: path {folder} must be a folder holding {QUESTION_FILE.format('<category>')}")
    files = []
    for category in categories:
        paths = [folder / QUESTION_FILE.format(category)]
        if scoring_mode(category) in ("ordered", "unordered"):
            paths.append(folder / ANSWER_FOLDER / QUESTION_FILE.format(category))
        for path in paths:
            if not path.is_file():
                raise TaskError(f"{task.source}: category {category!r} needs {path}, which does not exist")
        files += paths
    return files


def _question(row: dict[str, Any], where: str) -> tuple[str, list[dict[str, Any]], list[dict[str, Any]]]:
    turns, functions = row.get("question"), row.get("function")
    if not isinstance(row.get("id"), str):
        raise TaskError(f"{where}: expected a string `id`")
    if not (isinstance(turns, list) and len(turns) == 1 and isinstance(turns[0], list) and turns[0]):
        raise TaskError(
            f"{where}: `question` must hold exactly one turn (a list of messages); multi-turn rows are not supported"
        )
    for message in turns[0]:
        if not (isinstance(message, dict) and isinstance(message.get("role"), str) and "content" in message):
            raise TaskError(f"{where}: every message of `question` needs `role` and `content`")
    if not (isinstance(functions, list) and functions):
        raise TaskError(f"{where}: `function` must be a non-empty list of function documentations")
    for doc in functions:
        if not (isinstance(doc, dict) and isinstance(doc.get("name"), str) and isinstance(doc.get("parameters"), dict)):
            raise TaskError(f"{where}: every entry of `function` needs a string `name` and a `parameters` object")
    return row["id"], turns[0], functions


def _answers(path: Path) -> dict[str, tuple[int, list[dict[str, Any]]]]:
    answers = {}
    for line, row in enumerate(read_jsonl(path), start=1):
        truth = row.get("ground_truth")
        if not (isinstance(truth, list) and truth and all(isinstance(c, dict) and len(c) == 1 for c in truth)):
            raise TaskError(f"{path}:{line}: `ground_truth` must be a list of {{function_name: {{param: [...]}}}}")
        answers[str(row.get("id"))] = (line, truth)
    return answers


def load_items(task: TaskSpec) -> list[Item]:
    """Every category's selected questions, joined with their answers by `id`."""
    category_files(task)  # every file exists
    opts: FunctionCallOptions = task.options
    items = []
    for category in opts.categories:
        questions = task.path / QUESTION_FILE.format(category)
        graded = scoring_mode(category) in ("ordered", "unordered")
        answers = _answers(task.path / ANSWER_FOLDER / QUESTION_FILE.format(category)) if graded else {}
        for line, row in iter_rows(questions, task.limit, task.limit_mode):
            where = f"{questions}:{line}"
            item_id, messages, functions = _question(row, where)
            answer = None
            if graded:
                if item_id not in answers:
                    raise TaskError(f"{where}: no answer with id {item_id!r} in {ANSWER_FOLDER}/{questions.name}")
                answer_line, answer = answers[item_id]
                for call in answer:
                    if find_doc(next(iter(call)), functions) is None:
                        raise TaskError(
                            f"{ANSWER_FOLDER}/{questions.name}:{answer_line}: the answer calls "
                            f"{next(iter(call))!r}, which {where} does not document"
                        )
            items.append(Item(category, line, item_id, messages, functions, answer))
    return items


def json_schema(value: Any) -> Any:
    """BFCL documentation with its type names mapped to JSON schema (dict→object, float→number, tuple→array;
    `any` loses its type)."""
    if isinstance(value, list):
        return [json_schema(v) for v in value]
    if not isinstance(value, dict):
        return value
    out = {}
    for key, item in value.items():
        if key == "type" and isinstance(item, str):
            if item != "any":
                out[key] = _SCHEMA_TYPES.get(item, item)
        else:
            out[key] = json_schema(item)
    return out


def template_renders_tools(tokenizer: Any) -> bool:
    """Whether the chat template shows `tools` to the model (a probe function's name appears in the render)."""
    probe = [{"type": "function", "function": {"name": _PROBE, "description": "", "parameters": {"type": "object"}}}]
    try:
        text = tokenizer.apply_chat_template(
            [{"role": "user", "content": "hi"}], tools=probe, tokenize=False, add_generation_prompt=True
        )
    except Exception:  # noqa: BLE001 - a template that fails on tools does not support them
        return False
    return _PROBE in text


def prompt_format(tokenizer: Any, requested: str) -> str:
    """The format used: `template` or `plain` (`auto` resolved); `template` without tools support is an error."""
    if not getattr(tokenizer, "chat_template", None):
        raise TaskError("function_call tasks need a tokenizer with a chat template")
    supported = template_renders_tools(tokenizer)
    if requested == "template" and not supported:
        raise TaskError("prompt_format: template, but the chat template ignores `tools`; use plain or auto")
    return "template" if requested == "template" or (requested == "auto" and supported) else "plain"


def build_prompt(
    tokenizer: Any, item: Item, fmt: str, instruction: str = PLAIN_INSTRUCTION, reply_prefix: str = ""
) -> str:
    """The rendered prompt of one item, ending where the assistant's reply starts (after `reply_prefix`)."""
    messages = [dict(m) for m in item.messages]
    if fmt == "template":
        tools = [{"type": "function", "function": json_schema(doc)} for doc in item.functions]
        text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        return text + reply_prefix
    docs = "\n".join(json.dumps(doc, ensure_ascii=False) for doc in item.functions)
    system = instruction.replace("{functions}", docs)
    if messages and messages[0]["role"] == "system":
        system = f"{system}\n\n{messages.pop(0)['content']}"
    messages = [{"role": "system", "content": system}, *messages]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) + reply_prefix


def score_reply(item: Item, response: str, *, embedded: bool = True) -> dict[str, Any]:
    """The sample record of one reply: parsed calls, how they were read, right or wrong and why."""
    parsed = parse_calls(response, embedded=embedded)
    mode = scoring_mode(item.category)
    if mode == "no_call":
        verdict = check_no_call(parsed.calls)
    elif mode == "some_call":
        verdict = check_some_call(parsed.calls)
    else:
        verdict = check_reply(parsed.calls, item.answer or [], item.functions, ordered=mode == "ordered")
    if not verdict.correct and not parsed.calls and parsed.error and mode != "no_call":
        verdict = Verdict(False, f"no call ({parsed.error})")
    return {
        "category": item.category,
        "id": item.id,
        "line": item.line,
        "correct": verdict.correct,
        "reason": verdict.reason,
        "calls": [c.as_dict() for c in parsed.calls],
        "syntax": parsed.syntax,
        "response": response,
    }


def category_metrics(samples: list[dict[str, Any]], categories: list[str]) -> tuple[dict[str, float], str]:
    """Accuracy (%) per category, `overall` (their plain mean), `replies_with_calls` (%), and a one-line summary."""
    metrics: dict[str, float] = {}
    for category in categories:
        marks = [s["correct"] for s in samples if s["category"] == category]
        metrics[category] = 100.0 * sum(marks) / max(len(marks), 1)
    metrics["overall"] = sum(metrics[c] for c in categories) / len(categories)
    metrics["replies_with_calls"] = 100.0 * sum(bool(s["calls"]) for s in samples) / max(len(samples), 1)
    counts = {c: sum(s["category"] == c for s in samples) for c in categories}
    return metrics, ", ".join(f"{c} {metrics[c]:.1f} (n={counts[c]})" for c in categories)


def evaluate_function_call(task: TaskSpec, handle: ModelHandle) -> TaskOutcome:
    opts: FunctionCallOptions = task.options
    items = load_items(task)
    model, tokenizer = handle.load()
    fmt = prompt_format(tokenizer, opts.prompt_format)
    instruction = opts.instruction or PLAIN_INSTRUCTION
    prefix = opts.reply_prefix or ""
    prompts = [build_prompt(tokenizer, item, fmt, instruction, prefix) for item in items]
    outputs = greedy_generate(
        model, tokenizer, prompts, max_new_tokens=opts.max_new_tokens, batch_size=opts.batch_size, desc=task.name
    )
    embedded = opts.parse == "lenient"
    replies = [prefix + decode(tokenizer, ids) for ids in outputs]
    samples = [score_reply(item, reply, embedded=embedded) for item, reply in zip(items, replies, strict=True)]
    metrics, summary = category_metrics(samples, opts.categories)
    notes = (
        f"overall = mean accuracy over {len(opts.categories)} categories: {summary}; prompt={fmt}, "
        f"parse={opts.parse}, reply_prefix={prefix!r}, greedy, max_new_tokens={opts.max_new_tokens}"
    )
    return TaskOutcome(metrics["overall"], "overall_accuracy", metrics, len(samples), samples, notes=notes)


register_task_type("function_call", FunctionCallOptions, evaluate_function_call)
