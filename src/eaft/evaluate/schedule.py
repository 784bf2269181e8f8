"""Evaluation schedules along a training run: at which optimizer steps a checkpoint's scores are read.

Learning is fastest at the start of fine-tuning, so an even schedule (every N steps) leaves the early path, where
most of the target is learnt, to one straight segment from the base. A schedule is one of:

- a list of steps, e.g. `[1, 2, 3, 4, 6, 9, 13, 18, 24]` (`[]`: the last step only);
- `geometric` or `geometric:N`: N points (default 9) spaced geometrically from step 1 to the run's last step,
  each at least one step after the one before (for 24 steps: 1, 2, 3, 4, 5, 7, 11, 16, 24);
- `every:N`: every N steps (the run's last step is always added by the caller).
"""

from __future__ import annotations

from typing import Any

GEOMETRIC_POINTS = 9


class ScheduleError(ValueError):
    """A malformed schedule; the message names what was expected."""


EXPECTED = (
    "a list of positive step numbers ([] for the last step only), 'geometric', 'geometric:N' (N >= 2 points) "
    "or 'every:N'"
)


def parse_schedule(value: Any, where: str) -> list[int] | str:
    """A schedule as written (list or string), checked; lists come back sorted without repeats."""
    if isinstance(value, list):
        if not all(isinstance(s, int) and not isinstance(s, bool) and s > 0 for s in value):
            raise ScheduleError(f"{where}: expected {EXPECTED}, got {value!r}")
        return sorted(set(value))
    if isinstance(value, str):
        kind, _, count = value.strip().partition(":")
        if kind == "geometric" and (not count or _int(count, 2) is not None):
            return value.strip()
        if kind == "every" and _int(count, 1) is not None:
            return value.strip()
    raise ScheduleError(f"{where}: expected {EXPECTED}, got {value!r}")


def _int(text: str, least: int) -> int | None:
    try:
        number = int(text)
    except ValueError:
        return None
    return number if number >= least else None


def geometric_steps(total: int, points: int = GEOMETRIC_POINTS) -> list[int]:
    """`points` steps spaced geometrically over [1, total], strictly increasing, ending at `total`."""
    if total < 1:
        return []
    steps: list[int] = []
    for i in range(points):
        ideal = total ** (i / (points - 1))
        step = max(round(ideal), steps[-1] + 1 if steps else 1)
        if step >= total:
            break
        steps.append(step)
    return [*steps, total]


def resolve_schedule(schedule: list[int] | str, total: int) -> list[int]:
    """The steps of `schedule` for a run of `total` optimizer steps: those within the run, and `total` itself."""
    if isinstance(schedule, list):
        steps = [s for s in schedule if s < total]
    else:
        kind, _, count = schedule.partition(":")
        if kind == "geometric":
            steps = geometric_steps(total, int(count) if count else GEOMETRIC_POINTS)[:-1]
        else:
            every = int(count)
            steps = list(range(every, total, every))
    return sorted(set(steps)) + ([total] if total >= 1 else [])


def describe(steps: list[int]) -> str:
    """`1, 2, 3, ... 24`: the resolved steps in one short line for the log."""
    shown = ", ".join(str(s) for s in steps[:12])
    return shown + (f", ... ({len(steps)} points)" if len(steps) > 12 else "")
