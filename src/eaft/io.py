"""Shared file I/O: atomic writes with normal permissions, and one JSONL reader whose errors name file and line.

Every output of `eaft train | eval | analyze | report | experiment` goes through these writers: a file appears
whole or not at all (written to a temporary name in the same folder, then renamed), with the permissions any
file of the process gets (0644 under umask 022; `mkstemp` alone would leave 0600).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from eaft.errors import EaftError


class JsonlError(EaftError, ValueError):
    """A JSONL file that cannot be read as one JSON object per line; the message names the file and line."""


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
    """`save(tmp_dir)` into a fresh folder beside `target`, then rename it onto `target` (replacing an older one)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes 0700
    try:
        save(tmp)
        if target.exists():
            old = target.with_name(f".{target.name}-old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, object) for each non-blank line; a UTF-8 byte-order mark is accepted.

    Raises JsonlError naming `file:line` for a line that is not UTF-8, not JSON, or not a JSON object.
    """
    path = Path(path)
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
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise JsonlError(f"{path}:{number}: malformed JSON ({err.msg} at column {err.colno})") from None
            if not isinstance(row, dict):
                raise JsonlError(f"{path}:{number}: expected a JSON object per line, got {type(row).__name__}")
            yield number, row
