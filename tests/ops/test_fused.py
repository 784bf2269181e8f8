"""The fused op (torch backend) against the naive objectives on materialized logits: loss and all three grads."""

from __future__ import annotations

import pytest
import torch

from eaft.objectives import causal_lm_objective_loss, objective_names
from tests.ops.cases import CASES, assert_matches, make_inputs, objective_of, run_fused, run_reference

# (B, S, H, V): odd, round, and a vocabulary smaller than the chunk grid
SHAPES = [(1, 47, 17, 123), (2, 32, 16, 128), (3, 19, 9, 257)]


def test_every_registered_objective_has_a_case():
    assert set(objective_names()) <= {name for name, _, _ in CASES.values()}


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunk_size", [7, 16, None])
def test_matches_reference(case, shape, chunk_size):
    inputs, labels = make_inputs(*shape, seed=len(case) + shape[1])
    ours, ours_grads, _ = run_fused(case, inputs, labels, chunk_size=chunk_size)
    theirs, their_grads = run_reference(case, inputs, labels)
    assert_matches(ours, theirs)
    for mine, ref in zip(ours_grads, their_grads, strict=True):
        assert_matches(mine, ref)
        assert mine.abs().sum() > 0


@pytest.mark.parametrize("case", list(CASES))
def test_num_items_in_batch_and_no_bias(case):
    inputs, labels = make_inputs(2, 21, 8, 64, seed=5, bias=False)
    for num_items in (50, torch.tensor(37)):
        ours, ours_grads, _ = run_fused(case, inputs, labels, chunk_size=9, num_items=num_items)
        theirs, their_grads = run_reference(case, inputs, labels, num_items=int(num_items))
        assert_matches(ours, theirs)
        assert ours_grads[2] is None
        for mine, ref in zip(ours_grads[:2], their_grads[:2], strict=True):
            assert_matches(mine, ref)


@pytest.mark.parametrize("case", list(CASES))
def test_all_ignored_gives_a_zero_loss_that_backprops(case):
    inputs, labels = make_inputs(2, 9, 8, 40, seed=1)
    labels[:] = -100
    loss, grads, stats = run_fused(case, inputs, labels, chunk_size=4)
    assert loss.item() == 0.0 and stats.tokens == 0
    for grad in grads:
        assert grad is not None and torch.isfinite(grad).all() and not grad.any()


@pytest.mark.parametrize("chunk_size", [16, 40, None])
@pytest.mark.parametrize("case", ["sft", "eaft", "eaft_full_alpha2", "dft", "talr", "sft_kl"])
def test_bf16_params(case, chunk_size):
    """40 and the default cut a chunk into several fp32 row blocks of the CPU math, the last one partial."""
    inputs, labels = make_inputs(2, 33, 24, 160, seed=3, dtype=torch.bfloat16)
    ours, ours_grads, _ = run_fused(case, inputs, labels, chunk_size=chunk_size)
    assert all(g.dtype == torch.bfloat16 for g in ours_grads)
    theirs, their_grads = run_reference(case, inputs, labels, upcast=True)
    assert_matches(ours, theirs, torch.bfloat16)
    for mine, ref in zip(ours_grads, their_grads, strict=True):
        assert_matches(mine, ref, torch.bfloat16)


@pytest.mark.parametrize("case", ["eaft", "masked_sft", "sft_kl"])
def test_step_stats_equal_the_materialized_path(case):
    inputs, labels = make_inputs(2, 30, 12, 90, seed=7)
    _, _, stats = run_fused(case, inputs, labels, chunk_size=8)
    logits = inputs["hidden"] @ inputs["weight"].T + inputs["bias"]
    ref_logits = inputs["ref_hidden"] @ inputs["ref_weight"].T
    objective = objective_of(case)
    _, expected = causal_lm_objective_loss(
        logits, labels, objective, ref_logits=ref_logits if objective.needs_reference else None
    )
    assert stats.tokens == expected.tokens
    for field in ("ce_sum", "entropy_sum", "weight_sum", "conflicts"):
        assert getattr(stats, field) == pytest.approx(getattr(expected, field), rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("chunk_size", [1, 16, 24, 64, 100])
def test_chunk_sizes_that_do_and_do_not_divide_the_label_count(chunk_size):
    inputs, labels = make_inputs(2, 33, 16, 128, seed=9, ignore_frac=0.0)  # N = 2 × 32 = 64 label rows
    for case in ("eaft", "talr"):
        ours, ours_grads, stats = run_fused(case, inputs, labels, chunk_size=chunk_size)
        theirs, their_grads = run_reference(case, inputs, labels)
        assert stats.tokens == 64
        assert_matches(ours, theirs)
        for mine, ref in zip(ours_grads, their_grads, strict=True):
            assert_matches(mine, ref)


@pytest.mark.parametrize("case", ["eaft", "eaft_full_alpha2"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_vocabulary_past_one_block(dtype, case):
    """V = 8200 spans five vocabulary blocks (2048 rows) of the CPU math's statistics and two (8192 rows) of the
    16-bit weight gradient's products; the last block of each holds fewer rows than the top k."""
    inputs, labels = make_inputs(1, 45, 8, 8200, seed=5, dtype=dtype)
    ours, ours_grads, _ = run_fused(case, inputs, labels, chunk_size=24)
    theirs, their_grads = run_reference(case, inputs, labels, upcast=dtype != torch.float32)
    assert_matches(ours, theirs, dtype)
    for mine, ref in zip(ours_grads, their_grads, strict=True):
        assert_matches(mine, ref, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("mode", ["topk", "full"])
def test_cpu_math_gradient_after_its_statistics_and_after_a_recompute(mode, dtype):
    """The CPU math's statistics leave exp(z − max) in the logits, and its gradient is that buffer with new values
    at the targets times a per-token scale; logits recomputed into the same buffer (the batch-global pass) are a
    new tensor and get the full formula. Both equal the spec, confident tokens (p(y) near 1) included."""
    from eaft.ops.cpu import cpu_logits, cpu_logits_grad, cpu_statistics
    from eaft.ops.fused import ScaledGrad
    from eaft.ops.stats import EntropySpec, chunk_logits_grad, chunk_statistics

    gen = torch.Generator().manual_seed(7)
    hidden, weight = torch.randn(12, 16, generator=gen), torch.randn(3000, 16, generator=gen)
    targets = torch.randint(0, 3000, (12,), generator=gen)
    grad_logprob = torch.cat([-torch.rand(11, generator=gen), torch.tensor([0.5])])  # one negative weight
    hidden[0] *= 12.0
    targets[0] = (hidden[0] @ weight.T).argmax()  # confident and right: 1 − p(y) ≈ 3e-4
    hidden, weight = hidden.to(dtype), weight.to(dtype)
    spec = EntropySpec(mode=mode)
    z_ref = hidden.float() @ weight.float().T if dtype == torch.float32 else (hidden @ weight.T).float()
    lse_ref, logprob_ref, entropy_ref, _ = chunk_statistics(z_ref, targets, spec)
    assert 1e-4 < -torch.expm1(logprob_ref[0]) < 1e-3
    z64 = z_ref.double()  # the exact gradient: the spec's fp32 p · (−g) + g cancels where p(y) ≈ 1
    grad_ref = chunk_logits_grad(z64, targets, z64.logsumexp(1), grad_logprob.double()).float()
    grad_spec = chunk_logits_grad(z_ref, targets, lse_ref, grad_logprob)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=0.01, atol=2e-3)
    buffer = torch.empty(12, 3000, dtype=dtype)
    z = cpu_logits(hidden, weight, None, buffer)
    lse, logprob, entropy, _ = cpu_statistics(z, targets, spec)
    for ours, ref in ((lse, lse_ref), (logprob, logprob_ref), (entropy, entropy_ref)):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(z.float(), z_ref)  # the buffer now holds exp(z − max)
    grad = cpu_logits_grad(z, targets, lse, grad_logprob)
    assert isinstance(grad, ScaledGrad) and grad.values.data_ptr() == buffer.data_ptr()
    torch.testing.assert_close(grad.dense(), grad_ref, **tol)
    # g · (1 − p(y)) at the targets, tiny where confident, to 0.1% (the spec's fp32 is off by 1% at 1 − p(y) ≈ 3e-4,
    # and a bf16 p(y) by more than the value)
    rows = torch.arange(12)
    rtol = 1e-3 if dtype == torch.float32 else 0.01
    torch.testing.assert_close(grad.dense()[rows, targets], grad_ref[rows, targets], rtol=rtol, atol=1e-12)
    cpu_statistics(cpu_logits(hidden, weight, None, buffer), targets, spec)  # statistics of a chunk, then dropped
    recomputed = cpu_logits(hidden, weight, None, buffer)  # the same storage, a new tensor holding logits
    # from lse alone, as precise at the targets as the spec
    torch.testing.assert_close(cpu_logits_grad(recomputed, targets, lse, grad_logprob).dense(), grad_spec, **tol)


@pytest.mark.parametrize("chunk_size", [5, 16, None])
def test_bf16_weight_gradient_over_several_slabs_and_chunks(monkeypatch, chunk_size):
    """The 16-bit weight gradient's fp32 sums in slabs of whole blocks (here 4 slabs of 2 × 16 rows, the last
    partial): first chunk written, middle ones added, the last rounded into the result; one chunk (None) goes
    straight to the result. Loss and all gradients match the upcast reference."""
    import eaft.ops.fused as fused

    monkeypatch.setattr(fused, "WEIGHT_GRAD_BLOCK", 16)
    monkeypatch.setattr(fused, "WEIGHT_GRAD_SLAB_BYTES", 4 * 16 * 12 * 2)
    inputs, labels = make_inputs(2, 17, 12, 100, seed=11, dtype=torch.bfloat16)
    for case in ("eaft", "talr"):
        ours, ours_grads, _ = run_fused(case, inputs, labels, chunk_size=chunk_size)
        theirs, their_grads = run_reference(case, inputs, labels, upcast=True)
        assert_matches(ours, theirs, torch.bfloat16)
        for mine, ref in zip(ours_grads, their_grads, strict=True):
            assert mine.dtype == torch.bfloat16
            assert_matches(mine, ref, torch.bfloat16)


def test_default_chunk_takes_a_16_bit_step_whole_up_to_twice_the_hidden_size():
    """One chunk spares a 16-bit weight gradient its fp32 slabs (4·V·H bytes); its [N, V] buffer is no larger up
    to N = 2·H. fp32 (no slabs), CUDA and longer steps keep the byte budget; a configured chunk is never touched."""
    from eaft.ops import default_chunk_size

    vocab = 151_936
    assert default_chunk_size(vocab, "cpu", 4) == 160
    assert default_chunk_size(vocab, "cpu", 2) == 328
    assert default_chunk_size(vocab, "cpu", 2, rows=1001, hidden_size=896) == 1008
    assert default_chunk_size(vocab, "cpu", 2, rows=1792, hidden_size=896) == 1792
    assert default_chunk_size(vocab, "cpu", 2, rows=1793, hidden_size=896) == 328
    assert default_chunk_size(vocab, "cpu", 2, rows=100, hidden_size=896) == 328  # the budget when it is larger
    assert default_chunk_size(vocab, "cpu", 4, rows=1001, hidden_size=896) == 160
    assert default_chunk_size(vocab, "cuda", 2, rows=1001, hidden_size=896) == default_chunk_size(vocab, "cuda", 2)
