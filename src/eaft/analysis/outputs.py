"""Atomic writes of the analysis outputs, and the per-token table on disk (Parquet or JSONL)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from eaft.io import atomic_path

TABLE_FORMATS = ("parquet", "jsonl")


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_with(path: str | Path, writer: Callable[[Path], None]) -> None:
    with atomic_path(path) as tmp:
        writer(tmp)


def write_table(path: str | Path, columns: dict[str, np.ndarray]) -> None:
    """Columns of equal length to Parquet (`.parquet`) or JSON lines (`.jsonl`), chosen by the suffix."""
    path = Path(path)
    fmt = path.suffix.lstrip(".")
    if fmt not in TABLE_FORMATS:
        raise ValueError(f"{path}: token table must end in one of {['.' + f for f in TABLE_FORMATS]}")
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.table({name: pa.array(value) for name, value in columns.items()})
        write_with(path, lambda tmp: pq.write_table(table, tmp))
        return
    names = list(columns)
    lists = [columns[n].tolist() for n in names]
    lines = (json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False) for row in zip(*lists, strict=True))
    write_text(path, "".join(line + "\n" for line in lines))


def read_table(path: str | Path) -> dict[str, np.ndarray]:
    """The columns written by `write_table`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no token table there")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
        return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
    if path.suffix != ".jsonl":
        raise ValueError(f"{path}: expected a .parquet or .jsonl token table")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
    if not rows:
        return {}
    return {name: np.asarray([row[name] for row in rows]) for name in rows[0]}
