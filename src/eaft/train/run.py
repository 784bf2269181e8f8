"""One training run: config -> data -> model -> objective -> trainer -> run directory."""

from __future__ import annotations

import logging
import math
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from eaft.data import CausalLMCollator, encode_dataset, pack_examples
from eaft.objectives import build_objective
from eaft.train.config import TrainConfig
from eaft.train.loss_paths import Reference, choose_loss_path
from eaft.train.models import load_model_and_tokenizer
from eaft.train.outputs import (
    REPORT,
    CheckpointAtSteps,
    MetricsCallback,
    atomic_save_dir,
    atomic_write_text,
    plot_curve,
    truncate_metrics,
    write_report,
)
from eaft.train.passes import attach_flow_weights, heldout_statistics
from eaft.train.sources import load_dataset_conversations, split_heldout

logger = logging.getLogger(__name__)
CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


class RunError(RuntimeError):
    """A run that cannot start or continue; the message says why and what to do."""


def complete_checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoints with their trainer_state.json (Trainer writes it last), newest first."""
    if not run_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in run_dir.iterdir() if (m := CHECKPOINT.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found, reverse=True) if (p / "trainer_state.json").is_file()]


def resume_checkpoint(config: TrainConfig, run_dir: Path) -> Path | None:
    """The checkpoint to continue from (resume=true: the newest complete one), or None for a fresh run."""
    explicit = config.training.resume_from_checkpoint
    if explicit not in (None, "", False) and str(explicit).lower() != "true":
        path = Path(explicit)
        if not (path / "trainer_state.json").is_file():
            raise RunError(f"resume_from_checkpoint={explicit!r}: not a complete checkpoint (no trainer_state.json)")
        return path
    if not (config.eaft.resume or str(explicit).lower() == "true"):
        return None
    if (run_dir / REPORT).is_file():
        raise RunError(f"resume=true but {run_dir} holds a finished run ({REPORT} exists)")
    checkpoints = complete_checkpoints(run_dir)
    if not checkpoints:
        raise RunError(f"resume=true but {run_dir} has no complete checkpoint; start without resume")
    return checkpoints[0]


def prepare_run_dir(config: TrainConfig) -> tuple[Path, Path | None]:
    run_dir = Path(config.training.output_dir)
    checkpoint = resume_checkpoint(config, run_dir)
    if checkpoint is None and run_dir.is_dir() and any(run_dir.iterdir()):
        if not config.eaft.overwrite_output_dir:
            raise RunError(
                f"output_dir {run_dir} already holds files; pass resume=true to continue it, "
                "overwrite_output_dir=true to replace it, or another output_dir"
            )
        if not (run_dir / "config.yaml").is_file():
            raise RunError(
                f"overwrite_output_dir=true but {run_dir} does not look like an eaft run; refusing to clear it"
            )
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run_dir / "config.yaml", yaml.safe_dump(config.raw, sort_keys=False))
    return run_dir, checkpoint


def prepare_run_dir_on_ranks(config: TrainConfig) -> tuple[Path, Path | None]:
    """`prepare_run_dir` on the main process, then the others read the result (it clears and writes the dir)."""
    import os

    training = config.training
    _ = training.device  # sets up the process group: world_size reads 1 before that
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched > 1 and training.world_size != launched:
        raise RunError(
            f"launched as {launched} processes but the trainer resolved {training.world_size} "
            f"({training.distributed_state.distributed_type}); each would train alone. On CPU pass use_cpu=true"
        )
    if training.world_size <= 1:
        return prepare_run_dir(config)
    with training.main_process_first(local=False, desc="prepare the run directory"):
        if training.process_index == 0:
            return prepare_run_dir(config)
    run_dir = Path(training.output_dir)
    return run_dir, resume_checkpoint(config, run_dir)


def prepare_data(config: TrainConfig, tokenizer: Any) -> tuple[list[dict], list[dict]]:
    args = config.eaft
    conversations = load_dataset_conversations(
        args.dataset, data_format=args.data_format, dataset_dir=args.dataset_dir, max_samples=args.max_samples
    )
    train, heldout = split_heldout(conversations, args.val_size)
    train_examples = encode_dataset(tokenizer, train, cutoff_len=args.cutoff_len, name=args.dataset)
    heldout_examples = (
        encode_dataset(tokenizer, heldout, cutoff_len=args.cutoff_len, name="held-out") if heldout else []
    )
    logger.info("data: %d training rows, %d held out (%s)", len(train_examples), len(heldout_examples), args.dataset)
    return train_examples, heldout_examples


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

    atomic_save_dir(target, save)
    return target


def build_trainer(
    config: TrainConfig, model: Any, tokenizer: Any, objective: Any, rows: list, heldout: list, collator, run_dir: Path
):
    """LoRA (or not), the sft_kl reference, the loss path, and the Trainer subclass around them."""
    from eaft.train.trainer import ObjectiveTrainer

    args, training = config.eaft, config.training
    model = apply_finetuning(model, config)
    reference = Reference(model, lora=args.finetuning == "lora") if objective.needs_reference else None
    if reference is not None and reference.model is not model:
        reference.model.to(training.device)
    loss_path = choose_loss_path(model, objective, args.fused_loss, reference=reference, chunk_size=args.chunk_size)
    callbacks = [MetricsCallback(run_dir)]
    if args.checkpoint_steps:
        callbacks.append(CheckpointAtSteps(args.checkpoint_steps))
    return ObjectiveTrainer(
        model=model,
        args=training,
        train_dataset=rows,
        eval_dataset=heldout or None,
        data_collator=collator,
        processing_class=tokenizer,  # checkpoints then hold the tokenizer, so each one can be evaluated alone
        loss_path=loss_path,
        callbacks=callbacks,
    )


def log_schedule(training: Any, rows: int) -> None:
    """The effective length of the run, as Trainer will compute it, said before the first step."""
    batch = training.per_device_train_batch_size * max(training.world_size, 1)
    accumulation = training.gradient_accumulation_steps
    per_epoch = max(math.ceil(rows / batch) // accumulation, 1)
    if training.max_steps > 0:
        steps, epochs = training.max_steps, training.max_steps / per_epoch
        source = "max_steps"
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


def run_training(config: TrainConfig) -> Path:
    """Train as configured and return the run directory (complete once report.md exists)."""
    from transformers import set_seed

    args, training = config.eaft, config.training
    run_dir, checkpoint = prepare_run_dir_on_ranks(config)
    started = time.time()
    set_seed(training.seed)
    model, tokenizer = load_model_and_tokenizer(args.model, dtype=args.dtype, trust_remote_code=args.trust_remote_code)
    model.to(training.device)
    train_examples, heldout = prepare_data(config, tokenizer)
    collator = CausalLMCollator(tokenizer.pad_token_id)
    objective = build_objective(args.objective, args.objective_args)
    if objective.needs_static_weight:
        attach_flow_weights(model, train_examples, objective, run_dir, collator, model_name=str(args.model))
    before = heldout_statistics(model, heldout, collator) if heldout else None
    rows = pack_examples(train_examples, args.cutoff_len) if args.packing else train_examples
    trainer = build_trainer(config, model, tokenizer, objective, rows, heldout, collator, run_dir)
    log_schedule(training, len(rows))
    if checkpoint is not None:
        logger.info("resuming from %s", checkpoint)
        truncate_metrics(run_dir, int(CHECKPOINT.match(checkpoint.name).group(1)))
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    after = heldout_statistics(trainer.model, heldout, collator) if heldout else None
    if not trainer.is_world_process_zero():
        return run_dir  # the main process saves the model and writes the report
    final = save_final(trainer.model, tokenizer, run_dir, lora=args.finetuning == "lora")
    plot_curve(run_dir)
    summary = {
        "model": str(args.model),
        "objective": args.objective,
        "objective_args": dict(args.objective_args),
        "finetuning": args.finetuning,
        "loss_path": "fused" if trainer.loss_path.fused else "materialized logits",
        "training_rows": len(train_examples),
        "steps": result.global_step,
        "train_loss": float(result.training_loss),
        "wall_seconds": round(time.time() - started, 1),
        "saved": str(final.relative_to(run_dir)),
    }
    if before is not None:
        label_tokens = sum(sum(1 for x in e["labels"] if x != -100) for e in heldout)
        summary["heldout"] = {"rows": len(heldout), "tokens": label_tokens, "before": before, "after": after}
    write_report(run_dir, summary)
    logger.info("run complete in %.0f s: %s", time.time() - started, run_dir / REPORT)
    return run_dir
