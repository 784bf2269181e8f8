"""Per-token statistics against a naive computation: unbatched full logits, autograd for the gradient norm."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from eaft.analysis.tokens import (
    FULL_SPEC,
    TOPK_SPEC,
    chunk_token_statistics,
    entropy_column,
    length_batches,
    token_statistics_table,
)
from eaft.ops.stats import EntropySpec, normalized_entropy
from tests.reference.naive_objectives import full_entropy, topk_entropy

TOL = dict(rtol=1e-5, atol=2e-6)  # fp32; batched vs one-by-one forwards differ in summation order only


def naive_statistics(model, samples) -> dict[str, np.ndarray]:
    """One sample at a time, no padding, full logits, and d CE / d logits by autograd."""
    cols: dict[str, list] = {k: [] for k in ("sample", "position", "token_id", "prob", "topk", "full", "nats", "grad")}
    for i, s in enumerate(samples):
        ids, labels = torch.tensor([s["input_ids"]]), torch.tensor(s["labels"])
        positions = [t for t in range(1, len(labels)) if labels[t] != -100]
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float()
        z = logits[[t - 1 for t in positions]].clone().requires_grad_(True)
        y = labels[positions]
        # rows are independent, so the gradient of the summed CE holds each token's own d CE / d z
        (grad,) = torch.autograd.grad(F.cross_entropy(z, y, reduction="sum"), z)
        z = z.detach()
        p = F.softmax(z, -1)
        cols["sample"] += [i] * len(positions)
        cols["position"] += positions
        cols["token_id"] += y.tolist()
        cols["prob"] += p[torch.arange(len(y)), y].tolist()
        cols["topk"] += topk_entropy(z).tolist()
        cols["full"] += full_entropy(z).tolist()
        cols["nats"] += (-(p * torch.log(p)).sum(-1)).tolist()
        cols["grad"] += grad.norm(dim=-1).tolist()
    return {k: np.asarray(v) for k, v in cols.items()}


@pytest.mark.parametrize(("batch_tokens", "fused_loss"), [(64, "false"), (4096, "false"), (64, "true"), (4096, "true")])
def test_statistics_equal_a_naive_computation(model, samples, batch_tokens, fused_loss):
    """On both paths of the loss module: the model's logits at the label positions, or hidden states x lm_head."""
    ours = token_statistics_table(
        model, samples, batch_tokens=batch_tokens, chunk_size=7, fused_loss=fused_loss, progress=False
    )
    ref = naive_statistics(model, samples)
    assert len(ref["prob"]) > 100
    for key in ("sample", "position", "token_id"):
        np.testing.assert_array_equal(ours[key], ref[key])
    np.testing.assert_allclose(ours["prob"], ref["prob"], **TOL)
    np.testing.assert_allclose(ours["entropy_topk"], ref["topk"], **TOL)
    np.testing.assert_allclose(ours["entropy_full"], ref["full"], **TOL)
    np.testing.assert_allclose(ours["entropy_nats"], ref["nats"], **TOL)
    np.testing.assert_allclose(ours["grad_norm"], ref["grad"], **TOL)


def test_padding_and_batching_do_not_change_the_statistics(model, samples):
    one = token_statistics_table(model, samples, batch_tokens=1, progress=False)
    many = token_statistics_table(model, samples, batch_tokens=10_000, max_batch=5, progress=False)
    for key in one:
        np.testing.assert_allclose(one[key], many[key], **TOL)


def test_samples_without_label_tokens_are_skipped(model, samples):
    cut = {"input_ids": samples[0]["input_ids"], "labels": [-100] * len(samples[0]["labels"])}
    mixed = token_statistics_table(model, [cut, *samples[1:3]], batch_tokens=1, progress=False)
    alone = token_statistics_table(model, samples[1:3], progress=False)
    np.testing.assert_array_equal(mixed["sample"], alone["sample"] + 1)
    np.testing.assert_allclose(mixed["prob"], alone["prob"], **TOL)
    empty = token_statistics_table(model, [cut], progress=False)
    assert set(empty) == set(alone) and all(len(v) == 0 for v in empty.values())


def test_chunk_statistics_agree_with_the_objectives_entropy_and_stay_exact_when_confident():
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(37, 123, generator=gen) * 4
    z[0] = 0.0  # uniform: normalized exact entropy saturates at 1
    z[1, 5] = 60.0  # one certain token: p ≈ 1, so ‖p − e_y‖ must not cancel to noise
    y = torch.randint(0, 123, (37,), generator=gen)
    y[1] = 5
    extra = EntropySpec(mode="topk", k=5, normalizer=3.0)
    out = chunk_token_statistics(z, y, [TOPK_SPEC, FULL_SPEC, extra])
    for spec in (TOPK_SPEC, FULL_SPEC, extra):
        torch.testing.assert_close(out[entropy_column(spec)], normalized_entropy(z, spec))
    assert out["entropy_full"][0] == 1.0 and math.isclose(float(out["entropy_nats"][0]), math.log(123), rel_tol=1e-6)
    p = torch.softmax(z.double(), -1)
    exact = (p - F.one_hot(y, 123).double()).norm(dim=-1)
    torch.testing.assert_close(out["grad_sq"].double().sqrt(), exact, rtol=1e-5, atol=1e-12)
    assert 0 < float(out["grad_sq"][1].sqrt()) < 1e-20


def test_length_batches_respect_the_token_budget():
    lengths = [5, 40, 7, 7, 100, 3, 12]
    batches = length_batches(lengths, batch_tokens=30, max_batch=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 3
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 30


def test_out_of_range_labels_name_the_sample(model):
    bad = [{"input_ids": [1, 2, 3], "labels": [-100, 2, 3]}, {"input_ids": [1, 2, 3], "labels": [-100, 2, 99999]}]
    with pytest.raises(ValueError, match="sample 1: label ids"):
        token_statistics_table(model, bad, progress=False)
    with pytest.raises(ValueError, match="sample 0: input_ids"):
        token_statistics_table(model, [{"input_ids": [1, 2], "labels": [-100]}], progress=False)
