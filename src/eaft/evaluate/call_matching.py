"""Matching parsed calls against BFCL possible answers, the AST way (no call is executed).

A possible answer is a list of expected calls, each `{function_name: {param: [allowed values]}}`. One parsed call
matches an expected call when:

- the function name is the same (dotted names compared as written);
- every parameter the function documentation marks `required` is given;
- every given parameter is documented and appears in the answer (otherwise: unknown parameter);
- every answer parameter is given, unless `""` is among its allowed values (an optional parameter);
- each given value has the documented type and equals one allowed value.

Types and coercion follow BFCL's checker: types are exact (a bool is not an integer); an int is accepted where
a float is documented (here also inside arrays, where BFCL is stricter); a tuple counts as an array; a value of
the type the allowed values have (e.g. a variable name written as a string, or None) is compared with them as it
is. Strings compare after normalization: case, whitespace and the characters `,./-_*^` are ignored and `'`
equals `"`; the same holds for strings inside arrays and dicts. Arrays compare element by element in order.
A dict matches an allowed dict whose keys each map to allowed values (nested the same way), with optional keys
marked by `""`; an array of dicts matches element by element.

A reply matches an answer with as many calls as the answer; in order for the non-parallel categories (where the
answer has one call), in any order for the parallel ones (a perfect matching is searched, where BFCL pairs
greedily and can miss one).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from eaft.evaluate.call_parsing import Call

#: BFCL's documented type names (and their JSON-schema spellings) -> Python type; "any" has no type check.
PY_TYPES: dict[str, type] = {
    "string": str,
    "integer": int,
    "float": float,
    "number": float,
    "boolean": bool,
    "array": list,
    "tuple": list,
    "dict": dict,
    "object": dict,
}
_IGNORED_IN_STRINGS = re.compile(r"[\s,./\-_*^]")


@dataclass(frozen=True)
class Verdict:
    """Whether a reply is right, and if not, why (first failure found)."""

    correct: bool
    reason: str = ""


def normalize_string(text: str) -> str:
    """A string as BFCL compares it: lower case, no whitespace or `,./-_*^`, single quotes as double."""
    return _IGNORED_IN_STRINGS.sub("", text).lower().replace("'", '"')


def values_equal(value: Any, allowed: Any) -> bool:
    """`value` equals one allowed alternative: strings normalized, bools only equal bools, int == float, arrays
    element-wise in order, dicts in the answer's nested form (`{key: [alternatives]}`) or plain."""
    if isinstance(value, bool) or isinstance(allowed, bool):
        return type(value) is type(allowed) and value == allowed
    if isinstance(value, str) and isinstance(allowed, str):
        return normalize_string(value) == normalize_string(allowed)
    if isinstance(value, (list, tuple)) and isinstance(allowed, (list, tuple)):
        return len(value) == len(allowed) and all(values_equal(v, a) for v, a in zip(value, allowed, strict=True))
    if isinstance(value, dict) and isinstance(allowed, dict):
        return dict_matches(value, allowed)
    if isinstance(value, (int, float)) and isinstance(allowed, (int, float)):
        return value == allowed
    return type(value) is type(allowed) and value == allowed


def dict_matches(value: Mapping[str, Any], allowed: Mapping[str, Any]) -> bool:
    """A dict against an answer dict: no unknown key, no missing key unless optional (`""` allowed), each value
    among that key's alternatives (a non-list answer value is one alternative)."""
    for key, item in value.items():
        if key not in allowed:
            return False
        options = allowed[key] if isinstance(allowed[key], list) else [allowed[key]]
        if not any(values_equal(item, option) for option in options):
            return False
    return all(key in value or (isinstance(opts, list) and "" in opts) for key, opts in allowed.items())


def _coerce(value: Any, schema: Mapping[str, Any]) -> Any:
    """Tuples as lists, ints as floats where a float is documented (one level into arrays)."""
    kind = schema.get("type")
    if isinstance(value, tuple):
        value = list(value)
    if PY_TYPES.get(kind) is float and type(value) is int:
        return float(value)
    if isinstance(value, list) and isinstance(schema.get("items"), Mapping):
        return [_coerce(item, schema["items"]) for item in value]
    return value


def _type_ok(value: Any, schema: Mapping[str, Any]) -> bool:
    expected = PY_TYPES.get(schema.get("type"))
    if expected is None:
        return True
    if type(value) is not expected:
        return False
    items = schema.get("items")
    if expected is list and isinstance(items, Mapping) and PY_TYPES.get(items.get("type")) not in (None, list):
        return all(type(item) is PY_TYPES[items["type"]] for item in value)
    return True


def check_value(value: Any, allowed: Sequence[Any], schema: Mapping[str, Any]) -> str:
    """'' when `value` is acceptable for a parameter documented by `schema` with `allowed` alternatives, else why."""
    value = _coerce(value, schema)
    if not _type_ok(value, schema):
        answer_type = next((type(a) for a in allowed if a != ""), None)
        if answer_type is None or type(value) is not answer_type:  # not a variable written in the answer's type
            return f"wrong type: expected {schema.get('type')}, got {type(value).__name__} {value!r}"
    if any(values_equal(value, option) for option in allowed):
        return ""
    return f"value {value!r} not among {list(allowed)!r}"


def find_doc(name: str, functions: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The documentation of function `name`; with a single documented function, that one whatever its name (BFCL's
    simple checker expects the documented name: a few answers spell it differently)."""
    for doc in functions:
        if doc.get("name") == name:
            return doc
    return functions[0] if len(functions) == 1 else None


def check_call(call: Call, expected: Mapping[str, Mapping[str, list]], doc: Mapping[str, Any]) -> str:
    """'' when `call` matches one expected call `{name: {param: [allowed]}}` given its documentation `doc`, else
    why. The expected name is the documented one."""
    ((_, answer),) = expected.items()
    name = doc["name"]
    if call.name != name:
        return f"function {call.name!r} instead of {name!r}"
    parameters = doc.get("parameters") or {}
    properties = parameters.get("properties") or {}
    for param in parameters.get("required") or []:
        if param not in call.arguments:
            return f"{name}: missing required parameter {param!r}"
    for param, value in call.arguments.items():
        if param not in properties or param not in answer:
            return f"{name}: unknown parameter {param!r}"
        problem = check_value(value, answer[param], properties[param])
        if problem:
            return f"{name}.{param}: {problem}"
    for param, allowed in answer.items():
        if param not in call.arguments and "" not in allowed:
            return f"{name}: missing parameter {param!r} (its answer has no optional marker)"
    return ""


def check_reply(
    calls: Sequence[Call],
    answer: Sequence[Mapping[str, Mapping[str, list]]],
    functions: Sequence[Mapping[str, Any]],
    *,
    ordered: bool,
) -> Verdict:
    """A parsed reply against a possible answer; `ordered=False` for the parallel categories."""
    if not calls:
        return Verdict(False, "no call")
    if len(calls) != len(answer):
        return Verdict(False, f"{len(calls)} call(s), expected {len(answer)}")
    docs = []
    for expected in answer:
        doc = find_doc(next(iter(expected)), functions)
        if doc is None:
            raise ValueError(f"the answer calls {next(iter(expected))!r}, which the functions do not document")
        docs.append(doc)
    if ordered:
        for call, expected, doc in zip(calls, answer, docs, strict=True):
            problem = check_call(call, expected, doc)
            if problem:
                return Verdict(False, problem)
        return Verdict(True)
    problems = [[check_call(call, expected, doc) for call in calls] for expected, doc in zip(answer, docs, strict=True)]
    if _perfect_matching([[not p for p in row] for row in problems]):
        return Verdict(True)
    for doc, row in zip(docs, problems, strict=True):
        if all(row):
            closest = next((p for p in row if p.startswith(f"{doc['name']}")), row[0])
            return Verdict(False, f"no call matches the expected {doc['name']} call ({closest})")
    return Verdict(False, "the calls cannot be paired one to one with the expected calls")


def _perfect_matching(fits: list[list[bool]]) -> bool:
    """Whether every expected call (row) can get its own parsed call (column); augmenting paths."""
    owner: dict[int, int] = {}

    def place(row: int, seen: set[int]) -> bool:
        for column, fit in enumerate(fits[row]):
            if fit and column not in seen:
                seen.add(column)
                if column not in owner or place(owner[column], seen):
                    owner[column] = row
                    return True
        return False

    return all(place(row, set()) for row in range(len(fits)))


def check_no_call(calls: Sequence[Call]) -> Verdict:
    """Irrelevance: right when the reply makes no call."""
    return Verdict(not calls, "" if not calls else f"made {len(calls)} call(s) where none was relevant")


def check_some_call(calls: Sequence[Call]) -> Verdict:
    """Relevance (BFCL's live_relevance): right when the reply makes at least one call."""
    return Verdict(bool(calls), "" if calls else "no call where one was relevant")
