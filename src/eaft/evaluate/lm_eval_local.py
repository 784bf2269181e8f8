"""Local lm-evaluation-harness tasks, read without importing lm-eval: what a suite's `lm_eval:` names, where the
include folders are, and which files a task's scores depend on (for the result cache).

An `lm_eval:` value is one of
- a task, group or tag name: lm-eval's own, or one defined by a YAML file in an include folder;
- a path to a task YAML file (`*.yaml`/`*.yml`, relative to the file it is written in);
- an inline mapping: a task config (`task: ...`) or a group config (`group: ...`), as lm-eval's YAML holds.

Include folders come from `--lm-eval-include`, the suite's `lm_eval_include` and `EAFT_LM_EVAL_INCLUDE`
(os.pathsep-separated), in that order; lm-eval scans them recursively for task YAMLs.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from eaft.evaluate.tasks import TaskError

INCLUDE_ENV = "EAFT_LM_EVAL_INCLUDE"
YAML_SUFFIXES = (".yaml", ".yml")


def is_yaml_path(spec: Any) -> bool:
    return isinstance(spec, str) and spec.endswith(YAML_SUFFIXES)


def check_spec(spec: Any, where: str) -> None:
    """A suite's `lm_eval:` value must be a name, a YAML path or a mapping with `task` or `group`."""
    if isinstance(spec, Mapping):
        if not isinstance(spec.get("task"), str) and not isinstance(spec.get("group"), str):
            raise TaskError(f"{where}: an inline `lm_eval` config needs a `task` (or `group`) name, got {dict(spec)}")
    elif not isinstance(spec, str) or not spec:
        raise TaskError(f"{where}: `lm_eval` must be a task name, a task YAML path or a task config, got {spec!r}")


def default_name(spec: str | Mapping[str, Any]) -> str:
    """The eaft task name when the suite gives none: the lm-eval name, or the YAML file's stem."""
    if isinstance(spec, Mapping):
        return str(spec.get("group") or spec.get("task"))
    return Path(spec).stem if is_yaml_path(spec) else spec


def task_name(spec: str | Mapping[str, Any]) -> str:
    """The name lm-eval reports a task's results under: its config's `task` (or `group`) for a YAML path or an
    inline config, else the name itself."""
    config = read_task_yaml(Path(spec), []) if is_yaml_path(spec) else spec
    if isinstance(config, Mapping):
        name = config.get("group") if isinstance(config.get("group"), str) else config.get("task")
        if not isinstance(name, str):
            raise TaskError(f"{spec if is_yaml_path(spec) else 'an inline lm_eval config'}: no `task` or `group` name")
        return name
    return config


def include_folders(*sources: Iterable[str | Path]) -> tuple[Path, ...]:
    """The include folders: each source's entries in order, then EAFT_LM_EVAL_INCLUDE's; duplicates dropped.
    An entry that is not a folder is an error naming it."""
    env = [p for p in os.environ.get(INCLUDE_ENV, "").split(os.pathsep) if p]
    out: list[Path] = []
    for entry in [e for source in sources for e in source] + env:
        path = Path(os.path.expandvars(os.path.expanduser(str(entry)))).resolve()
        if not path.is_dir():
            raise TaskError(f"lm-eval include path {entry} is not a folder (a folder of task YAMLs is expected)")
        if path not in out:
            out.append(path)
    return tuple(out)


class _TaskYamlLoader(yaml.SafeLoader):
    """lm-eval's YAML: `!function module.name` tags are read as `Function` markers, not imported."""


@dataclass(frozen=True)
class Function:
    spec: str


_TaskYamlLoader.add_constructor("!function", lambda loader, node: Function(loader.construct_scalar(node)))


def _functions(value: Any) -> Iterable[str]:
    if isinstance(value, Function):
        yield value.spec
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _functions(item)
    elif isinstance(value, list):
        for item in value:
            yield from _functions(item)


def read_task_yaml(path: Path, files: list[Path]) -> dict[str, Any]:
    """An lm-eval task YAML with the files it `include`s merged under it, as lm-eval merges them. Every file read
    (the YAMLs, and the Python modules beside them that its `!function`s name) is appended to `files`."""
    path = path.expanduser().resolve()
    if path in files:
        return {}
    files.append(path)
    try:
        data = yaml.load(path.read_text(encoding="utf-8"), Loader=_TaskYamlLoader)  # noqa: S506 (a SafeLoader)
    except (OSError, yaml.YAMLError) as err:
        raise TaskError(f"{path}: cannot read this lm-eval task ({err})") from None
    if not isinstance(data, dict):
        raise TaskError(f"{path}: an lm-eval task YAML must hold a mapping")
    for spec in _functions(data):
        module = path.parent / (spec.rpartition(".")[0].replace(".", "/") + ".py")
        if module.is_file() and module.resolve() not in files:
            files.append(module.resolve())
    includes = data.pop("include", None) or []
    merged: dict[str, Any] = {}
    for include in includes if isinstance(includes, list) else [includes]:
        merged.update(read_task_yaml(path.parent / str(include), files))
    merged.update(data)
    return merged


@dataclass
class LocalIndex:
    """The tasks, groups and tags the include folders define: name -> YAML file (tags: name -> task names)."""

    yamls: dict[str, Path] = field(default_factory=dict)
    tags: dict[str, list[str]] = field(default_factory=dict)

    @classmethod
    def build(cls, include: Sequence[Path]) -> LocalIndex:
        index = cls()
        for root in include:
            for path in sorted(root.rglob("*.yaml")):
                try:
                    config = read_task_yaml(path, [])
                except TaskError:
                    continue  # lm-eval skips what it cannot read, too
                name = config.get("group") if isinstance(config.get("group"), str) else config.get("task")
                if not isinstance(name, str):
                    continue
                index.yamls[name] = path  # a later folder wins, as in lm-eval
                tags = config.get("tag") or []
                for tag in [tags] if isinstance(tags, str) else tags:
                    index.tags.setdefault(str(tag), []).append(name)
        return index


def _data_files(config: Mapping[str, Any]) -> list[Path]:
    """The local files behind a task config's data set: `dataset_path` when it is a local file or folder, and
    `dataset_kwargs.data_files` (relative to that folder, else the working directory, as `datasets` resolves)."""
    out: list[Path] = []
    root = Path.cwd()
    dataset = config.get("dataset_path")
    local = Path(os.path.expanduser(str(dataset))) if isinstance(dataset, str) else None
    if local is not None and local.is_file():
        out.append(local)
    elif local is not None and local.is_dir():
        root = local
        out += sorted(p for p in local.rglob("*") if p.is_file() and not p.relative_to(local).parts[0].startswith("."))
    kwargs = config.get("dataset_kwargs") or {}
    entries = kwargs.get("data_files") if isinstance(kwargs, Mapping) else None
    if isinstance(entries, Mapping):
        entries = list(entries.values())
    for entry in entries if isinstance(entries, list) else [entries] if entries else []:
        for item in entry if isinstance(entry, list) else [entry]:
            path = root / os.path.expanduser(str(item))
            out += [Path(p) for p in sorted(glob.glob(str(path)))] if glob.has_magic(str(path)) else [path]
    return out


def walk(spec: Any, index: LocalIndex, files: list[Path], seen: set[str]) -> bool:
    """Append the files `spec`'s scores depend on (local YAMLs, modules, data files) to `files`; True when every
    task it names is local (lm-eval's own tasks are then not needed)."""
    local = True
    if isinstance(spec, str):
        if spec in seen:
            return True
        seen.add(spec)
        if spec in index.tags:
            return all([walk(name, index, files, seen) for name in index.tags[spec]])
        if not is_yaml_path(spec) and spec not in index.yamls:
            return False  # one of lm-eval's own: its version keys it, its data come from the hub
        config: Mapping[str, Any] = read_task_yaml(Path(spec) if is_yaml_path(spec) else index.yamls[spec], files)
    elif isinstance(spec, Mapping):
        config = spec
    else:
        return True  # nothing named
    files += [p for p in _data_files(config) if p not in files]
    members = config.get("task") if "group" in config else None
    for member in members if isinstance(members, list) else []:
        if isinstance(member, Mapping) and "group" not in member:
            files += [p for p in _data_files(member) if p not in files]
            member = member.get("task")
        local = walk(member, index, files, seen) and local
    return local
