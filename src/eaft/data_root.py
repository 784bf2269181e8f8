"""The data root: the folder of benchmark files (arc/, gsm8k/, mmlu/, bfcl_v3/, ...) that the shipped suites, task
files and experiments read. They name it `$EAFT_DATA`: `data_root: $EAFT_DATA` in a suite or task file, or a
path (or a dataset_info.json `file_name`) that starts with `$EAFT_DATA/`.

Where it is, first match wins:
1. the `EAFT_DATA` environment variable (`--data-root DIR` on `eaft eval` and `eaft experiment` sets it, so an
   experiment's steps see it too);
2. `../shared/data` beside the repository this package runs from (a source checkout or editable install);
3. `../shared/data` from the current directory (the same layout, for a package installed elsewhere).

It is looked up only when a file names it, so a suite that does not is never stopped by a missing data root.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from eaft.errors import UsageError

ENV = "EAFT_DATA"
_TOKENS = ("${EAFT_DATA}", "$EAFT_DATA")
_HELP = (
    "the folder of benchmark files (arc/, gsm8k/, mmlu/, bfcl_v3/, ...) the shipped suites read; "
    f"sets {ENV} (default: {ENV}, else ../shared/data beside the repository)"
)


class DataRootError(UsageError):
    """A file names the data root and none is set or found; the message says how to provide it."""


def _defaults() -> list[Path]:
    here = Path(__file__).resolve()
    candidates = []
    if here.parents[1].name == "src" and (here.parents[2] / "pyproject.toml").is_file():
        candidates.append(here.parents[3] / "shared" / "data")
    candidates.append(Path.cwd().parent / "shared" / "data")
    return candidates


def find_data_root() -> Path:
    """The data root as an absolute path. Raises DataRootError naming EAFT_DATA and --data-root when none is found."""
    value = os.environ.get(ENV, "")
    if value:
        root = Path(value).expanduser().resolve()
        if not root.is_dir():
            raise DataRootError(f"{ENV}={value}: no such folder (point {ENV} or --data-root at the benchmark data)")
        return root
    candidates = _defaults()
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    tried = ", ".join(dict.fromkeys(str(c) for c in candidates))
    raise DataRootError(
        f"no data root: set {ENV}=DIR or pass --data-root DIR, the folder of benchmark files (arc/, gsm8k/, mmlu/, "
        f"bfcl_v3/, ...; see docs/evaluation.md, Benchmark data); the default ../shared/data is not there ({tried})"
    )


def expand_data_root(value: str) -> str:
    """`value` with a leading `$EAFT_DATA` or `${EAFT_DATA}` replaced by the data root; any other value unchanged."""
    for token in _TOKENS:
        rest = value[len(token) :]
        if value.startswith(token) and rest[:1] in ("", "/", os.sep):
            return str(find_data_root()) + rest
    return value


def add_data_root_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", metavar="DIR", default=None, help=_HELP)


def use_data_root(path: str | None) -> None:
    """`--data-root DIR`: EAFT_DATA for this process and the ones it starts (an absolute path, so any folder works)."""
    if path is None:
        return
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise DataRootError(f"--data-root {path}: no such folder")
    os.environ[ENV] = str(root)
