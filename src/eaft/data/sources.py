"""Resolving `dataset` to conversations: files, datasets shipped with eaft, LLaMA-Factory dataset_info names, hub ids.

Order for each comma-separated name: an existing path; a name in `dataset_dir`/dataset_info.json (LLaMA-Factory:
`file_name`, `formatting` alpaca|sharegpt, and `columns` renaming the standard fields); a dataset shipped in
`eaft/resources` (house_calc); otherwise a hub dataset id. A `file_name` is relative to `dataset_dir`, except one
that starts with `$EAFT_DATA/`: that is under the benchmark data root (`eaft.data_root`).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from eaft.data.formats import DataError, Messages, read_rows, row_to_messages
from eaft.data.load import load_conversations
from eaft.data_root import DataRootError, expand_data_root
from eaft.shipped import shipped_path

SHIPPED = {"house_calc": "house_calc.jsonl"}
#: LLaMA-Factory `columns` keys -> our field names (also their default column names), per formatting.
LF_COLUMNS = {
    "alpaca": {
        "prompt": "instruction",
        "query": "input",
        "response": "output",
        "system": "system",
        "history": "history",
    },
    "sharegpt": {"messages": "conversations", "system": "system"},
}
#: LLaMA-Factory sharegpt `tags` and their defaults; role tags map to our sharegpt role names.
LF_TAGS = {
    "role_tag": "from",
    "content_tag": "value",
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}
LF_ROLE_TAGS = {
    "user_tag": "human",
    "assistant_tag": "gpt",
    "observation_tag": "observation",
    "function_tag": "function_call",
    "system_tag": "system",
}


def shipped_dataset_path(name: str) -> Path:
    return Path(str(resources.files("eaft.resources").joinpath(SHIPPED[name])))


def _lf_entry(name: str, dataset_dir: str | None) -> dict[str, Any] | None:
    if not dataset_dir:
        return None
    info_path = Path(dataset_dir) / "dataset_info.json"
    if not info_path.is_file():
        raise DataError(f"dataset_dir={dataset_dir!r}: no dataset_info.json there")
    info = json.loads(info_path.read_text(encoding="utf-8"))
    return info.get(name)


def _check_lf_entry(entry: dict[str, Any], where: str) -> str:
    formatting = entry.get("formatting", "alpaca")
    if "file_name" not in entry:
        raise DataError(f"{where}: only local datasets (file_name) are supported, got keys {sorted(entry)}")
    if formatting not in LF_COLUMNS:
        raise DataError(f"{where}: formatting {formatting!r} is not supported (alpaca or sharegpt)")
    bad = sorted(set(entry) - {"file_name", "formatting", "columns", "tags"})
    bad += sorted(f"columns.{k}" for k in set(entry.get("columns", {})) - set(LF_COLUMNS[formatting]))
    bad += sorted(f"tags.{k}" for k in set(entry.get("tags", {})) - set(LF_TAGS))
    if bad:
        raise DataError(f"{where}: unsupported dataset_info keys {bad}")
    return formatting


def _lf_columns(entry: dict[str, Any], formatting: str, compat: str) -> dict[str, str]:
    """LLaMA-Factory column key -> the row's column name. Under compat llamafactory, as LLaMA-Factory reads them:
    a `columns` mapping names every column read (the others are not read), and without one only the default
    prompt/query/response (alpaca) or conversations (sharegpt) columns are read; `system` and `history` only
    when named."""
    columns = entry.get("columns", {})
    if compat != "llamafactory":
        return {key: columns.get(key, ours) for key, ours in LF_COLUMNS[formatting].items()}
    if "columns" in entry:
        return {key: name for key, name in columns.items() if name}
    return {key: ours for key, ours in LF_COLUMNS[formatting].items() if key not in ("system", "history")}


def _lf_row(row: dict[str, Any], entry: dict[str, Any], formatting: str, compat: str = "eaft") -> dict[str, Any]:
    """A row of a LLaMA-Factory dataset renamed to our alpaca / sharegpt fields."""
    columns = _lf_columns(entry, formatting, compat)
    out = {
        ours: row[columns[key]]
        for key, ours in LF_COLUMNS[formatting].items()
        if key in columns and columns[key] in row
    }
    if formatting == "sharegpt" and isinstance(out.get("conversations"), list):
        tags = {**LF_TAGS, **entry.get("tags", {})}
        roles = {tags[tag]: ours for tag, ours in LF_ROLE_TAGS.items()}
        out["conversations"] = [
            {
                "from": roles.get(turn.get(tags["role_tag"]), turn.get(tags["role_tag"])),
                "value": turn.get(tags["content_tag"]),
            }
            for turn in out["conversations"]
        ]
    return out


def _load_lf(
    name: str, entry: dict[str, Any], dataset_dir: str, max_samples: int | None, compat: str = "eaft"
) -> list[Messages]:
    where = f"{dataset_dir}/dataset_info.json[{name}]"
    formatting = _check_lf_entry(entry, where)
    try:
        path = Path(dataset_dir) / expand_data_root(entry["file_name"])
    except DataRootError as err:
        raise DataRootError(f"{where}: {err}") from None
    if not path.is_file():
        raise DataError(f"{where}: file_name {entry['file_name']!r}: no such file")
    conversations = []
    for row_where, row in read_rows(path):
        if max_samples is not None and len(conversations) >= max_samples:
            break
        conversations.append(
            row_to_messages(_lf_row(row, entry, formatting, compat), formatting, row_where, compat=compat)
        )
    if not conversations:
        raise DataError(f"{path}: the dataset is empty (no rows)")
    return conversations


def load_dataset_conversations(
    dataset: str,
    *,
    data_format: str = "auto",
    dataset_dir: str | None = None,
    max_samples: int | None = None,
    compat: str = "eaft",
) -> list[Messages]:
    """All conversations of a (comma-separated) `dataset` setting, in order (`compat`: see `eaft.data.formats`).
    A relative `dataset_dir` under `configs/` missing from the working directory is eaft's shipped copy."""
    dataset_dir = str(shipped_path(dataset_dir) or dataset_dir) if dataset_dir else dataset_dir
    conversations: list[Messages] = []
    for name in (part.strip() for part in str(dataset).split(",")):
        if not name:
            continue
        entry = None if Path(name).exists() else _lf_entry(name, dataset_dir)
        if entry is not None:
            conversations += _load_lf(name, entry, dataset_dir, max_samples, compat)
        elif not Path(name).exists() and name in SHIPPED:
            conversations += load_conversations(
                str(shipped_dataset_path(name)), format=data_format, max_samples=max_samples, compat=compat
            )
        else:
            conversations += load_conversations(name, format=data_format, max_samples=max_samples, compat=compat)
    if not conversations:
        raise DataError(f"dataset={dataset!r}: no data")
    return conversations


def split_heldout(conversations: list[Messages], val_size: float) -> tuple[list[Messages], list[Messages]]:
    """(train, held out): the last `val_size` rows (a count >= 1, or a fraction < 1) are held out."""
    if val_size < 0:
        raise DataError(f"val_size must be >= 0, got {val_size}")
    count = int(val_size) if val_size >= 1 else int(round(val_size * len(conversations)))
    if count >= len(conversations):
        raise DataError(f"val_size={val_size} holds out {count} of {len(conversations)} rows, leaving none to train")
    return (
        (conversations[: len(conversations) - count], conversations[len(conversations) - count :])
        if count
        else (conversations, [])
    )
