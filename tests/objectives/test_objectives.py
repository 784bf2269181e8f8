"""Every objective against tests/reference/naive_objectives.py, plus closed-form oracles."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from eaft.loss import compute_loss_func
from eaft.objectives import build_objective, causal_lm_objective_loss, objective_names
from eaft.ops import EntropySpec, token_statistics
from tests.reference import naive_objectives as ref

SHAPES = [(1, 47, 123), (2, 32, 128), (3, 17, 257)]
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.bfloat16: dict(rtol=0.05, atol=1e-3)}


def make_batch(shape, seed=0, dtype=torch.float32, ignore_frac=0.3, scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    b, s, v = shape
    logits = (torch.randn(b, s, v, generator=gen) * scale).to(dtype)
    labels = torch.randint(0, v, (b, s), generator=gen)
    labels[torch.rand(b, s, generator=gen) < ignore_frac] = -100
    labels[:, 0] = -100  # a prompt token
    return logits, labels


CASES = {
    "sft": ({}, lambda z, y, zr, w: ref.sft(z, y)),
    "eaft": ({}, lambda z, y, zr, w: ref.eaft(z, y)),
    "eaft_alpha2_full": ({"alpha": 2.0, "entropy": "full"}, lambda z, y, zr, w: ref.eaft(z, y, 2.0, "full")),
    "eaft_sigmoid": ({"gate": "sigmoid"}, lambda z, y, zr, w: ref.eaft(z, y, gate="sigmoid")),
    "eaft_k5_norm3": ({"k": 5, "normalizer": 3.0}, lambda z, y, zr, w: ref.eaft(z, y, k=5, normalizer=3.0)),
    "dft": ({}, lambda z, y, zr, w: ref.dft(z, y)),
    "masked_sft": ({}, lambda z, y, zr, w: ref.masked_sft(z, y)),
    "masked_sft_q40": ({"quantile": 0.4}, lambda z, y, zr, w: ref.masked_sft(z, y, 0.4)),
    "sft_kl": ({}, lambda z, y, zr, w: ref.sft_kl(z, zr, y)),
    "sft_kl_b2": ({"beta": 2.0}, lambda z, y, zr, w: ref.sft_kl(z, zr, y, beta=2.0)),
    "flow": ({}, lambda z, y, zr, w: ref.flow(z, y, w)),
    "talr": ({}, lambda z, y, zr, w: ref.talr(z, y)),
    "talr_tau": ({"tau": 0.7, "min_weight": 0.2}, lambda z, y, zr, w: ref.talr(z, y, tau=0.7, min_weight=0.2)),
    "asft": ({}, lambda z, y, zr, w: ref.asft(z, zr, y)),
    "asft_alpha2": ({"alpha": 2.0}, lambda z, y, zr, w: ref.asft(z, zr, y, alpha=2.0)),
}


def run_ours(name, params, logits, labels, ref_logits, weights, chunk_size=16, num_items=None):
    objective = build_objective(
        name.split("_alpha")[0].split("_sigmoid")[0].split("_k5")[0].split("_q40")[0].split("_b2")[0].split("_tau")[0],
        params,
    )
    logits = logits.clone().requires_grad_(True)
    loss, _ = causal_lm_objective_loss(
        logits,
        labels,
        objective,
        ref_logits=ref_logits if objective.needs_reference else None,
        static_weights=weights if objective.needs_static_weight else None,
        chunk_size=chunk_size,
        num_items_in_batch=num_items,
    )
    loss.backward()
    return loss.detach(), logits.grad


def run_ref(fn, logits, labels, ref_logits, weights):
    logits = logits.clone().requires_grad_(True)
    loss = fn(logits, labels, ref_logits, weights)
    loss.backward()
    return loss.detach(), logits.grad


def test_every_registered_objective_has_a_case():
    covered = {
        case.split("_alpha")[0].split("_sigmoid")[0].split("_k5")[0].split("_q40")[0].split("_b2")[0].split("_tau")[0]
        for case in CASES
    }
    assert set(objective_names()) <= covered


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunk_size", [7, 16, 4096])
def test_matches_reference_loss_and_grad(case, shape, chunk_size):
    params, fn = CASES[case]
    logits, labels = make_batch(shape, seed=hash(case) % 1000)
    ref_logits = logits + torch.randn_like(logits)
    weights = torch.rand(labels.shape)
    ours_loss, ours_grad = run_ours(case, params, logits, labels, ref_logits, weights, chunk_size=chunk_size)
    ref_loss, ref_grad = run_ref(fn, logits, labels, ref_logits, weights)
    torch.testing.assert_close(ours_loss, ref_loss, **TOL[torch.float32])
    torch.testing.assert_close(ours_grad, ref_grad, **TOL[torch.float32])
    assert ours_grad.abs().sum() > 0


@pytest.mark.parametrize("case", ["sft", "eaft", "dft", "sft_kl", "talr", "asft"])
def test_bf16_logits(case):
    params, fn = CASES[case]
    logits, labels = make_batch((2, 33, 160), seed=3, dtype=torch.bfloat16)
    ref_logits = (logits.float() + torch.randn(logits.shape)).to(torch.bfloat16)
    weights = torch.rand(labels.shape)
    ours_loss, ours_grad = run_ours(case, params, logits, labels, ref_logits, weights)
    assert ours_grad.dtype == torch.bfloat16
    ref_loss, ref_grad = run_ref(fn, logits.float(), labels, ref_logits.float(), weights)
    torch.testing.assert_close(ours_loss, ref_loss, **TOL[torch.bfloat16])
    torch.testing.assert_close(ours_grad.float(), ref_grad, **TOL[torch.bfloat16])


def test_llamafactory_parity_normalizer_3():
    for seed in range(3):
        logits, labels = make_batch((2, 41, 321), seed=seed, scale=2.0 + seed)
        for alpha in (1.0, 0.5, 2.0):
            objective = build_objective("eaft", {"normalizer": 3.0, "k": 20, "alpha": alpha})
            ours, _ = causal_lm_objective_loss(logits, labels, objective)
            theirs = ref.llamafactory_eaft(logits, labels, alpha)
            assert abs(float(ours) - float(theirs)) < 1e-6


def test_llamafactory_asft_parity():
    for seed in range(3):
        logits, labels = make_batch((2, 41, 321), seed=seed, scale=2.0 + seed)
        ref_logits = logits + torch.randn(logits.shape, generator=torch.Generator().manual_seed(seed))
        for alpha in (0.1, 0.5, 2.0):
            objective = build_objective("asft", {"alpha": alpha})
            z = logits.clone().requires_grad_(True)
            ours, _ = causal_lm_objective_loss(z, labels, objective, ref_logits=ref_logits)
            ours.backward()
            z_theirs = logits.clone().requires_grad_(True)
            theirs = ref.llamafactory_asft(z_theirs, ref_logits, labels, asft_alpha=alpha)
            theirs.backward()
            assert abs(float(ours.detach()) - float(theirs.detach())) < 1e-6
            torch.testing.assert_close(z.grad, z_theirs.grad, rtol=1e-5, atol=1e-8)


def test_asft_is_dft_when_anchored_at_itself_or_alpha_zero():
    logits, labels = make_batch((2, 19, 70), seed=4)
    dft, _ = causal_lm_objective_loss(logits, labels, build_objective("dft"))
    same, _ = causal_lm_objective_loss(logits, labels, build_objective("asft"), ref_logits=logits)
    torch.testing.assert_close(same, dft, rtol=1e-6, atol=1e-7)  # KL(π ‖ π) = 0
    unanchored, _ = causal_lm_objective_loss(
        logits, labels, build_objective("asft", {"alpha": 0.0}), ref_logits=torch.randn_like(logits)
    )
    torch.testing.assert_close(unanchored, dft, rtol=1e-6, atol=1e-7)


def test_asft_kl_runs_from_the_reference_unlike_sft_kl():
    """Uniform model logits, a peaked reference: KL(q ‖ p) and KL(p ‖ q) differ, and each objective takes its own."""
    v = 30
    logits = torch.zeros(1, 2, v)
    ref_logits = torch.zeros(1, 2, v)
    ref_logits[0, 0, 3] = 4.0
    labels = torch.tensor([[-100, 7]])
    p, q = torch.full((v,), 1.0 / v), torch.softmax(ref_logits[0, 0], -1)
    kl_ref_model = float((q * (q.log() - p.log())).sum())
    kl_model_ref = float((p * (p.log() - q.log())).sum())
    asft = build_objective("asft", {"alpha": 1.0})
    sft_kl = build_objective("sft_kl", {"beta": 1.0})
    asft_loss, _ = causal_lm_objective_loss(logits, labels, asft, ref_logits=ref_logits)
    sft_kl_loss, _ = causal_lm_objective_loss(logits, labels, sft_kl, ref_logits=ref_logits)
    assert math.isclose(float(asft_loss), math.log(v) / v + kl_ref_model, rel_tol=1e-6)  # DFT on uniform: CE/V
    assert math.isclose(float(sft_kl_loss), math.log(v) + kl_model_ref, rel_tol=1e-6)
    assert abs(kl_ref_model - kl_model_ref) > 0.1


def stats_for(logits, labels):
    return token_statistics(logits, labels, EntropySpec())


def test_uniform_logits_give_eaft_weight_one():
    logits = torch.zeros(1, 9, 50)
    labels = torch.randint(0, 50, (1, 9))
    stats = stats_for(logits, labels)
    weights = build_objective("eaft").token_weights(stats)
    torch.testing.assert_close(weights, torch.ones_like(weights))
    # full entropy ln(50) > ln(20): clamped to 1
    full = token_statistics(logits, labels, EntropySpec("full"))
    torch.testing.assert_close(full.entropy, torch.ones_like(full.entropy))


def test_confident_wrong_token_gives_eaft_weight_near_zero_and_dft_weight_p():
    v = 64
    logits = torch.zeros(1, 2, v)
    logits[0, 0, 3] = 30.0  # near one-hot on token 3
    labels = torch.tensor([[-100, 7]])  # the label disagrees
    stats = stats_for(logits, labels)
    eaft_w = build_objective("eaft").token_weights(stats)
    assert float(eaft_w[0]) < 1e-9
    p = torch.softmax(logits[0, 0], -1)[7]
    dft_w = build_objective("dft").token_weights(stats)
    torch.testing.assert_close(dft_w[0], p)
    assert float(p) < 1e-12


def test_dft_on_uniform_logits_equals_ce_over_v():
    v = 37
    logits = torch.zeros(2, 6, v)
    labels = torch.randint(0, v, (2, 6))
    loss, _ = causal_lm_objective_loss(logits, labels, build_objective("dft"))
    assert math.isclose(float(loss), math.log(v) / v, rel_tol=1e-6)


def test_sigmoid_gate_is_half_at_b():
    objective = build_objective("eaft", {"gate": "sigmoid", "sigmoid_b": 0.17})
    from eaft.ops.stats import TokenStats

    h = torch.tensor([0.17, 0.0, 1.0])
    stats = TokenStats(target_logprob=torch.zeros(3), entropy=h, logsumexp=torch.zeros(3))
    w = objective.token_weights(stats)
    assert math.isclose(float(w[0]), 0.5, abs_tol=1e-7)
    assert float(w[1]) < 0.01 and float(w[2]) > 0.99


def test_masked_sft_drops_exactly_the_bottom_quantile():
    from eaft.ops.stats import TokenStats

    n = 200
    h = torch.randperm(n).float() / n  # distinct values
    stats = TokenStats(target_logprob=torch.zeros(n), entropy=h, logsumexp=torch.zeros(n))
    w = build_objective("masked_sft", {"quantile": 0.15}).token_weights(stats)
    dropped = (w == 0).nonzero().squeeze(1)
    assert len(dropped) == 30  # ceil(0.15 * 199) = 30 values lie strictly below the interpolated quantile
    assert set(dropped.tolist()) == set(torch.argsort(h)[:30].tolist())


def test_weights_are_detached_gradient_is_weight_times_ce_gradient():
    logits, labels = make_batch((2, 21, 90), seed=5)
    z = logits.clone().requires_grad_(True)
    loss, _ = causal_lm_objective_loss(z, labels, build_objective("eaft", {"alpha": 1.5}))
    loss.backward()
    zv, y, keep = ref.shifted_valid(logits, labels)
    h = ref.topk_entropy(zv) ** 1.5
    ce_grad = (torch.softmax(zv, -1) - F.one_hot(y, 90).float()) / keep.sum()
    expected = torch.zeros(2, 21, 90)
    expected[:, :-1].reshape(-1, 90)[keep.nonzero().squeeze(1)] = 0  # shape bookkeeping
    flat = torch.zeros(2 * 20, 90)
    flat[keep] = h[:, None] * ce_grad
    expected[:, :-1] = flat.reshape(2, 20, 90)
    torch.testing.assert_close(z.grad, expected, rtol=1e-5, atol=1e-7)


def test_ignore_index_positions_get_no_gradient():
    logits, labels = make_batch((2, 15, 40), seed=1, ignore_frac=0.5)
    z = logits.clone().requires_grad_(True)
    causal_lm_objective_loss(z, labels, build_objective("eaft"))[0].backward()
    targets = torch.cat([labels[:, 1:], torch.full((2, 1), -100)], 1)
    assert torch.all(z.grad[targets == -100] == 0)
    assert torch.all(z.grad[targets != -100].abs().sum(-1) > 0)


@pytest.mark.parametrize("name", ["sft", "eaft", "dft", "masked_sft", "talr", "sft_kl", "flow", "asft"])
def test_all_masked_batch_gives_zero_loss_that_backpropagates(name):
    logits = torch.randn(2, 5, 30, requires_grad=True)
    labels = torch.full((2, 5), -100)
    loss, stats = causal_lm_objective_loss(
        logits, labels, build_objective(name), ref_logits=torch.randn(2, 5, 30), static_weights=torch.ones(2, 5)
    )
    loss.backward()
    assert float(loss.detach()) == 0.0 and stats.tokens == 0
    assert torch.all(logits.grad == 0) and not torch.isnan(logits.grad).any()


@pytest.mark.parametrize("name", ["sft", "eaft", "dft", "sft_kl", "flow", "asft"])
def test_num_items_two_microbatches_equal_one_batch(name):
    logits, labels = make_batch((4, 19, 77), seed=11)
    ref_logits = torch.randn_like(logits)
    weights = torch.rand(labels.shape)
    total_items = int((labels[:, 1:] != -100).sum())
    objective = build_objective(name)

    def run(sl, num_items):
        z = logits[sl].clone().requires_grad_(True)
        loss, _ = causal_lm_objective_loss(
            z,
            labels[sl],
            objective,
            ref_logits=ref_logits[sl],
            static_weights=weights[sl],
            num_items_in_batch=num_items,
        )
        loss.backward()
        return loss.detach(), z.grad

    full_loss, full_grad = run(slice(0, 4), None)
    a_loss, a_grad = run(slice(0, 2), torch.tensor(total_items))
    b_loss, b_grad = run(slice(2, 4), total_items)
    torch.testing.assert_close(a_loss + b_loss, full_loss, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(torch.cat([a_grad, b_grad]), full_grad, rtol=1e-6, atol=1e-8)


def test_compute_loss_func_adapter_and_step_stats():
    logits, labels = make_batch((2, 23, 64), seed=2)
    func = compute_loss_func("eaft", alpha=1.0)
    loss = func({"logits": logits}, labels, num_items_in_batch=None)
    expected = ref.eaft(logits, labels)
    torch.testing.assert_close(loss, expected)
    means = func.last_stats.means()
    zv, y, _ = ref.shifted_valid(logits, labels)
    h = ref.topk_entropy(zv)
    assert means["label_tokens"] == y.numel()
    assert math.isclose(means["mean_entropy"], float(h.mean()), rel_tol=1e-5)
    assert math.isclose(means["mean_weight"], float(h.mean()), rel_tol=1e-5)
    assert math.isclose(means["ce"], float(F.cross_entropy(zv, y)), rel_tol=1e-5)
    p = torch.softmax(zv, -1).gather(1, y[:, None]).squeeze(1)
    assert math.isclose(means["conflict_share"], float(((h < 0.2) & (p < 0.1)).double().mean()), rel_tol=1e-9)
    assert means["conflict_share"] > 0
    with pytest.raises(ValueError, match="logits"):
        func({"loss": torch.tensor(1.0)}, labels)


def test_registry_errors_name_the_closest_key():
    with pytest.raises(KeyError, match="did you mean 'eaft'"):
        build_objective("eatf")
    with pytest.raises(KeyError, match="did you mean 'alpha'"):
        build_objective("eaft", {"alpah": 2})
    with pytest.raises(ValueError, match="gate"):
        build_objective("eaft", {"gate": "step"})
    with pytest.raises(ValueError, match="entropy"):
        build_objective("eaft", {"entropy": "approx"})


def test_objectives_needing_extras_refuse_without_them():
    logits, labels = make_batch((1, 9, 40))
    for name in ("sft_kl", "asft"):
        with pytest.raises(ValueError, match="reference"):
            causal_lm_objective_loss(logits, labels, build_objective(name))
    with pytest.raises(ValueError, match="precomputed"):
        causal_lm_objective_loss(logits, labels, build_objective("flow"))
