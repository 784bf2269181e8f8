"""TRL: `EaftSFTTrainer` is TRL's `SFTTrainer` trained with any registered objective, on eaft's shared loss path.

    trainer = EaftSFTTrainer(model=model, args=SFTConfig(...), train_dataset=dataset, objective="eaft")
    trainer.train()

TRL still does the data: chat templates, `completion_only_loss` and `assistant_only_loss` (both end up as -100 in
`labels`, exactly the tokens the objective is computed on), packing, padding-free batches and PEFT (`peft_config`).
The loss is `ObjectiveTrainer.compute_loss`, as in `eaft train`: materialized logits, or the fused op from the last
hidden states (`fused_loss`), normalized by the label tokens of the accumulation window; the same rows in the same
order with the same seed train the same weights as eaft's own trainer. TRL's metrics stay (`entropy`,
`mean_token_accuracy`, `num_tokens`) and eaft's join them (`ce`, `mean_entropy`, `mean_weight`, `conflict_share`,
`label_tokens`).

`model="default"` is eaft's embedded SmolLM2-135M-Instruct (its cached local folder and tokenizer, never the hub).
With `assistant_only_loss`, a ChatML template TRL cannot patch (SmolLM2's) is given the `{% generation %}` markers
on a copy of the tokenizer (`eaft.data.training_template`). `dataloader_pin_memory` is turned off where there is no
accelerator (torch ignores it there, with a warning).

Refused by name, because SFTTrainer would then compute its own loss or add to it, and the objective would be dropped
without a word: `use_liger_kernel`, `loss_type` other than 'nll', `label_smoothing_factor`, `compute_loss_func`, a
MoE `router_aux_loss_coef`, context and sequence parallelism.
"""

from __future__ import annotations

import contextlib
import copy as copy_module
from collections.abc import Iterator
from typing import Any

import torch
from accelerate.utils import is_peft_model
from torch import Tensor
from trl import SFTTrainer

from eaft.data.training_template import training_chat_template
from eaft.loss import ObjectiveLoss, Reference, base_causal_lm
from eaft.models import is_default, load_tokenizer, resolve_model
from eaft.objectives import Objective, build_objective
from eaft.ops.tokens import label_rows
from eaft.train.trainer import ObjectiveTrainer

IGNORE_INDEX = -100
#: Label rows per fp32 chunk of TRL's entropy and accuracy metrics.
METRIC_CHUNK = 1024
FLOW_BATCH = 8


def bypass_reasons(args: Any, compute_loss_func: Any, objective: Objective) -> list[str]:
    """SFTConfig settings under which SFTTrainer would not train on `objective`'s loss alone (checked before init)."""
    name = objective.name
    reasons = []
    if getattr(args, "use_liger_kernel", False):
        reasons.append(
            "use_liger_kernel=True: Liger's fused linear cross-entropy computes plain CE inside the model's forward "
            f"and returns no logits (evaluation asks it for skip_logits), so objective {name!r} would be dropped; "
            "set use_liger_kernel=False (fused_loss already spares the [B, S, V] logits)"
        )
    if getattr(args, "loss_type", "nll") not in ("nll", "chunked_nll"):
        reasons.append(
            f"loss_type={args.loss_type!r} selects TRL's own loss, which objective {name!r} replaces; leave "
            f"loss_type='nll' and pass objective={args.loss_type!r} if that is the loss you want"
        )
    if getattr(args, "label_smoothing_factor", 0.0):
        reasons.append(
            f"label_smoothing_factor={args.label_smoothing_factor}: TRL smooths its own NLL, which objective "
            f"{name!r} replaces; set label_smoothing_factor=0"
        )
    if compute_loss_func is not None:
        reasons.append(f"compute_loss_func would replace objective {name!r}; pass objective=... instead")
    return reasons


def setup_reasons(trainer: SFTTrainer, objective: Objective) -> list[str]:
    """Settings found once SFTTrainer is built (the model's config, the accelerator) that bypass the objective."""
    reasons = []
    if trainer.aux_loss_enabled:
        reasons.append(
            f"router_aux_loss_coef={trainer.router_aux_loss_coef}: SFTTrainer adds the MoE load-balancing loss to "
            f"its own loss, objective {objective.name!r} has none; set router_aux_loss_coef=0.0"
        )
    parallel = trainer.accelerator.parallelism_config
    if parallel is not None and (parallel.cp_enabled or getattr(parallel, "sp_enabled", False)):
        reasons.append(
            "context or sequence parallelism shards each sequence across ranks (TRL then scores pre-shifted "
            f"labels, or reduces the model's own loss); objective {objective.name!r} needs whole rows"
        )
    return reasons


def _has_accelerator() -> bool:
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    return accelerator.is_available() if accelerator is not None else torch.cuda.is_available()


def embedded_default(model: Any, processing_class: Any) -> tuple[Any, Any]:
    """`model="default"` (or another alias of eaft's embedded SmolLM2-135M-Instruct) is its cached local folder, never
    a hub id; its tokenizer comes with it unless one is given. Anything else passes through."""
    if not isinstance(model, str) or not is_default(model):
        return model, processing_class
    path = resolve_model(model)
    return path, processing_class if processing_class is not None else load_tokenizer(path)


def with_training_template(tokenizer: Any) -> Any:
    """For `assistant_only_loss`: a copy of the tokenizer whose ChatML template carries the `{% generation %}`
    markers TRL needs (`eaft.data.training_template`), where TRL has no patch of its own (SmolLM2's template);
    the tokenizer itself when it has markers, or when the template is not ChatML (TRL then patches or refuses it)."""
    from trl.chat_template_utils import get_training_chat_template

    try:
        marked = training_chat_template(tokenizer)
    except ValueError:
        return tokenizer
    if marked == tokenizer.chat_template:
        return tokenizer
    try:
        if get_training_chat_template(tokenizer) is not None:  # TRL knows this template: its own patch applies
            return tokenizer
    except ValueError:
        pass  # TRL refuses it: eaft's marked copy stands in
    copy = copy_module.deepcopy(tokenizer)
    copy.chat_template = marked
    return copy


def _logits(outputs: Any) -> Tensor | None:
    return outputs.get("logits") if isinstance(outputs, dict) else getattr(outputs, "logits", None)


class _StaticWeightsCollator:
    """TRL's collator, plus FLOW's per-token weights laid out like its right-padded `labels`. Shape: [B, S]."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Tensor]:
        weights = [example["static_weights"] for example in examples]
        batch = self.inner([{k: v for k, v in example.items() if k != "static_weights"} for example in examples])
        padded = torch.zeros(batch["labels"].shape, dtype=torch.float32)
        for row, values in enumerate(weights):
            padded[row, : len(values)] = torch.tensor(values, dtype=torch.float32)
        batch["static_weights"] = padded
        return batch


class EaftSFTTrainer(ObjectiveTrainer, SFTTrainer):
    """`trl.SFTTrainer` whose loss is a registered objective (`objective="eaft"`, `objective_args={"alpha": 2}`).

    `fused_loss`: 'auto' (the fused op where it is exact for the model), 'true' (refused by name when it is not) or
    'false' (materialized logits); `chunk_size`: label tokens per chunk (`eaft.loss`). Every other argument
    is SFTTrainer's. The reference of `sft_kl` / `asft` is the model with its adapters disabled under PEFT, else a
    frozen copy of the initial model; `flow` computes its weights from the initial model before training.
    """

    def __init__(
        self,
        model: Any,
        args: Any = None,
        *,
        objective: str | Objective = "eaft",
        objective_args: dict[str, Any] | None = None,
        fused_loss: str | bool = "auto",
        chunk_size: int | None = None,
        **kwargs: Any,
    ) -> None:
        if not isinstance(objective, str) and objective_args:
            raise ValueError("objective_args go with an objective name; an Objective instance carries its own")
        objective = build_objective(objective, objective_args) if isinstance(objective, str) else objective
        reasons = bypass_reasons(args, kwargs.get("compute_loss_func"), objective)
        if reasons:
            raise ValueError("EaftSFTTrainer cannot honour " + "; ".join(reasons))
        model, kwargs["processing_class"] = embedded_default(model, kwargs.get("processing_class"))
        if getattr(args, "assistant_only_loss", False) and kwargs["processing_class"] is not None:
            kwargs["processing_class"] = with_training_template(kwargs["processing_class"])
        if args is not None and args.dataloader_pin_memory and not _has_accelerator():
            args.dataloader_pin_memory = False  # torch ignores it without an accelerator, with a warning per loader
        super().__init__(model, args, loss_module=None, **kwargs)
        reasons = setup_reasons(self, objective)
        if reasons:
            raise ValueError("EaftSFTTrainer cannot honour " + "; ".join(reasons))
        if objective.needs_static_weight:
            self._attach_flow_weights(objective)
        self.loss_module = ObjectiveLoss.for_model(
            self.model, objective, fused_loss=fused_loss, reference=self._reference(objective), chunk_size=chunk_size
        )

    def _reference(self, objective: Objective) -> Reference | None:
        if not objective.needs_reference:
            return None
        lora = is_peft_model(self.model)
        reference = Reference(self.model, lora=lora)
        if not lora:
            # TRL's fused LM head is an instance attribute bound to the trained model: the copy gets its own forward.
            reference.model.__dict__.pop("forward", None)
        return reference

    @torch.no_grad()
    def _attach_flow_weights(self, objective: Objective) -> None:
        """FLOW's weights from the initial model, one per label token of each training row, carried in the batch."""
        from eaft.data import CausalLMCollator
        from eaft.objectives.flow import compute_flow_losses, flow_weights

        if self.args.packing or self.padding_free or not hasattr(self.train_dataset, "__len__"):
            raise ValueError(
                "objective 'flow' weighs each sample by the initial model's loss on it, computed before training over "
                "the rows one by one; use it without packing or padding_free, on a Dataset (not an IterableDataset)"
            )
        rows = [{"input_ids": row["input_ids"], "labels": row["labels"]} for row in self.train_dataset]
        collator = CausalLMCollator(self._tokenizer.pad_token_id)
        device = next(self.model.parameters()).device
        batches = (
            {k: v.to(device) for k, v in collator(rows[start : start + FLOW_BATCH]).items()}
            for start in range(0, len(rows), FLOW_BATCH)
        )
        was_training = self.model.training
        self.model.eval()
        losses = compute_flow_losses(self.model, batches, per=objective.per)
        self.model.train(was_training)
        weights, _ = flow_weights(losses, objective.tau)
        static = []
        for row, row_weights in zip(rows, weights, strict=True):
            positions = [j for j in range(1, len(row["labels"])) if row["labels"][j] != IGNORE_INDEX]
            values = row_weights.reshape(-1).tolist()
            per_token = values * len(positions) if len(values) == 1 else values
            laid_out = [0.0] * len(row["labels"])
            for j, w in zip(positions, per_token, strict=True):
                laid_out[j] = float(w)
            static.append(laid_out)
        self.train_dataset = self.train_dataset.add_column("static_weights", static)
        self.data_collator = _StaticWeightsCollator(self.data_collator)

    def _set_signature_columns_if_needed(self) -> None:
        super()._set_signature_columns_if_needed()
        if "static_weights" not in self._signature_columns:  # FLOW's weights must survive remove_unused_columns
            self._signature_columns = [*self._signature_columns, "static_weights"]

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: int | Tensor | None = None,
    ):
        mode = "train" if self.model.training else "eval"
        with self._captured_hidden(model) as hidden:
            loss, outputs = super().compute_loss(
                model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
            )
        self._record_trl_metrics(mode, model, inputs, outputs, hidden)
        if not return_outputs:
            return loss
        if _logits(outputs) is None:  # the fused path forms no logits; prediction_step asks for them
            model_inputs = {k: v for k, v in inputs.items() if k not in ("labels", "static_weights")}
            with torch.no_grad():
                outputs = model(**model_inputs, use_cache=False)
        return loss, outputs

    @contextlib.contextmanager
    def _captured_hidden(self, model: torch.nn.Module) -> Iterator[list[Tensor]]:
        """The decoder's last output of the step, for TRL's metrics on the fused path (which returns no logits)."""
        captured: list[Tensor] = []
        if not self.loss_module.fused:
            yield captured
            return
        hook = (
            base_causal_lm(model)
            .get_decoder()
            .register_forward_hook(
                lambda _module, _args, output: captured.append(output[0] if isinstance(output, tuple) else output)
            )
        )
        try:
            yield captured
        finally:
            hook.remove()

    @torch.no_grad()
    def _record_trl_metrics(
        self, mode: str, model: torch.nn.Module, inputs: dict[str, Any], outputs: Any, hidden: list[Tensor]
    ) -> None:
        """TRL's `entropy` (nats, full vocabulary), `mean_token_accuracy` and `num_tokens`, as SFTTrainer logs them.

        From the logits, or on the fused path from the captured hidden states times the lm_head, chunk by chunk.
        """
        rows, targets = label_rows(inputs["labels"], ignore_index=IGNORE_INDEX)
        logits = _logits(outputs)
        if logits is not None:
            source, head = logits.reshape(-1, logits.shape[-1]), None
        else:
            last = getattr(hidden[-1], "last_hidden_state", hidden[-1])
            source, head = last.reshape(-1, last.shape[-1]), base_causal_lm(model).get_output_embeddings()
        entropy_sum = torch.zeros((), dtype=torch.float32, device=rows.device)
        correct = torch.zeros((), dtype=torch.long, device=rows.device)
        for start in range(0, rows.numel(), METRIC_CHUNK):
            part = slice(start, start + METRIC_CHUNK)
            z = (source[rows[part]] if head is None else head(source[rows[part]])).float()
            logp = torch.log_softmax(z, dim=-1)
            entropy_sum += -(logp.exp() * logp).sum()
            correct += (z.argmax(dim=-1) == targets[part]).sum()
        gather = self.accelerator.gather_for_metrics
        num_valid = gather(torch.tensor(rows.numel(), device=rows.device)).sum()
        entropy_sum, correct = gather(entropy_sum).sum(), gather(correct).sum()
        valid = int(num_valid) > 0
        self._metrics[mode]["entropy"].append(float(entropy_sum / num_valid) if valid else 0.0)
        self._metrics[mode]["mean_token_accuracy"].append(float(correct / num_valid) if valid else 0.0)
        if mode == "train":
            if "attention_mask" in inputs:
                local = inputs["attention_mask"].sum()
            else:  # padding-free: one row of position ids, no attention mask
                local = torch.tensor(inputs["position_ids"].size(1), device=inputs["position_ids"].device)
            self._total_train_tokens += int(gather(local).sum()) // self._tp_size
        self._metrics[mode]["num_tokens"] = [self._total_train_tokens]
