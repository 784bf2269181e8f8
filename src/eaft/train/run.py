"""One training run: config -> data -> model -> objective -> trainer -> run directory."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError

from eaft.data import CausalLMCollator, encode_dataset, pack_examples
from eaft.data.llamafactory import llamafactory_examples, pack_llamafactory
from eaft.data.sources import load_dataset_conversations, split_heldout
from eaft.io import atomic_dir
from eaft.loss import ObjectiveLoss, Reference
from eaft.models import load_model, load_tokenizer, peft_wrapping, vocab_size
from eaft.objectives import build_objective
from eaft.train.config import TrainConfig
from eaft.train.guard import RunGuard, Totals
from eaft.train.outputs import (
    REPORT,
    CheckpointAtSteps,
    MetricsCallback,
    plot_curve,
    truncate_metrics,
    warn_if_unlogged,
    write_report,
)
from eaft.train.passes import attach_flow_weights, heldout_statistics
from eaft.train.preflight import check_lora_targets, check_model_source, check_objective_fits
from eaft.train.run_dir import RunError, checkpoint_step, claimed_run_dir, save_failure

logger = logging.getLogger(__name__)
#: The config keys that `compat: llamafactory` data preparation reads.
LLAMAFACTORY_DATA_KEYS = ("template", "val_size", "cutoff_len", "packing", "default_system", "enable_thinking")


def load_conversations(args: Any) -> list:
    """The configured data set's conversations, as `eaft train` reads them (`args`: a TrainConfig's `eaft`)."""
    return load_dataset_conversations(
        args.dataset,
        data_format=args.data_format,
        dataset_dir=args.dataset_dir,
        max_samples=args.max_samples,
        compat=args.compat,
    )


def prepare_data(config: TrainConfig, tokenizer: Any) -> tuple[list[dict], list[dict]]:
    args = config.eaft
    conversations = load_conversations(args)
    if args.compat == "llamafactory":
        return llamafactory_examples(
            tokenizer,
            conversations,
            **{key: getattr(args, key) for key in LLAMAFACTORY_DATA_KEYS},
            seed=config.training.seed,
            name=args.dataset,
        )
    train, heldout = split_heldout(conversations, args.val_size)
    train_examples = encode_dataset(tokenizer, train, cutoff_len=args.cutoff_len, name=args.dataset)
    heldout_examples = (
        encode_dataset(tokenizer, heldout, cutoff_len=args.cutoff_len, name="held-out") if heldout else []
    )
    logger.info("data: %d training rows, %d held out (%s)", len(train_examples), len(heldout_examples), args.dataset)
    return train_examples, heldout_examples


def pack_rows(args: Any, examples: list[dict], pad_token_id: int) -> list[dict]:
    """The training rows: the examples, packed when packing is on (by LLaMA-Factory's rule under its compat)."""
    if not args.packing:
        return examples
    if args.compat == "llamafactory":
        return pack_llamafactory(examples, args.cutoff_len, pad_token_id=pad_token_id, neat=args.neat_packing)
    return pack_examples(examples, args.cutoff_len)


def apply_finetuning(model: torch.nn.Module, config: TrainConfig) -> torch.nn.Module:
    args = config.eaft
    if args.finetuning == "full":
        return model
    from peft import LoraConfig, get_peft_model

    lora = LoraConfig(
        r=args.lora_rank,
        lora_alpha=args.lora_alpha if args.lora_alpha is not None else 2 * args.lora_rank,
        lora_dropout=args.lora_dropout,
        target_modules=args.lora_target_modules(),
        task_type="CAUSAL_LM",
    )
    with peft_wrapping():
        model = get_peft_model(model, lora)
    if config.training.gradient_checkpointing:
        model.enable_input_require_grads()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info("LoRA r=%d on %s: %d trainable parameters", args.lora_rank, args.lora_target, trainable)
    return model


def save_final(model: torch.nn.Module, tokenizer: Any, run_dir: Path, lora: bool) -> Path:
    target = run_dir / ("adapter" if lora else "model")

    def save(tmp: Path) -> None:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)

    try:
        atomic_dir(target, save)  # the files get normal permissions (safetensors writes 0600)
    except (OSError, RuntimeError, SafetensorError) as err:
        raise save_failure("final " + target.name, target, err, run_dir) from err
    return target


def build_trainer(
    config: TrainConfig,
    model: Any,
    tokenizer: Any,
    objective: Any,
    rows: list,
    heldout: list,
    collator,
    run_dir: Path,
    curve: Any = None,
):
    """LoRA (or not), the sft_kl reference, the loss path, and the Trainer subclass around them; `curve` is the
    in-process evaluation callback (eaft.train.curve_eval), if any."""
    from eaft.train.trainer import ObjectiveTrainer

    args, training = config.eaft, config.training
    if args.finetuning == "lora":
        check_lora_targets(model, args.lora_target_modules())
    model = apply_finetuning(model, config)
    reference = Reference(model, lora=args.finetuning == "lora") if objective.needs_reference else None
    if reference is not None and reference.model is not model:
        reference.model.to(training.device)
    loss_module = ObjectiveLoss.for_model(
        model, objective, fused_loss=args.fused_loss, reference=reference, chunk_size=args.chunk_size
    )
    callbacks = [MetricsCallback(run_dir)]
    if args.checkpoint_steps:
        callbacks.append(CheckpointAtSteps(args.checkpoint_steps))
    if curve is not None:
        callbacks.append(curve)
    guard = RunGuard(
        vocab_size=vocab_size(model),
        learning_rate=training.learning_rate,
        max_grad_norm=training.max_grad_norm,
        allow_non_finite=args.allow_non_finite,
    )
    return ObjectiveTrainer(
        model=model,
        args=training,
        train_dataset=rows,
        eval_dataset=heldout or None,
        data_collator=collator,
        processing_class=tokenizer,  # checkpoints then hold the tokenizer, so each one can be evaluated alone
        loss_module=loss_module,
        guard=guard,
        callbacks=callbacks,
    )


def planned_steps(training: Any, rows: int) -> int:
    """The run's optimizer steps, as Trainer computes them; logged with the rest of the schedule."""
    batch = training.per_device_train_batch_size * max(training.world_size, 1)
    accumulation = training.gradient_accumulation_steps
    per_epoch = max(math.ceil(rows / batch) // accumulation, 1)
    if training.max_steps > 0:
        steps, epochs, source = training.max_steps, training.max_steps / per_epoch, "max_steps"
    else:
        steps, epochs = math.ceil(training.num_train_epochs * per_epoch), training.num_train_epochs
        source = "num_train_epochs"
    logger.info(
        "schedule: %d optimizer steps (%s; %.2f epochs of %d rows), batch %d × %d accumulation = %d rows a step, "
        "learning rate %g (%s, warmup %g)",
        steps,
        source,
        epochs,
        rows,
        batch,
        accumulation,
        batch * accumulation,
        training.learning_rate,
        getattr(training.lr_scheduler_type, "value", training.lr_scheduler_type),
        training.warmup_steps,
    )
    if steps < 1:
        raise RunError(
            f"the schedule has no optimizer step ({source}: max_steps={training.max_steps}, "
            f"num_train_epochs={training.num_train_epochs:g}); set max_steps >= 1 or num_train_epochs > 0"
        )
    return steps


def train_or_finish(trainer: Any, checkpoint: Path | None, steps: int) -> Totals:
    """Train (or continue) to the planned end; a checkpoint already at the end is loaded, not trained past."""
    if checkpoint is not None and checkpoint_step(checkpoint) >= steps:
        logger.info("%s is already at the planned end (step %d): loading it, training nothing", checkpoint, steps)
        trainer._load_from_checkpoint(str(checkpoint))
        trainer.state.global_step = checkpoint_step(checkpoint)
        prior = trainer.prior
        return Totals(prior.loss_sum, prior.steps, prior.wall_seconds + time.time() - trainer.session_start)
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    trainer.check_weights_to_save("final model")
    return trainer.totals()


def run_training(config: TrainConfig) -> Path:
    """Train as configured and return the run directory (complete once report.md exists).

    Order: the model source, the tokenizer, the data and the schedule are checked before the run directory is
    claimed (`claimed_run_dir`: one run per directory) and the model loads; the model is then checked against the
    config (LoRA targets, top-k) before any step.
    """
    args = config.eaft
    check_model_source(args.model)
    tokenizer = load_tokenizer(args.model, trust_remote_code=args.trust_remote_code)
    train_examples, heldout = prepare_data(config, tokenizer)
    objective = build_objective(args.objective, args.objective_args)
    rows = pack_rows(args, train_examples, tokenizer.pad_token_id)
    steps = planned_steps(config.training, len(rows))
    with claimed_run_dir(config) as (run_dir, checkpoint):
        started = time.time()
        data = (train_examples, rows, heldout)
        trainer, curve, totals, heldout_ce = train_model(config, tokenizer, objective, data, steps, run_dir, checkpoint)
        if not trainer.is_world_process_zero():
            return run_dir  # the main process saves the model and writes the report
        final = save_final(trainer.model, tokenizer, run_dir, lora=args.finetuning == "lora")
        warn_if_unlogged(trainer.guard, run_dir, config.training, trainer.state.global_step)
        plot_curve(run_dir)
        summary = run_summary(config, trainer, totals, final.relative_to(run_dir), len(train_examples))
        if checkpoint is not None:
            summary["resumed_from"] = checkpoint.name
        if curve is not None:
            summary["evaluation"] = curve.timings()
        if trainer.guard.warnings:
            summary["warnings"] = list(trainer.guard.warnings)
        if heldout_ce is not None:
            label_tokens = sum(sum(1 for x in e["labels"] if x != -100) for e in heldout)
            summary["heldout"] = {"rows": len(heldout), "tokens": label_tokens, **heldout_ce}
        write_report(run_dir, summary)
        if curve is not None and curve.plan.base:
            curve_report(curve, run_dir)
        logger.info("training complete in %.0f s: %s", time.time() - started, run_dir / REPORT)
    return run_dir


def train_model(
    config: TrainConfig, tokenizer: Any, objective: Any, data: tuple, steps: int, run_dir: Path, checkpoint
) -> tuple[Any, Any, Totals, dict | None]:
    """Load the model and train it (or continue) to the planned end. `data` = (examples, rows, held-out): the
    encoded training rows, the same packed when packing is on, and the held-out rows.
    Returns (trainer, in-process evaluation or None, totals, held-out statistics {before, after} or None)."""
    from transformers import set_seed

    args, training = config.eaft, config.training
    train_examples, rows, heldout = data
    started = time.time()
    set_seed(training.seed)
    model = load_model(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    check_objective_fits(objective, model)
    model.to(training.device)
    llamafactory = args.compat == "llamafactory"
    collator = CausalLMCollator(tokenizer.pad_token_id, pad_to_multiple_of=8 if llamafactory else None)
    if objective.needs_static_weight:
        attach_flow_weights(model, train_examples, objective, run_dir, collator, model_name=str(args.model))
        if rows is not train_examples:  # packed before the weights existed: pack again so the rows carry them
            rows = pack_rows(args, train_examples, tokenizer.pad_token_id)
    before = heldout_statistics(model, heldout, collator) if heldout else None
    curve = curve_evaluation(config, tokenizer, run_dir)
    trainer = build_trainer(config, model, tokenizer, objective, rows, heldout, collator, run_dir, curve)
    trainer.session_start = started
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
        truncate_metrics(run_dir, checkpoint_step(checkpoint))
        trainer.prior = Totals.from_checkpoint(checkpoint)
    totals = train_or_finish(trainer, checkpoint, steps)
    if curve is not None and trainer.is_world_process_zero():
        finish_curve(curve, trainer, steps)
    after = heldout_statistics(trainer.model, heldout, collator) if heldout else None
    return trainer, curve, totals, ({"before": before, "after": after} if heldout else None)


def run_summary(config: TrainConfig, trainer: Any, totals: Totals, saved: Path, training_rows: int) -> dict[str, Any]:
    """summary.json's head: what was trained, how, and the loss over all steps (a resumed run's included)."""
    args = config.eaft
    return {
        "model": str(args.model),
        "objective": args.objective,
        "objective_args": dict(args.objective_args),
        "finetuning": args.finetuning,
        "loss_path": trainer.loss_module.path_name,
        "training_rows": training_rows,
        "steps": trainer.state.global_step,
        "train_loss": totals.loss_sum / max(totals.steps, 1),
        "wall_seconds": round(totals.wall_seconds, 3),
        "saved": str(saved),
    }


def curve_evaluation(config: TrainConfig, tokenizer: Any, run_dir: Path) -> Any:
    """The in-process evaluation callback when eval_suite_steps asks for one (refused with several processes)."""
    from eaft.train.curve_eval import CurveEvaluation, curve_plan

    plan = curve_plan(config, run_dir)
    if plan is None:
        return None
    if config.training.world_size > 1:
        raise RunError(
            "eval_suite_steps scores the whole model in one process, but this run has "
            f"{config.training.world_size}: drop eval_suite_steps (eval_suite alone scores the saved model after "
            "training), or let `eaft experiment` with a launcher evaluate saved checkpoints"
        )
    return CurveEvaluation(plan, tokenizer)


def finish_curve(curve: Any, trainer: Any, steps: int) -> None:
    """The last step is scored even when training had nothing left to do (a checkpoint already at the end);
    points the run went past without scoring (it resumed after them) are named."""
    if not curve.steps:
        curve.resolve(steps)
    final = trainer.state.global_step
    if final in curve.missing():
        curve.evaluate(trainer.model, final)
    lost = curve.missing()
    if lost:
        trainer.guard.warn(
            f"evaluation points {lost} were not scored: the run resumed past them; pass overwrite_output_dir=true "
            "to train it again from the start and score them"
        )


def curve_report(curve: Any, run_dir: Path) -> None:
    """The run's forgetting table and frontier (base and every point) in the run directory, Δ lines in report.md."""
    from eaft.evaluate.after_training import add_to_report
    from eaft.evaluate.report import write_report as write_forgetting

    points = [curve.plan.point_dir(s) for s in curve.steps if (curve.plan.point_dir(s) / "results.json").is_file()]
    if not points or not (curve.plan.point_dir(0) / "results.json").is_file():
        return
    table = write_forgetting(curve.plan.point_dir(0), points, run_dir)
    add_to_report(run_dir, table, row=curve.plan.series)
