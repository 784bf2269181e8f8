"""Shared file I/O: atomic writes with normal permissions, and one JSONL reader whose errors name file and line.

Every output of `eaft train | eval | analyze | report | experiment` goes through these writers: a file appears
whole or not at all (written to a temporary name in the same folder, then renamed), with the permissions any
file of the process gets (0644 under umask 022; `mkstemp` alone would leave 0600, and so does safetensors).
A folder written by `atomic_dir` appears whole too, replacing an earlier one with all its files: nothing of an
earlier analysis or evaluation survives beside a new one.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eaft.errors import EaftError, UsageError

logger = logging.getLogger(__name__)
PARTIAL = ".partial-"  # atomic_dir's temporary folder: `.<name>.partial-XXXX` beside its target
_duplicates_reported: set[str] = set()


class JsonlError(EaftError, ValueError):
    """A JSONL file that cannot be read as one JSON object per line; the message names the file and line."""


class OutputFolderError(UsageError, ValueError):
    """An output folder that cannot be replaced whole (it holds files no eaft command of its kind wrote)."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """A temporary path beside `path`, renamed onto it when the block succeeds (removed when it fails)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def normal_permissions(folder: str | Path) -> None:
    """Every file under `folder` as any file of the process (0644 under umask 022), every folder 0755: libraries
    that write weights (safetensors) create their files 0600."""
    mask = _umask()
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            os.chmod(os.path.join(root, name), 0o777 & ~mask)
        for name in files:
            path = os.path.join(root, name)
            if not os.path.islink(path):
                os.chmod(path, 0o666 & ~mask)


def json_error(err: json.JSONDecodeError) -> str:
    """`msg at column N` (some of json's messages already end in "at")."""
    msg = err.msg[: -len(" at")] if err.msg.endswith(" at") else err.msg
    return f"{msg} at column {err.colno}"


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_text_atomic(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def save_figure(fig: Any, path: str | Path, *, dpi: int = 110) -> Path:
    """A matplotlib figure as a PNG, written atomically; the figure is closed."""
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return Path(path)


def finite_or_none(value: Any) -> Any:
    """NaN and ±inf become None (JSON null) anywhere inside `value`: JSON has no NaN."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    return value


def write_json_atomic(path: str | Path, data: Any, *, indent: int | None = 1) -> None:
    """Strict JSON (non-finite numbers as null), written atomically."""
    text = json.dumps(finite_or_none(data), indent=indent, ensure_ascii=False, allow_nan=False)
    write_text_atomic(path, text + "\n")


def atomic_dir(target: str | Path, save: Callable[[Path], None]) -> None:
    """`save(tmp_dir)` into a fresh folder beside `target`, then rename it onto `target` (replacing an older one,
    all its files with it); the files get normal permissions. The caller owns `target` (`eaft.ownership`): the
    temporary folders a killed writer left beside it are removed here."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{glob_escape(target.name)}{PARTIAL}*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}{PARTIAL}", dir=target.parent))
    try:
        save(tmp)
        normal_permissions(tmp)
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
        if target.exists():
            old = target.with_name(f".{target.name}{PARTIAL}old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def glob_escape(name: str) -> str:
    return "".join(f"[{c}]" if c in "*?[" else c for c in name)


def check_replaceable(target: str | Path, known: Collection[str], what: str) -> None:
    """`target` may be replaced whole by `atomic_dir`: it is absent, empty, or holds only names matching `known`
    (glob patterns: what an earlier run of the same command writes). Checked before the work starts."""
    target = Path(target)
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputFolderError(f"{what} {target} is a file, not a folder")
    strangers = sorted(
        p.name for p in target.iterdir() if not any(fnmatch.fnmatchcase(p.name, pattern) for pattern in known)
    )
    if strangers:
        shown = ", ".join(strangers[:5]) + (f" and {len(strangers) - 5} more" if len(strangers) > 5 else "")
        raise OutputFolderError(
            f"{what} {target} holds files this command does not write ({shown}); the folder is replaced whole, so "
            "choose a new or empty folder"
        )


class DuplicateKeys:
    """A json object_pairs_hook that warns, once per file, that an object repeats a key (JSON keeps the last).
    `line` is the line being read (a JSON lines file; None: a whole JSON file)."""

    def __init__(self, path: Path) -> None:
        self.path, self.line = path, None

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict:
        row = dict(pairs)
        if len(row) < len(pairs) and str(self.path) not in _duplicates_reported:
            _duplicates_reported.add(str(self.path))
            seen: set[str] = set()
            key = next(k for k, _ in pairs if k in seen or seen.add(k))
            where = f"{self.path}:{self.line}" if self.line is not None else f"{self.path}: an object in the file"
            logger.warning(
                "warning: %s: the key %r appears twice in one object; JSON keeps the last value (reported once per "
                "file)",
                where,
                key,
            )
        return row


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a UTF-8 byte-order mark is accepted.

    Raises JsonlError naming `file:line` for a line that is not UTF-8, not JSON, or not a JSON object.
    """
    path = Path(path)
    duplicates = DuplicateKeys(path)
    with path.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise JsonlError(
                    f"{path}:{number}: not UTF-8 text (byte {raw[err.start]:#04x} at column {err.start + 1}); "
                    "save the file as UTF-8"
                ) from None
            if not line.strip():
                continue
            try:
                duplicates.line = number
                row = json.loads(line, object_pairs_hook=duplicates)
            except json.JSONDecodeError as err:
                raise JsonlError(f"{path}:{number}: malformed JSON ({json_error(err)})") from None
            if not isinstance(row, dict):
                raise JsonlError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
            yield number, row
