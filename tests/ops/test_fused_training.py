"""Training through the trainer's loss paths: fused and materialized give the same loss curve (fp32, 5 steps)."""

from __future__ import annotations

import copy

import pytest
import torch

from eaft.objectives import build_objective
from eaft.train.loss_paths import FusedLossPath, LossPath, Reference
from tests.train.tiny import build_model


def tiny_llama(tied: bool):
    return build_model("llama", vocab_size=97, tied=tied)


def batches(steps=5, size=3, length=19, vocab=97):
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        input_ids = torch.randint(0, vocab, (size, length), generator=gen)
        labels = input_ids.clone()
        labels[:, :5] = -100  # the prompt
        labels[torch.rand(size, length, generator=gen) < 0.2] = -100
        yield {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}, labels


def loss_curve(model, path_cls, objective, checkpointing):
    model = copy.deepcopy(model)
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    reference = Reference(model, lora=False) if objective.needs_reference else None
    path = path_cls(objective, reference=reference)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for inputs, labels in batches():
        loss, stats, _ = path(model, inputs, labels, None, None)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append((loss.item(), stats.ce_sum, stats.weight_sum))
    return losses


@pytest.mark.parametrize(
    "objective, tied, checkpointing",
    [("eaft", True, True), ("talr", False, False), ("sft_kl", True, False)],
)
def test_fused_and_materialized_loss_curves_agree(objective, tied, checkpointing):
    model = tiny_llama(tied)
    objective = build_objective(objective)
    fused = loss_curve(model, FusedLossPath, objective, checkpointing)
    plain = loss_curve(model, LossPath, objective, checkpointing)
    assert fused[-1][0] != fused[0][0]  # the model trained
    for step, (ours, theirs) in enumerate(zip(fused, plain, strict=True)):
        assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-6), f"step {step}"


def test_a_configured_chunk_reaches_the_fused_op(monkeypatch):
    """`chunk_size` from the train config is the op's chunk (label tokens), and the result does not depend on it."""
    import eaft.ops
    from eaft.train.loss_paths import choose_loss_path

    seen = []
    real = eaft.ops.fused_linear_objective

    def spy(*args, **kwargs):
        seen.append(kwargs["chunk_size"])
        return real(*args, **kwargs)

    monkeypatch.setattr(eaft.ops, "fused_linear_objective", spy)
    model, objective = tiny_llama(tied=False), build_objective("eaft")
    inputs, labels = next(batches(steps=1))
    results = []
    for chunk in (7, None):
        path = choose_loss_path(model, objective, "true", reference=None, chunk_size=chunk)
        assert path.fused and path.chunk_size == chunk
        loss, stats, _ = path(model, inputs, labels, None, None)
        results.append((loss.item(), stats.ce_sum))
    assert seen == [7, None]
    assert results[0] == pytest.approx(results[1], rel=1e-6)
