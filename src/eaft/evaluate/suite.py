"""Suites: a YAML file grouping tasks into `target` (the domain being learned) and `general` (what must not be
forgotten), plus an optional `extra` group shown in the table but left out of both averages.

```yaml
name: math                      # default: the file name
data_root: $EAFT_DATA           # relative data paths resolve here (default: the YAML's folder)
target:
  - name: gsm8k
    type: generative
    path: gsm8k/test.jsonl
    answer: final
    limit: 200
    lm_eval: gsm8k              # used by `--backend lm-eval`
general:
  - task: tasks/arc_easy.yaml   # a task file; keys given here override it
    limit: 100
```

Entry keys: `name`, `type`, `path`, `task`, `limit`, `limit_mode` (first | spread), `lm_eval`, `lm_eval_metric`,
`lm_eval_fewshot`; every other key is an option of the task type (see `eaft.evaluate.task_types`).
A `task` file is found relative to the suite's folder; a relative `path` or `few_shot_path` resolves against the
`data_root` of the file it is written in, an `lm_eval` YAML path against that file's folder. `lm_eval_include`
(a folder or a list) puts local lm-eval task folders on `--backend lm-eval`'s include path, relative to the suite's
folder (`eaft.evaluate.lm_eval_local`). `$EAFT_DATA` is the benchmark data root (`eaft.data_root`: EAFT_DATA,
`--data-root`, or ../shared/data beside the repository), looked up only when a path needs it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from eaft.data_root import DataRootError
from eaft.evaluate.lm_eval_local import check_spec, default_name, is_yaml_path
from eaft.evaluate.task_types import task_types
from eaft.evaluate.tasks import GROUPS, LIMIT_MODES, TaskError, TaskSpec, parse_options, resolve_path, suggest
from eaft.shipped import find_shipped, not_found_hint

ENTRY_KEYS = ("name", "type", "path", "task", "limit", "limit_mode", "lm_eval", "lm_eval_metric", "lm_eval_fewshot")
SUITE_KEYS = ("name", "data_root", "lm_eval_include", *GROUPS)
NEEDS_PATH = ("multiple_choice", "generative", "ifeval", "function_call")


@dataclass(frozen=True)
class Suite:
    name: str
    source: Path
    tasks: tuple[TaskSpec, ...]
    lm_eval_include: tuple[Path, ...] = ()

    def group(self, name: str) -> list[TaskSpec]:
        return [t for t in self.tasks if t.group == name]


def _load_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise TaskError(f"{path}: no such file")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise TaskError(f"{path}: not valid YAML ({err})") from None
    if not isinstance(data, dict):
        raise TaskError(f"{path}: expected a mapping at the top level")
    return data


def _data_root(data: dict[str, Any], path: Path) -> Callable[[], Path]:
    """The data root of the file at `path`, resolved when first needed (a `$EAFT_DATA` root may be missing)."""
    return lambda: resolve_path(data["data_root"], path.parent) if data.get("data_root") else path.parent


def _resolved_paths(entry: dict[str, Any], root: Callable[[], Path], where: Path) -> dict[str, Any]:
    """`path` and `few_shot_path` made absolute against `root` (the data root of the file `where`)."""
    out = dict(entry)
    try:
        for key in ("path", "few_shot_path"):
            if out.get(key):
                path = resolve_path(out[key], Path())  # `$EAFT_DATA/...`, `~` or `$VARS` may make it absolute
                out[key] = str(path if path.is_absolute() else root() / path)
    except DataRootError as err:
        raise DataRootError(f"{where}: {err}") from None
    return out


def _lm_eval_path(entry: dict[str, Any], folder: Path) -> dict[str, Any]:
    """An `lm_eval` YAML path made absolute against the folder of the file it is written in."""
    if is_yaml_path(entry.get("lm_eval")):
        return {**entry, "lm_eval": str(resolve_path(entry["lm_eval"], folder))}
    return entry


def _merged_entry(entry: dict[str, Any], suite_path: Path, data_root: Callable[[], Path]) -> dict[str, Any]:
    """A suite entry with its referenced task file (if any, relative to the suite's folder) underneath it."""
    merged: dict[str, Any] = {}
    if "task" in entry:
        task_path = resolve_path(entry["task"], suite_path.parent)
        task_data = _load_yaml(task_path)
        if "task" in task_data:
            raise TaskError(f"{task_path}: a task file cannot reference another task file")
        merged = _resolved_paths(
            {k: v for k, v in task_data.items() if k != "data_root"}, _data_root(task_data, task_path), task_path
        )
        merged = _lm_eval_path(merged, task_path.parent)
        merged.setdefault("name", task_path.stem)
    own = _resolved_paths({k: v for k, v in entry.items() if k != "task"}, data_root, suite_path)
    merged.update(_lm_eval_path(own, suite_path.parent))
    return merged


def _limit(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise TaskError(f"{where}: limit must be a positive integer, got {value!r}")
    return value


def build_task(entry: dict[str, Any], group: str, where: str) -> TaskSpec:
    """A TaskSpec from a merged entry (task file keys overridden by the suite's)."""
    kind, types = entry.get("type"), sorted(task_types())
    if kind is None and not entry.get("lm_eval"):
        raise TaskError(f"{where}: a task needs `type` (one of {types}) or an `lm_eval` task name")
    if kind is not None and kind not in types:
        raise TaskError(f"{where}: unknown task type {kind!r}{suggest(str(kind), types)}; valid: {types}")
    if entry.get("lm_eval") is not None:
        check_spec(entry["lm_eval"], where)
    name = entry.get("name") or (default_name(entry["lm_eval"]) if entry.get("lm_eval") else None)
    if not name:
        raise TaskError(f"{where}: a task needs a `name`")
    if kind in NEEDS_PATH and not entry.get("path"):
        raise TaskError(f"{where}: task {name!r} of type {kind} needs `path` (its JSONL file)")
    mode = entry.get("limit_mode", "first")
    if mode not in LIMIT_MODES:
        raise TaskError(f"{where}: limit_mode must be one of {LIMIT_MODES}, got {mode!r}")
    raw_options = {k: v for k, v in entry.items() if k not in ENTRY_KEYS}
    if kind is None and raw_options:
        raise TaskError(f"{where}: options {sorted(raw_options)} need a task `type`")
    options = parse_options(kind, raw_options, f"{where} (task {name!r})") if kind else None
    return TaskSpec(
        name=str(name),
        type=kind,
        group=group,
        path=Path(entry["path"]) if entry.get("path") else None,
        options=options,
        limit=_limit(entry.get("limit"), where),
        limit_mode=mode,
        lm_eval=entry.get("lm_eval"),
        lm_eval_metric=entry.get("lm_eval_metric"),
        lm_eval_fewshot=entry.get("lm_eval_fewshot"),
        source=where,
    )


def load_suite(path: str | Path, *, limit: int | None = None) -> Suite:
    """Parse and validate a suite file (or a shipped suite's name: `eaft.shipped`). `limit` caps every task's item
    count (the smaller limit wins)."""
    path = find_shipped(path, "suites")
    if not path.is_file():
        raise TaskError(f"{path}: no such suite file{not_found_hint('suites')}")
    data = _load_yaml(path)
    for key in data:
        if key not in SUITE_KEYS:
            raise TaskError(f"{path}: unknown key {key!r}{suggest(key, list(SUITE_KEYS))}; valid: {list(SUITE_KEYS)}")
    root = _data_root(data, path)
    tasks: list[TaskSpec] = []
    for group in GROUPS:
        entries = data.get(group) or []
        if not isinstance(entries, list):
            raise TaskError(f"{path}: `{group}` must be a list of tasks")
        for i, entry in enumerate(entries):
            where = f"{path}: {group}[{i}]"
            if not isinstance(entry, dict):
                raise TaskError(f"{where}: expected a mapping, got {entry!r}")
            task = build_task(_merged_entry(entry, path, root), group, where)
            if limit is not None:
                task = dataclasses.replace(task, limit=min(task.limit or limit, limit))
            tasks.append(task)
    include = data.get("lm_eval_include") or []
    include = [include] if isinstance(include, str) else include
    if not isinstance(include, list) or not all(isinstance(p, str) for p in include):
        raise TaskError(f"{path}: lm_eval_include must be a folder or a list of folders, got {include!r}")
    names = [t.name for t in tasks]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise TaskError(f"{path}: task names must be unique, repeated: {duplicates}")
    if not tasks:
        raise TaskError(f"{path}: no tasks (add entries under `target` and/or `general`)")
    folders = tuple(resolve_path(p, path.parent) for p in include)
    return Suite(name=str(data.get("name") or path.stem), source=path, tasks=tuple(tasks), lm_eval_include=folders)
