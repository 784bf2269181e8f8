"""The one way eaft declares an option: a dataclass field whose help is written once, in its metadata.

`eaft train --help`, `eaft analyze --help` and the objective parameter lists all read `field.metadata["help"]`.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def option(default: Any, help: str, **metadata: Any) -> Any:  # noqa: A002 - the metadata key it fills
    """A field with `default` (a fresh copy for a dict or list) and its help; extra metadata rides along."""
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata={"help": help, **metadata})
    return dataclasses.field(default=default, metadata={"help": help, **metadata})
