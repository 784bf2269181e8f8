"""The example files eaft ships: suites and their task files, training configs, experiments, accelerate configs.

The repository's `configs/` is the one source. The package reaches it as `eaft/configs`, a symbolic link in the
source tree (`src/eaft/configs -> ../../configs`) that a wheel build copies as package data, so a clone, an
editable install and a wheel read the same files (`tests/test_shipped.py` builds a wheel and compares).

A command's file argument is found in this order:
1. the path as given, when it exists;
2. a relative path under `configs/` that does not exist from the working directory: the shipped copy (so the
   docs' `configs/...` examples also run from a wheel installed anywhere; the log names the copy used);
3. a bare name (no folder, with or without `.yaml`): `configs/<kind>/<name>.yaml`, e.g. `eaft eval --suite quick`,
   `eaft train sft`, `eaft experiment smollm2_gsm8k_cpu`.
Anything else is returned unchanged, for the caller to report as missing (with the shipped names listed).
"""

from __future__ import annotations

import logging
from importlib import resources
from pathlib import Path

logger = logging.getLogger(__name__)
#: The kinds of shipped file a command names, and their folder under configs/.
KINDS = ("suites", "train", "experiments", "accelerate")
PREFIX = "configs"


def configs_dir() -> Path:
    """The shipped configs folder (the repository's `configs/` in a clone or editable install)."""
    return Path(str(resources.files("eaft").joinpath(PREFIX)))


def shipped_names(kind: str) -> list[str]:
    """The names a command accepts for `kind` (file stems under configs/<kind>/, sorted)."""
    folder = configs_dir() / kind
    return sorted(p.stem for p in folder.glob("*.yaml")) if folder.is_dir() else []


def find_shipped(value: str | Path, kind: str) -> Path:
    """The file a command argument names (see the module docstring); `kind` is one of KINDS."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    path = Path(value).expanduser()
    if path.exists():
        return path
    return shipped_file(path, kind) or path


def shipped_file(value: str | Path, kind: str) -> Path | None:
    """The shipped file a `configs/...` path or a bare name of `kind` names (steps 2 and 3 above), if any."""
    path = Path(value)
    under = shipped_path(path)
    if under is not None:
        return under
    if len(path.parts) == 1 and path.suffix in ("", ".yaml"):
        candidate = configs_dir() / kind / f"{path.stem}.yaml"
        if candidate.is_file():
            return candidate
    return None


def shipped_path(path: str | Path) -> Path | None:
    """The shipped copy of a relative `configs/...` path that does not exist from here, if eaft ships it."""
    path = Path(path)
    if path.exists() or path.is_absolute() or not path.parts or path.parts[0] != PREFIX:
        return None
    candidate = configs_dir().joinpath(*path.parts[1:])
    if not candidate.exists():
        return None
    logger.info("%s is not in the working directory; using eaft's shipped copy %s", path, candidate)
    return candidate


def not_found_hint(kind: str) -> str:
    """What to say after 'no such file': the shipped names of `kind`."""
    names = shipped_names(kind)
    return f"; shipped {kind}: {', '.join(names)}" if names else ""
