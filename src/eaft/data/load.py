"""`load_conversations`: a file, a folder of files, or a hub dataset id -> normalized conversations."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from eaft.data.formats import FORMATS, DataError, Messages, Row, detect_format, read_rows, row_to_messages

DATA_SUFFIXES = (".json", ".jsonl", ".ndjson", ".parquet")


def load_conversations(
    source: str,
    *,
    format: str = "auto",  # noqa: A002
    max_samples: int | None = None,
    compat: str = "eaft",
) -> list[Messages]:
    """Read a dataset and normalize every row to OpenAI-style messages.

    `source` is a JSON / JSONL / parquet file, a folder of such files (read in name order), or — only when no
    such path exists — a Hugging Face hub dataset id (`name` or `name:split`, default split `train`; needs the
    optional package `datasets`). `format` is `auto` (detected from the first row's keys) or one of
    `alpaca`, `sharegpt`, `messages`, `prompt_completion` (see `eaft.data.formats`). `max_samples` keeps the
    first rows only. `compat="llamafactory"` reads alpaca rows as LLaMA-Factory does (`eaft.data.formats`).

    Returns a list of conversations, each `[{"role": ..., "content": ...}, ...]` with at least one assistant turn.
    Raises `DataError` naming file:line (or file[row i], counted from 1) for malformed lines, missing fields, rows
    without an assistant turn, and for an empty dataset.
    """
    if format != "auto" and format not in FORMATS:
        raise DataError(f"unknown data format {format!r}; expected 'auto' or one of {', '.join(FORMATS)}")
    if max_samples is not None and max_samples < 1:
        raise DataError(f"max_samples must be >= 1 or null, got {max_samples}")
    rows = _rows(source)
    conversations: list[Messages] = []
    fmt = None if format == "auto" else format
    for where, row in rows:
        if max_samples is not None and len(conversations) >= max_samples:
            break
        fmt = fmt or detect_format(row, where)
        conversations.append(row_to_messages(row, fmt, where, compat=compat))
    if not conversations:
        raise DataError(f"{source}: the dataset is empty (no rows)")
    return conversations


def _rows(source: str) -> Iterable[tuple[str, Row]]:
    path = Path(source).expanduser()
    if path.is_file():
        return read_rows(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in DATA_SUFFIXES)
        if not files:
            raise DataError(f"{path}: the folder holds no {', '.join(DATA_SUFFIXES)} files")
        return (item for file in files for item in read_rows(file))
    if path.suffix.lower() in DATA_SUFFIXES or source.startswith((".", "/", "~")) or _under_local_folder(path):
        raise DataError(f"{source}: no such file or folder")
    return _hub_rows(source)


def _under_local_folder(path: Path) -> bool:
    """`data/goodd` where `data/` is a folder here: a mistyped local path, not the hub id `data/goodd`."""
    return len(path.parts) > 1 and Path(path.parts[0]).is_dir()


def _hub_rows(source: str) -> Iterator[tuple[str, Row]]:
    try:
        import datasets
    except ImportError:
        raise DataError(
            f"{source!r} is not a local file or folder; loading it as a hub dataset needs the package `datasets` "
            "(pip install 'eaft[hub]')"
        ) from None
    name, _, split = source.partition(":")
    table = datasets.load_dataset(name, split=split or "train")
    for index, row in enumerate(table, start=1):
        yield f"{source}[row {index}]", dict(row)
