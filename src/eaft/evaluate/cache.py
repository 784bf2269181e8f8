"""Result caching keyed on content: a re-run with the same model, adapter, data and settings costs nothing.

A local model or adapter folder is identified by the SHA-256 of the files directly in it (weights, config,
tokenizer; sub-folders such as checkpoints are ignored). A hub id that is not a local folder is identified by
its name only. File hashes are memoized by (path, size, mtime) so an unchanged 500 MB folder is hashed once.
Entries live under `$EAFT_CACHE/eval/` (default ~/.cache/eaft/eval) and are written atomically.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from eaft.evaluate.tasks import TaskSpec, resolve_path
from eaft.io import write_json_atomic
from eaft.models import cache_root, default_model_path, is_default

#: Bump when a change to scoring code makes old cached results wrong.
CACHE_VERSION = 2  # 2: self_consistency samples carry their token counts (the intervals need them)


def _memo_path() -> Path:
    return cache_root() / "eval" / "file_hashes.json"


def file_sha256(path: Path, memo: dict[str, Any] | None = None) -> str:
    """SHA-256 of a file's bytes, reused from `memo` while its size and mtime are unchanged."""
    stat = path.stat()
    key = str(path.resolve())
    stamp = [stat.st_size, stat.st_mtime_ns]
    if memo is not None and key in memo and memo[key][:2] == stamp:
        return memo[key][2]
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    if memo is not None:
        memo[key] = [*stamp, digest.hexdigest()]
    return digest.hexdigest()


def folder_sha256(folder: Path) -> str:
    """SHA-256 over the names and contents of the files directly in `folder`."""
    memo_file = _memo_path()
    try:
        memo = json.loads(memo_file.read_text()) if memo_file.is_file() else {}
    except (OSError, json.JSONDecodeError):
        memo = {}
    before = dict(memo)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")):
        digest.update(f"{path.name}\0{file_sha256(path, memo)}\n".encode())
    if memo != before:
        write_json_atomic(memo_file, memo)
    return digest.hexdigest()


def model_identity(model: str | None, adapter: str | None = None, dtype: str = "float32") -> dict[str, Any]:
    """What makes a model's scores what they are: its folder hash (or hub name), its adapter's, the dtype."""
    path = default_model_path() if is_default(model) else Path(str(model))
    identity: dict[str, Any] = {"dtype": str(dtype)}
    if path.is_dir():
        identity["model_sha256"] = folder_sha256(path)
    else:
        identity["model_name"] = str(model)
    if adapter is not None:
        if not Path(adapter).is_dir():
            raise FileNotFoundError(f"adapter folder {adapter!r} does not exist")
        identity["adapter_sha256"] = folder_sha256(Path(adapter))
    return identity


def data_files(task: TaskSpec) -> list[Path]:
    if task.type == "function_call":  # a folder of per-category question and answer files
        from eaft.evaluate.function_call import category_files

        return category_files(task)
    files = [task.path] if task.path is not None else []
    few_shot = getattr(task.options, "few_shot_path", None)
    if few_shot and getattr(task.options, "few_shot", 0):
        files.append(resolve_path(few_shot, task.path.parent))
    return files


def digest(payload: Any) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


class ResultCache:
    """Task results by key; `enabled=False` makes every lookup miss (entries are still written)."""

    def __init__(self, root: Path | None = None, *, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else cache_root() / "eval"
        self.enabled = enabled

    def task_key(
        self,
        identity: dict[str, Any],
        task: TaskSpec,
        backend: str,
        extra: Any = None,
        *,
        lm_eval_include: Sequence[Path] = (),
    ) -> str:
        """The key of a task's result. Under lm-eval: the task's spec, limit, few-shot count and metric, lm-eval's
        version, and the content of a local task's YAML files, modules and data files (`lm_eval_include` is where
        its name is looked up)."""
        if backend == "native":
            settings = task.settings()
            files = {str(i): file_sha256(p) for i, p in enumerate(data_files(task))}
        else:
            from eaft.evaluate.lm_eval_backend import lm_eval_version, task_files

            settings = {
                "lm_eval": task.lm_eval,
                "limit": task.limit,
                "fewshot": task.lm_eval_fewshot,
                "metric": task.lm_eval_metric,
                "lm_eval_version": lm_eval_version(),
            }
            sources = task_files(task, lm_eval_include)
            files = {str(i): file_sha256(p) if p.is_file() else None for i, p in enumerate(sources)}
        return digest(
            {
                "v": CACHE_VERSION,
                "identity": identity,
                "backend": backend,
                "settings": settings,
                "files": files,
                "extra": extra,
            }
        )

    def _path(self, kind: str, key: str) -> Path:
        return self.root / kind / f"{key}.json"

    def get(self, key: str, kind: str = "results") -> dict[str, Any] | None:
        path = self._path(kind, key)
        if not self.enabled or not path.is_file():
            return None
        return json.loads(path.read_text(encoding="utf-8"))

    def put(self, key: str, record: dict[str, Any], kind: str = "results") -> None:
        write_json_atomic(self._path(kind, key), record)
