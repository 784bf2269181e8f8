"""The thin Trainer subclass: the objective's loss (`eaft.loss.ObjectiveLoss`) in compute_loss, its statistics in
the logs.

Normalization: Trainer counts the label tokens of the whole gradient-accumulation window (all ranks when
`average_tokens_across_devices`) into `num_items_in_batch`; each micro-batch returns Σ its token losses /
num_items_in_batch, so the window's summed loss is Σ token losses / label tokens in the window — exactly, whatever
the padding or the split into micro-batches. The loss is therefore already scaled for accumulation
(`loss_is_scaled_for_ga = True`). Under DDP, gradients are averaged over ranks, so the loss is multiplied by the
number of ranks, as Trainer does.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import Trainer

from eaft.io import normal_permissions
from eaft.loss import ObjectiveLoss
from eaft.objectives import StepStats
from eaft.train.guard import RunGuard, Totals
from eaft.train.run_dir import complete_checkpoints, save_failure


def reduce_step_stats(stats: StepStats, accelerator: Any = None) -> StepStats:
    """Sum the statistics of a logging window over ranks (a no-op on one process). Every rank must call it."""
    if accelerator is None or getattr(accelerator, "num_processes", 1) <= 1:
        return stats
    total = accelerator.reduce(stats.to_tensor(accelerator.device), reduction="sum")
    return StepStats.from_tensor(total.cpu())


class ObjectiveTrainer(Trainer):
    """`transformers.Trainer` whose loss is a registered objective, logged with its token statistics."""

    loss_is_scaled_for_ga = True

    def __init__(
        self,
        *args: Any,
        loss_module: ObjectiveLoss,
        guard: RunGuard | None = None,
        prior: Totals | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.guard = guard
        self.prior = prior or Totals()
        self.session_start = time.time()
        if self.args.world_size > 1 and not self.args.average_tokens_across_devices:
            # Each rank would divide by its own token count: a mean of per-rank means, not the window's mean.
            raise ValueError(
                "average_tokens_across_devices=false with several processes would weight ranks unequally; "
                "set average_tokens_across_devices=true (the loss is normalized by the label tokens of all ranks)"
            )
        self.loss_module = loss_module
        self.last_batch: dict[str, Any] | None = None  # the latest training micro-batch, for the pre-save check
        self._loss_drained = False  # Trainer's final log has added the unlogged steps' loss to its running total
        # Makes Trainer count the window's label tokens into num_items_in_batch (our loss divides by it).
        self.model_accepts_loss_kwargs = True

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: int | torch.Tensor | None = None,
    ):
        if model.training:
            self.last_batch = inputs
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        static_weights = inputs.pop("static_weights", None)
        loss, outputs = self.loss_module(
            model,
            inputs,
            labels,
            static_weights=static_weights,
            num_items_in_batch=num_items_in_batch,
            record=model.training,  # the logs' token statistics are the training steps'
        )
        if self.args.average_tokens_across_devices and num_items_in_batch is not None:
            loss = loss * (self.accelerator.num_processes // self.get_tp_size())
        return (loss, outputs) if return_outputs else loss

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if "train_loss" in logs:  # the end of train(): the steps after the last log are in _total_loss_scalar now
            self._loss_drained = True
        if "loss" in logs:  # a training log: add the window's token statistics
            stats = reduce_step_stats(self.loss_module.pop_window_stats(), self.accelerator)
            logs.update(stats.means())
        super().log(logs, start_time)
        if self.guard is not None and "loss" in logs:
            self.guard.check_logs(self.state.global_step, logs, lambda: _newest_checkpoint(self.args.output_dir))

    def totals(self) -> Totals:
        """Everything trained so far, the steps before a resume included.

        Between logs Trainer holds the unlogged steps' loss in `_tr_loss`; at the end of training it adds them to
        `_total_loss_scalar` without clearing `_tr_loss`, so they are counted from one place only."""
        pending = 0.0 if self._loss_drained else float(self._tr_loss.item())
        session_loss = self._total_loss_scalar + pending
        return Totals(
            loss_sum=self.prior.loss_sum + session_loss,
            steps=self.state.global_step,
            wall_seconds=self.prior.wall_seconds + time.time() - self.session_start,
        )

    def loss_at_current_weights(self) -> float | None:
        """The loss of the latest training micro-batch at the weights as they are now (eval mode, no gradient,
        not logged); None before any step. An update can leave finite weights whose next forward is not."""
        if self.last_batch is None:
            return None
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                return float(self.compute_loss(self.model, self.last_batch).detach().float())
        finally:
            self.model.train(was_training)

    def check_weights_to_save(self, what: str) -> None:
        """Before a checkpoint or the final save: finite weights, and a finite loss at those weights."""
        if self.guard is None or self.guard.allow_non_finite:
            return
        step = self.state.global_step
        self.guard.check_weights(self.model, step, what)
        self.guard.check_loss_at_weights(
            step, self.loss_at_current_weights(), what, lambda: _newest_checkpoint(self.args.output_dir)
        )

    def _save_checkpoint(self, model: torch.nn.Module, trial: Any) -> None:
        """Refuses non-finite weights (or weights whose loss is not finite); writes the running totals first
        (trainer_state.json, written last by Trainer, marks the checkpoint complete)."""
        self.check_weights_to_save("checkpoint")
        folder = Path(self._get_output_dir(trial=trial)) / f"checkpoint-{self.state.global_step}"
        try:
            if self.is_world_process_zero():
                folder.mkdir(parents=True, exist_ok=True)
                self.totals().write(folder)
            super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError, SafetensorError) as err:  # json, torch.save and safetensors write errors
            raise save_failure("checkpoint", folder, err, Path(self.args.output_dir)) from err
        if self.is_world_process_zero():
            normal_permissions(folder)  # safetensors writes its files 0600


def _newest_checkpoint(output_dir: str) -> str | None:
    found = complete_checkpoints(Path(output_dir))
    return str(found[0]) if found else None
