"""Training through the trainer's loss paths: fused and materialized give the same loss curve (fp32, 5 steps)."""

from __future__ import annotations

import copy

import pytest
import torch

from eaft.loss import ObjectiveLoss, Reference
from eaft.objectives import build_objective
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


def loss_curve(model, fused, objective, checkpointing):
    model = copy.deepcopy(model)
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model.train()
    reference = Reference(model, lora=False) if objective.needs_reference else None
    path = ObjectiveLoss(objective, fused=fused, reference=reference)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for inputs, labels in batches():
        loss, _ = path(model, inputs, labels)
        stats = path.pop_window_stats()
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
    fused = loss_curve(model, True, objective, checkpointing)
    plain = loss_curve(model, False, objective, checkpointing)
    assert fused[-1][0] != fused[0][0]  # the model trained
    for step, (ours, theirs) in enumerate(zip(fused, plain, strict=True)):
        assert ours == pytest.approx(theirs, rel=1e-5, abs=1e-6), f"step {step}"


def test_a_configured_chunk_reaches_the_fused_op(monkeypatch):
    """`chunk_size` from the train config is the op's chunk (label tokens), and the result does not depend on it."""
    import eaft.objectives.loss

    seen = []
    real = eaft.objectives.loss.fused_linear_loss

    def spy(*args, **kwargs):
        seen.append(kwargs["chunk_size"])
        return real(*args, **kwargs)

    monkeypatch.setattr(eaft.objectives.loss, "fused_linear_loss", spy)
    model, objective = tiny_llama(tied=False), build_objective("eaft")
    inputs, labels = next(batches(steps=1))
    results = []
    for chunk in (7, None):
        path = ObjectiveLoss.for_model(model, objective, fused_loss="true", chunk_size=chunk)
        assert path.fused and path.chunk_size == chunk
        loss, _ = path(model, inputs, labels)
        stats = path.pop_window_stats()
        results.append((loss.item(), stats.ce_sum))
    assert seen == [7, None]
    assert results[0] == pytest.approx(results[1], rel=1e-6)
