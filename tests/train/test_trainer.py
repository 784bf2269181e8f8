"""The Trainer subclass normalizes exactly: a gradient-accumulation window's loss is Σ token losses / label tokens."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainingArguments

from eaft.data import CausalLMCollator, encode_conversation
from eaft.loss import ObjectiveLoss
from eaft.objectives import build_objective, causal_lm_objective_loss
from eaft.train.trainer import ObjectiveTrainer
from tests.train.tiny import build_model, build_tokenizer

WORDS = "the quick brown fox jumps over the lazy dog".split()


def examples(tokenizer):
    # four conversations of different lengths, so that batches pad differently
    convs = [
        [{"role": "user", "content": " ".join(WORDS[: 2 + i])}, {"role": "assistant", "content": " ".join(WORDS[i:])}]
        for i in range(4)
    ]
    return [encode_conversation(tokenizer, c) for c in convs]


def one_step(tmp_path, data, vocab, batch, accumulation):
    model = build_model("llama", vocab_size=vocab, seed=0)
    args = TrainingArguments(
        output_dir=str(tmp_path / f"b{batch}"),
        per_device_train_batch_size=batch,
        gradient_accumulation_steps=accumulation,
        max_steps=1,
        learning_rate=1.0,
        optim="sgd",
        lr_scheduler_type="constant",
        weight_decay=0.0,
        max_grad_norm=0.0,  # no clipping: the update is exactly -lr * gradient
        save_strategy="no",
        logging_steps=1,
        report_to="none",
        remove_unused_columns=False,
        disable_tqdm=True,
    )
    trainer = ObjectiveTrainer(
        model=model,
        args=args,
        train_dataset=data,
        data_collator=CausalLMCollator(0),
        loss_module=ObjectiveLoss(build_objective("eaft")),
    )
    trainer.train()
    logged = next(row for row in trainer.state.log_history if "loss" in row)
    return model, logged


def test_accumulation_window_loss_and_update_equal_the_whole_batch(tmp_path):
    tokenizer = build_tokenizer()
    data = examples(tokenizer)
    vocab = len(tokenizer)
    whole, whole_log = one_step(tmp_path, data, vocab, batch=4, accumulation=1)
    split, split_log = one_step(tmp_path, data, vocab, batch=1, accumulation=4)

    # the reference: one batch of all four, Σ token losses / label tokens, one SGD step of lr 1
    reference = build_model("llama", vocab_size=vocab, seed=0)
    batch = CausalLMCollator(0)(data)
    labels = batch.pop("labels")
    loss, stats = causal_lm_objective_loss(reference(**batch).logits, labels, build_objective("eaft"))
    assert stats.tokens == sum(sum(1 for x in e["labels"] if x != -100) for e in data)
    loss.backward()
    for log in (whole_log, split_log):
        assert log["loss"] == pytest.approx(float(loss), abs=1e-4)
        assert log["label_tokens"] == stats.tokens and log["ce"] == pytest.approx(stats.ce_sum / stats.tokens, 1e-5)
    with torch.no_grad():
        for (name, p_ref), p_whole, p_split in zip(
            reference.named_parameters(), whole.parameters(), split.parameters(), strict=True
        ):
            expected = p_ref - p_ref.grad
            torch.testing.assert_close(p_whole, expected, rtol=1e-4, atol=1e-5, msg=name)
            torch.testing.assert_close(p_split, expected, rtol=1e-4, atol=1e-5, msg=name)
