"""The task-type registry, as the objectives have one: a task type is one module that declares its options
dataclass and its `evaluate`, and registers them here with one line.

Adding a type: a module in `eaft/evaluate/` ending in `register_task_type("name", NameOptions, evaluate_name)`,
and its name in `MODULES`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The modules that register the shipped task types (imported when a type is first looked up).
MODULES = ("multiple_choice", "generative", "ifeval", "self_consistency", "function_call", "reference_likelihood")


@dataclass(frozen=True)
class TaskType:
    """`evaluate(task, handle)` -> TaskOutcome, or `evaluate(task, handle, cache)` when `uses_cache`."""

    name: str
    options: type
    evaluate: Callable[..., Any]
    uses_cache: bool = False


_REGISTRY: dict[str, TaskType] = {}


def register_task_type(name: str, options: type, evaluate: Callable[..., Any], *, uses_cache: bool = False) -> None:
    if name in _REGISTRY and _REGISTRY[name].evaluate is not evaluate:
        raise ValueError(f"task type {name!r} is registered twice")
    _REGISTRY[name] = TaskType(name, options, evaluate, uses_cache)


def task_types() -> dict[str, TaskType]:
    """Every registered task type, by name."""
    for module in MODULES:
        importlib.import_module(f"eaft.evaluate.{module}")
    return dict(_REGISTRY)


def task_type(name: str) -> TaskType:
    types = task_types()
    if name not in types:
        raise KeyError(f"unknown task type {name!r}; valid: {sorted(types)}")
    return types[name]
