"""Reading function calls out of a model's reply, without executing anything.

Accepted syntaxes (the first that yields calls wins, tried on: `<tool_call>…</tool_call>` blocks, then fenced
code blocks, then the whole reply, then — last resort, unless `embedded=False` — a JSON value or Python-style
calls embedded in prose):

- JSON: `{"name": ..., "arguments": {...}}` (`parameters` is accepted for `arguments`, and the arguments may be
  a JSON string as in the OpenAI API), a list of those, one per line, the OpenAI `{"type": "function",
  "function": {...}}` wrapper, or `{"tool_calls": [...]}`.
- Python: `func(a=1)`, dotted names `math.factorial(number=5)`, one call per line, or the list form
  `[func(a=1), func2(b=2)]`. Values are read with `ast.literal_eval`; a bare name or dotted name is kept as its
  text (a variable, as BFCL's answers store them), and `true`/`false`/`null` read as JSON would. Anything else
  (positional arguments, arithmetic, nested calls) makes the reply unparseable — it is never evaluated.

A reply that yields no call parses to an empty list with the reason in `error`; nothing here raises.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

MAX_REPLY_CHARS = 20_000  # replies are bounded by max_new_tokens; this only guards the parser against huge input
_TAGGED = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_FENCED = re.compile(r"```[A-Za-z0-9_+-]*[ \t]*\n?(.*?)```", re.DOTALL)
_CALL_START = re.compile(r"[A-Za-z_][\w.]*\(")
_NAME_LITERALS = {"true": True, "false": False, "null": None, "none": None}


@dataclass(frozen=True)
class Call:
    """One function call: its name (dotted names kept) and its keyword arguments."""

    name: str
    arguments: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "arguments": self.arguments}


@dataclass(frozen=True)
class ParsedReply:
    """The calls found in a reply; `syntax` says how they were read (e.g. `json`, `python:fenced`), `error` why
    none were (empty when calls were found)."""

    calls: list[Call]
    syntax: str | None = None
    error: str = ""


class CallSyntaxError(ValueError):
    """Text that looks like a call but cannot be read as one (e.g. a positional argument)."""


def parse_calls(text: str, *, embedded: bool = True) -> ParsedReply:
    """The function calls in `text`; an empty `calls` list when there is none (the reason in `error`).
    `embedded=False` ignores calls inside prose (only tagged or fenced blocks, or the whole reply, count)."""
    if len(text) > MAX_REPLY_CHARS:
        return ParsedReply([], None, f"reply longer than {MAX_REPLY_CHARS} characters")
    errors = []
    for where, chunks in _candidates(text, embedded):
        if where == "embedded" and errors:  # a malformed call, not prose around one: do not dissect it
            break
        try:
            calls, syntax = _parse_chunks(chunks)
        except CallSyntaxError as err:
            errors.append(f"{where}: {err}")
            continue
        if calls:
            return ParsedReply(calls, f"{syntax}:{where}" if where != "reply" else syntax)
    return ParsedReply([], None, errors[0] if errors else "no function call found")


def _candidates(text: str, embedded: bool) -> Iterator[tuple[str, list[str]]]:
    """(where, chunks) in the order they are tried; every chunk of one candidate must parse."""
    tagged = [m.group(1) for m in _TAGGED.finditer(text)]
    if tagged:
        yield "tagged", tagged
    fenced = [m.group(1) for m in _FENCED.finditer(text)]
    if fenced:
        yield "fenced", fenced
    yield "reply", [text]
    if not embedded:
        return
    for chunk in _embedded_json(text):
        yield "embedded", [chunk]
    for line in text.splitlines():
        for chunk in _embedded_python(line):
            if chunk != text.strip():
                yield "embedded", [chunk]


def _embedded_python(line: str) -> Iterator[str]:
    """Python-style calls inside a line of prose: the bracketed list form, then from each `name(` to each `)`."""
    if "[" in line and "]" in line:
        yield line[line.index("[") : line.rindex("]") + 1]
    for start in list(_CALL_START.finditer(line))[:8]:
        ends = [i for i in range(start.end(), len(line)) if line[i] == ")"][:16]
        for end in ends:
            yield line[start.start() : end + 1]


def _embedded_json(text: str) -> list[str]:
    """JSON objects or arrays that start somewhere inside prose (each decoded prefix, as text)."""
    decoder = json.JSONDecoder()
    found, position = [], 0
    while len(found) < 8:
        starts = [i for i in (text.find("{", position), text.find("[", position)) if i >= 0]
        if not starts:
            break
        start = min(starts)
        try:
            _, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            position = start + 1
            continue
        if start > 0 or end < len(text.rstrip()):
            found.append(text[start:end])
        position = end
    return found


def _parse_chunks(chunks: list[str]) -> tuple[list[Call], str]:
    calls: list[Call] = []
    syntaxes = set()
    for chunk in chunks:
        found, syntax = _parse_chunk(chunk.strip())
        calls += found
        syntaxes.add(syntax)
    return calls, "+".join(sorted(syntaxes))


def _parse_chunk(chunk: str) -> tuple[list[Call], str]:
    """Calls from one piece of text: JSON, JSON lines, then Python. Raises CallSyntaxError."""
    if not chunk:
        return [], "empty"
    try:
        return _json_calls(json.loads(chunk)), "json"
    except json.JSONDecodeError:
        pass
    lines = [line for line in chunk.splitlines() if line.strip()]
    if len(lines) > 1:
        try:
            return [c for line in lines for c in _json_calls(json.loads(line))], "json_lines"
        except json.JSONDecodeError:
            pass
    return _python_calls(chunk), "python"


def _json_calls(value: Any) -> list[Call]:
    """Calls from a decoded JSON value; a value of another shape gives no call."""
    if isinstance(value, list):
        return [c for item in value for c in _json_calls(item)]
    if not isinstance(value, dict):
        return []
    if isinstance(value.get("tool_calls"), list):
        return _json_calls(value["tool_calls"])
    if isinstance(value.get("function"), dict):
        value = value["function"]
    name = value.get("name")
    if not isinstance(name, str) or not name:
        return []
    arguments = value.get("arguments", value.get("parameters", {}))
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            raise CallSyntaxError(f"the arguments of {name!r} are a string that is not JSON") from None
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        raise CallSyntaxError(f"the arguments of {name!r} must be an object, got {type(arguments).__name__}")
    return [Call(name, arguments)]


def _python_calls(chunk: str) -> list[Call]:
    """Calls from Python-style text: statements that are each a call, or a list/tuple of calls."""
    try:
        with warnings.catch_warnings():  # e.g. invalid escape sequences in model output
            warnings.simplefilter("ignore")
            tree = ast.parse(chunk, mode="exec")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    calls = []
    for statement in tree.body:
        if not isinstance(statement, ast.Expr):
            return []
        node = statement.value
        items = node.elts if isinstance(node, (ast.List, ast.Tuple)) else [node]
        if not items or not all(isinstance(item, ast.Call) for item in items):
            return []
        calls += [_call_from_node(item) for item in items]
    return calls


def _dotted_name(node: ast.AST) -> str | None:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        parent = _dotted_name(node.value)
        return f"{parent}.{node.attr}" if parent else None
    return None


def _call_from_node(node: ast.Call) -> Call:
    name = _dotted_name(node.func)
    if name is None:
        raise CallSyntaxError(f"cannot read a function name from {ast.unparse(node.func)!r}")
    if node.args:
        raise CallSyntaxError(f"{name}(...) has positional arguments; only keyword arguments can be matched")
    arguments = {}
    for keyword in node.keywords:
        if keyword.arg is None:
            raise CallSyntaxError(f"{name}(...) uses **kwargs unpacking")
        arguments[keyword.arg] = _literal(keyword.value, name)
    return Call(name, arguments)


def _literal(node: ast.AST, function: str) -> Any:
    """A keyword value: a Python literal, JSON's true/false/null, or a (dotted) variable name as text."""
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [_literal(item, function) for item in node.elts]
        return values if isinstance(node, ast.List) else tuple(values)
    if isinstance(node, ast.Dict) and all(key is not None for key in node.keys):
        pairs = [(_literal(k, function), _literal(v, function)) for k, v in zip(node.keys, node.values, strict=True)]
        if all(isinstance(k, (str, int, float, bool)) or k is None for k, _ in pairs):
            return dict(pairs)
    dotted = _dotted_name(node)
    if dotted is not None:
        return _NAME_LITERALS.get(dotted.lower(), dotted) if isinstance(node, ast.Name) else dotted
    raise CallSyntaxError(f"{function}(...) has an argument that is not a literal: {ast.unparse(node)!r}")
