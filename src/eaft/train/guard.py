"""What keeps a run honest: non-finite values stop it, a collapse is reported, and resumed totals add up.

- A non-finite loss, CE or gradient norm in a log, or before a checkpoint or the final save non-finite weights
  or a non-finite loss at the weights about to be saved (an update can leave finite weights of 1e30 whose next
  forward is NaN, after a last logged loss that was finite), stop the run with `NonFiniteError` naming the step
  and the likely cause; nothing non-finite is saved, so the run directory stays resumable from its last finite
  checkpoint. `allow_non_finite=true` keeps transformers' behaviour (train on).
- A collapse (CE within 10% of ln V, a uniform guess, or a gradient norm of 0 in 3 logs running), and a
  learning rate of 0 (nothing can train), are warnings in the log and in report.md.
- Each checkpoint holds `eaft_state.json`: the summed per-step loss, the steps and the wall time so far, so a
  resumed run reports `train_loss` over all its steps and its wall time as the sum of its parts.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from eaft.errors import EaftError

logger = logging.getLogger(__name__)
STATE_FILE = "eaft_state.json"
COLLAPSE_FRACTION = 0.9
ZERO_GRAD_LOGS = 3


class NonFiniteError(EaftError, RuntimeError):
    """Training produced NaN or inf; the message names the step, the value and what to change."""


@dataclass
class Totals:
    """Sums over the steps trained before this process started (zero for a fresh run)."""

    loss_sum: float = 0.0
    steps: int = 0
    wall_seconds: float = 0.0

    @classmethod
    def from_checkpoint(cls, checkpoint: Path | None) -> Totals:
        path = checkpoint / STATE_FILE if checkpoint is not None else None
        if path is None or not path.is_file():
            return cls()
        data = json.loads(path.read_text(encoding="utf-8"))
        return cls(float(data["loss_sum"]), int(data["steps"]), float(data["wall_seconds"]))

    def write(self, folder: Path) -> None:
        from eaft.io import write_json_atomic

        record = {"loss_sum": self.loss_sum, "steps": self.steps, "wall_seconds": round(self.wall_seconds, 3)}
        write_json_atomic(folder / STATE_FILE, record)


@dataclass
class RunGuard:
    """Checks a run's logs and weights; collects collapse warnings for report.md."""

    vocab_size: int
    learning_rate: float
    max_grad_norm: float
    allow_non_finite: bool = False
    warnings: list[str] = field(default_factory=list)
    _zero_grad_logs: int = 0
    _first_ce: float | None = None

    def __post_init__(self) -> None:
        if self.learning_rate == 0:
            self.warn("learning_rate=0: no weight can change, so the run trains to nothing; set learning_rate > 0")

    def cause(self) -> str:
        hints = [f"lower learning_rate (now {self.learning_rate:g})"]
        if not self.max_grad_norm:
            hints.append("set max_grad_norm > 0 (now 0: gradients are not clipped)")
        return "; ".join(hints) + "; or pass allow_non_finite=true to train on as transformers does"

    def check_logs(self, step: int, logs: dict[str, Any], last_checkpoint: Callable[[], str | None]) -> None:
        """`last_checkpoint()` names the checkpoint to resume from; it is asked only when the run must stop."""
        bad = {k: v for k, v in logs.items() if k in ("loss", "ce", "grad_norm") and not _finite(v)}
        if bad and not self.allow_non_finite:
            names = ", ".join(f"{k}={v}" for k, v in bad.items())
            checkpoint = last_checkpoint()
            where = f"resume=true continues from {checkpoint}" if checkpoint else "no checkpoint was saved before it"
            raise NonFiniteError(
                f"step {step}: {names} is not finite; the weights diverged. Likely cause: {self.cause()}. "
                f"Nothing non-finite was saved ({where})"
            )
        self._collapse(step, logs)

    def check_loss_at_weights(
        self, step: int, loss: float | None, what: str, last_checkpoint: Callable[[], str | None]
    ) -> None:
        """`loss`: the latest batch's loss at the weights about to be saved as `what` (None: no step taken)."""
        if self.allow_non_finite or loss is None or _finite(loss):
            return
        checkpoint = last_checkpoint()
        where = f"resume=true continues from {checkpoint}" if checkpoint else "no checkpoint was saved before it"
        raise NonFiniteError(
            f"step {step}: the loss at the weights about to be saved as the {what} is {loss}: the weights diverged "
            f"after the last check, though they hold no NaN yet. Likely cause: {self.cause()}. Nothing non-finite "
            f"was saved ({where})"
        )

    def _collapse(self, step: int, logs: dict[str, Any]) -> None:
        ce, grad = logs.get("ce"), logs.get("grad_norm")
        uniform = math.log(self.vocab_size)
        if _finite(ce) and self._first_ce is None:
            self._first_ce = ce  # a model that starts at a uniform guess (random weights) has not collapsed
        near = _finite(ce) and ce >= COLLAPSE_FRACTION * uniform and self._first_ce < COLLAPSE_FRACTION * uniform
        if near and not any("uniform guess" in w for w in self.warnings):
            self.warn(
                f"step {step}: CE {ce:.3f} rose near ln V = {uniform:.3f} (a uniform guess; it started at "
                f"{self._first_ce:.3f}): the model collapsed, likely from too high a learning rate"
            )
        self._zero_grad_logs = self._zero_grad_logs + 1 if grad == 0 else 0
        if self._zero_grad_logs == ZERO_GRAD_LOGS:
            self.warn(f"step {step}: the gradient norm has been 0 in {ZERO_GRAD_LOGS} logs running: nothing trains")

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            logger.warning("warning: %s", message)

    def check_weights(self, model: torch.nn.Module, step: int, what: str) -> None:
        if self.allow_non_finite:
            return
        with torch.no_grad():
            for name, param in model.named_parameters():
                if param.requires_grad and not bool(torch.isfinite(param).all()):
                    raise NonFiniteError(
                        f"step {step}: parameter {name} holds NaN or inf, so the {what} was not saved. "
                        f"Likely cause: {self.cause()}"
                    )


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
