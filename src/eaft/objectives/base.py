"""The objective contract and the registry.

An objective sees a `TokenStats` record and returns detached per-token weights. The shared path turns them
into the loss  L = Σ_t (−w_t · log p(y_t) + kl_coef · KL_t) / num_items. Masking, chunking, reduction and
normalization live once, in `eaft.objectives.loss`.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor

from eaft.fields import option as param  # noqa: F401 - objectives declare parameters with it
from eaft.ops.stats import EntropySpec, TokenStats

_REGISTRY: dict[str, type[Objective]] = {}


@dataclass
class Objective:
    """Base class. Subclasses are dataclasses whose fields are their config parameters."""

    name: ClassVar[str] = ""
    #: Weights depend on every token of the batch (a quantile, a softmax over tokens), so a chunked
    #: op must see all statistics before it can form any gradient.
    batch_global: ClassVar[bool] = False
    needs_reference: ClassVar[bool] = False
    needs_static_weight: ClassVar[bool] = False

    def entropy_spec(self) -> EntropySpec:
        """The entropy this objective reads; also what training logs as mean entropy."""
        return EntropySpec()

    @property
    def kl_coef(self) -> float:
        return 0.0

    def token_weights(self, stats: TokenStats) -> Tensor:
        """Detached weights. Shape: [N]."""
        raise NotImplementedError


def register(cls: type[Objective]) -> type[Objective]:
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a class attribute `name`")
    if cls.name in _REGISTRY:
        raise ValueError(f"objective {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def objective_names() -> list[str]:
    return sorted(_REGISTRY)


def objective_class(name: str) -> type[Objective]:
    if name not in _REGISTRY:
        hint = difflib.get_close_matches(name, _REGISTRY, n=1)
        extra = f"; did you mean {hint[0]!r}?" if hint else ""
        raise KeyError(f"unknown objective {name!r}{extra} (known: {', '.join(objective_names())})")
    return _REGISTRY[name]


def objective_params(name: str) -> dict[str, dataclasses.Field]:
    """The config parameters of an objective, with their help in `field.metadata['help']`."""
    return {f.name: f for f in dataclasses.fields(objective_class(name))}


def build_objective(name: str, params: dict[str, Any] | None = None) -> Objective:
    """Instantiate an objective by registry name; an unknown parameter is an error naming the closest one."""
    cls = objective_class(name)
    params = dict(params or {})
    known = objective_params(name)
    for key in params:
        if key not in known:
            hint = difflib.get_close_matches(key, known, n=1)
            extra = f"; did you mean {hint[0]!r}?" if hint else ""
            valid = ", ".join(known) or "none"
            raise KeyError(f"objective {name!r} has no parameter {key!r}{extra} (valid: {valid})")
    hints = typing.get_type_hints(cls)
    params = {key: _checked(name, key, value, hints[key]) for key, value in params.items()}
    return cls(**params)


def _checked(objective: str, key: str, value: Any, hint: Any) -> Any:
    """`value` as the parameter's declared type (a numeric string such as '1e-4' is read as a number)."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, types.UnionType) else (hint,)
    if value is None and type(None) in options:
        return None
    for kind in (bool, int, float, str):
        if kind not in options:
            continue
        if kind is bool and isinstance(value, bool):
            return value
        if kind is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, str):
            return value
    if isinstance(value, str) and (float in options or int in options):
        try:
            number = float(value)
            if int in options and number.is_integer() and float not in options:
                return int(number)
            if float in options:
                return number
        except ValueError:
            pass
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    raise TypeError(f"objective {objective!r}: {key}={value!r} has the wrong type (expected {expected})")
