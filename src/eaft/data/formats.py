"""Reading SFT datasets and normalizing every row to OpenAI-style messages.

Supported row formats (detected from the first row's keys unless `format=` names one):

- `alpaca`: `instruction`, optional `input` (appended to the instruction after a blank line), `output`,
  optional `system` and `history` (a list of `[user, assistant]` pairs that precede the instruction).
- `sharegpt`: `conversations` (or `messages`) holding `{"from": ..., "value": ...}` turns; roles `human`/`user`,
  `gpt`/`assistant`, `system`, `function_call` (an assistant turn), `observation`/`tool` (a tool result);
  optional row-level `system`.
- `messages`: `messages` holding OpenAI `{"role", "content"}` turns; assistant `tool_calls` and `tool` role
  messages are kept as they are.
- `prompt_completion`: `prompt` and `completion`, each a string or a list of messages; optional `system`.

Every conversation comes out as `[{"role": "system"|"user"|"assistant"|"tool", "content": str, ...}, ...]` with at
least one assistant turn.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eaft.errors import UsageError
from eaft.io import DuplicateKeys, json_error

FORMATS = ("alpaca", "sharegpt", "messages", "prompt_completion")
ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "system": "system",
    "function_call": "assistant",
    "observation": "tool",
    "tool": "tool",
    "function": "tool",
}
FORMAT_FIELDS = {
    "alpaca": "instruction, output (and optional input, system, history)",
    "sharegpt": "conversations: [{from, value}, ...] (and optional system)",
    "messages": "messages: [{role, content}, ...]",
    "prompt_completion": "prompt, completion (strings or message lists)",
}
Row = dict[str, Any]
Messages = list[dict[str, Any]]


class DataError(UsageError, ValueError):
    """Bad input data; the message names the file and line (or row, counted from 1) and what was expected."""


def read_rows(path: Path) -> Iterator[tuple[str, Row]]:
    """(location, row) pairs of a JSON, JSONL or parquet file; location is `file:line` or `file[row i]`."""
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _read_parquet(path)
    elif suffix in (".jsonl", ".ndjson"):
        yield from _read_jsonl(path)
    elif suffix == ".json":
        yield from _read_json(path)
    else:
        raise DataError(f"{path}: unsupported file type {suffix!r} (expected .json, .jsonl or .parquet)")


def _read_jsonl(path: Path) -> Iterator[tuple[str, Row]]:
    from eaft.io import JsonlError, read_jsonl

    try:
        for lineno, row in read_jsonl(path):
            yield f"{path}:{lineno}", row
    except JsonlError as err:
        raise DataError(str(err)) from None


def _read_json(path: Path) -> Iterator[tuple[str, Row]]:
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark is accepted
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte offset {err.start}); save the file as UTF-8") from None
    try:
        data = json.loads(text, object_pairs_hook=DuplicateKeys(path))
    except json.JSONDecodeError as err:
        if text.lstrip().startswith("{") and "\n" in text.strip():
            yield from _read_jsonl(path)  # a JSON-lines file named .json (common on the hub)
            return
        raise DataError(f"{path}:{err.lineno}: malformed JSON ({json_error(err)})") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of rows (or JSON lines), got {type(data).__name__}")
    for index, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}[row {index}]: expected a JSON object, got {type(row).__name__}")
        yield f"{path}[row {index}]", row


def _read_parquet(path: Path) -> Iterator[tuple[str, Row]]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable parquet file ({err})") from None
    for index, row in enumerate(table.to_pylist(), start=1):
        yield f"{path}[row {index}]", row


def detect_format(row: Row, where: str) -> str:
    """The format of a row from its keys."""
    if "conversations" in row:
        return "sharegpt"
    if "messages" in row:
        turns = row["messages"]
        if isinstance(turns, list) and turns and isinstance(turns[0], dict) and "from" in turns[0]:
            return "sharegpt"
        return "messages"
    if "instruction" in row:
        return "alpaca"
    if "prompt" in row and "completion" in row:
        return "prompt_completion"
    expected = "; ".join(f"{name}: {fields}" for name, fields in FORMAT_FIELDS.items())
    raise DataError(f"{where}: cannot tell the format from the keys {sorted(row)}; expected one of: {expected}")


def _field(row: Row, key: str, fmt: str, where: str, kind: type | tuple[type, ...] = str) -> Any:
    if key not in row or row[key] is None:
        raise DataError(f"{where}: missing field {key!r} (format {fmt} expects {FORMAT_FIELDS[fmt]})")
    value = row[key]
    if not isinstance(value, kind):
        names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
        raise DataError(f"{where}: field {key!r} must be {names}, got {type(value).__name__}")
    return value


def _system(row: Row, where: str) -> Messages:
    system = row.get("system")
    if system in (None, ""):
        return []
    if not isinstance(system, str):
        raise DataError(f"{where}: field 'system' must be a string, got {type(system).__name__}")
    return [{"role": "system", "content": system}]


def alpaca_messages(row: Row, where: str, *, llamafactory: bool = False) -> Messages:
    instruction = _field(row, "instruction", "alpaca", where)
    output = _field(row, "output", "alpaca", where)
    extra = row.get("input") or ""
    if not isinstance(extra, str):
        raise DataError(f"{where}: field 'input' must be a string, got {type(extra).__name__}")
    messages = _system(row, where)
    for turn in row.get("history") or []:
        if not (isinstance(turn, (list, tuple)) and len(turn) == 2 and all(isinstance(t, str) for t in turn)):
            raise DataError(f"{where}: field 'history' must be a list of [user, assistant] string pairs")
        messages += [{"role": "user", "content": turn[0]}, {"role": "assistant", "content": turn[1]}]
    if llamafactory:  # LLaMA-Factory joins the non-empty parts with one newline
        prompt = "\n".join(part for part in (instruction, extra) if part)
    else:
        prompt = f"{instruction}\n\n{extra}" if extra else instruction
    return messages + [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def sharegpt_messages(row: Row, where: str) -> Messages:
    key = "conversations" if "conversations" in row else "messages"
    turns = _field(row, key, "sharegpt", where, list)
    messages = _system(row, where)
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or "from" not in turn or "value" not in turn:
            raise DataError(f"{where}: {key}[{index}] needs the fields 'from' and 'value' (format sharegpt)")
        role = SHAREGPT_ROLES.get(str(turn["from"]).lower())
        if role is None:
            raise DataError(
                f"{where}: {key}[{index}] has unknown role from={turn['from']!r} (known: {', '.join(SHAREGPT_ROLES)})"
            )
        if not isinstance(turn["value"], str):
            raise DataError(f"{where}: {key}[{index}].value must be a string, got {type(turn['value']).__name__}")
        messages.append({"role": role, "content": turn["value"]})
    return messages


def openai_messages(turns: Any, where: str, key: str = "messages") -> Messages:
    if not isinstance(turns, list):
        raise DataError(f"{where}: field {key!r} must be a list of {{role, content}} messages")
    messages: Messages = []
    for index, turn in enumerate(turns):
        if not isinstance(turn, dict) or "role" not in turn:
            raise DataError(f"{where}: {key}[{index}] needs the field 'role' (format messages: {{role, content}})")
        role = turn["role"]
        if role not in ROLES:
            raise DataError(f"{where}: {key}[{index}] has unknown role {role!r} (known: {', '.join(ROLES)})")
        content = turn.get("content")
        if content is None and not turn.get("tool_calls"):
            raise DataError(f"{where}: {key}[{index}] needs the field 'content' (or 'tool_calls' for an assistant)")
        if content is not None and not isinstance(content, str):
            raise DataError(f"{where}: {key}[{index}].content must be a string, got {type(content).__name__}")
        message = {"role": role, "content": content or ""}
        for extra in ("tool_calls", "tool_call_id", "name"):
            if turn.get(extra) is not None:
                message[extra] = turn[extra]
        messages.append(message)
    return messages


def messages_messages(row: Row, where: str) -> Messages:
    return _system(row, where) + openai_messages(_field(row, "messages", "messages", where, list), where)


def prompt_completion_messages(row: Row, where: str) -> Messages:
    parts: Messages = _system(row, where)
    for key, role in (("prompt", "user"), ("completion", "assistant")):
        value = _field(row, key, "prompt_completion", where, (str, list))
        parts += [{"role": role, "content": value}] if isinstance(value, str) else openai_messages(value, where, key)
    return parts


CONVERTERS = {
    "alpaca": alpaca_messages,
    "sharegpt": sharegpt_messages,
    "messages": messages_messages,
    "prompt_completion": prompt_completion_messages,
}


def row_to_messages(row: Row, fmt: str, where: str, *, compat: str = "eaft") -> Messages:
    """One row as a normalized conversation; a conversation without an assistant turn is an error.

    Under `compat="llamafactory"` an alpaca `input` follows the instruction after one newline, as in LLaMA-Factory.
    """
    if fmt == "alpaca" and compat == "llamafactory":
        messages = alpaca_messages(row, where, llamafactory=True)
    else:
        messages = CONVERTERS[fmt](row, where)
    if not any(m["role"] == "assistant" for m in messages):
        raise DataError(f"{where}: the conversation has no assistant turn, so nothing would be trained")
    return messages
