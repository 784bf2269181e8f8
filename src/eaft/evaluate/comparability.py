"""Which scores of two eval runs may be compared: a task is the same test only when it was run the same way.

`results.json` stores, per task, its type, backend, settings (the options that change a result: prompt, scoring,
few-shot, choice format, ..., and limit / limit_mode) and the sha256 of each data file it read. Two records of a
task are comparable when all of these match (the data by content, wherever the files lie). `eaft report` refuses a
Δ over a task whose setup differs from the base's unless told `--allow-mismatch`, and then leaves that task out of
the run's Δ; it warns where a run shares no task with the base, or where its averages cover other tasks.
"""

from __future__ import annotations

from typing import Any

from eaft.errors import UsageError

#: Options whose file is compared by content under `data` (a path may differ between machines and suites).
BY_CONTENT = ("few_shot_path",)


class ComparabilityError(UsageError, ValueError):
    """A task whose setup differs between a run and the base; the message names both and what differs."""


def task_setup(record: dict[str, Any]) -> dict[str, Any]:
    """What besides the model changes a task's score, flattened: type, backend, each setting and option, data."""
    settings = record.get("settings") or {}
    setup: dict[str, Any] = {"type": record.get("type"), "backend": record.get("backend")}
    for key, value in settings.items():
        if key == "options" and isinstance(value, dict):
            setup.update({k: v for k, v in value.items() if k not in BY_CONTENT})
        elif key != "type":  # the record's own `type` says it (with the backend for lm-eval tasks)
            setup[key] = value
    data = record.get("data")
    setup["data"] = sorted(data.values()) if isinstance(data, dict) else data
    return setup


def differences(base: dict[str, Any], other: dict[str, Any]) -> list[str]:
    """The setup keys on which two records of one task differ (empty: comparable)."""
    a, b = task_setup(base), task_setup(other)
    return [key for key in dict.fromkeys([*a, *b]) if a.get(key) != b.get(key)]


def mismatches(base: dict[str, Any], run: dict[str, Any]) -> dict[str, list[str]]:
    """task -> differing keys, for each task both runs have whose setup differs."""
    found = {}
    for name, record in run["tasks"].items():
        if name in base["tasks"] and (keys := differences(base["tasks"][name], record)):
            found[name] = keys
    return found


def mismatch_error(base: dict[str, Any], found: dict[str, dict[str, list[str]]]) -> ComparabilityError:
    """One message for every run and task whose setup differs from the base's."""
    parts = [
        f"run {run!r}, task {task!r}: {', '.join(keys)} differ"
        for run, tasks in found.items()
        for task, keys in tasks.items()
    ]
    shown = "; ".join(parts[:4]) + (f"; and {len(parts) - 4} more" if len(parts) > 4 else "")
    return ComparabilityError(
        f"not comparable with the base {base['run']!r}: {shown}. A Δ over such a task compares two different "
        "tests; evaluate every run with the same suite and data, or pass --allow-mismatch to leave these tasks out "
        "of the Δ columns (their scores are then shown marked ≠)"
    )


def left_out_warning(run: str, not_compared: dict[str, list[str]]) -> str:
    """What --allow-mismatch left out of a run's Δ, and why."""
    why = "; ".join(f"{task}: {', '.join(keys)} differ" for task, keys in not_compared.items())
    return f"run {run!r}: {', '.join(not_compared)} left out of its Δ, run unlike the base's ({why})"


def coverage_warnings(base: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """Runs that share no task with the base, or whose averages cover other tasks than the base's."""
    warnings = []
    base_tasks = set(base["tasks"])
    for run in runs:
        tasks = set(run["tasks"])
        if not tasks & base_tasks:
            warnings.append(
                f"run {run['run']!r} shares no task with the base {base['run']!r}: nothing of it can be compared "
                "(its Δ are blank)"
            )
        elif tasks != base_tasks:
            missing, extra = sorted(base_tasks - tasks), sorted(tasks - base_tasks)
            what = "; ".join(
                part
                for part in (
                    f"lacks {', '.join(missing)}" if missing else "",
                    f"adds {', '.join(extra)}" if extra else "",
                )
                if part
            )
            warnings.append(
                f"run {run['run']!r} {what} (against the base): its Target/General avg cover other tasks than the "
                "base's, so compare its Δ columns (over the shared tasks), not its averages"
            )
    return warnings
