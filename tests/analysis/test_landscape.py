"""Thresholds, quadrants, objective weights and gradient norms on the plane, and the PNG landscapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from eaft.analysis.gradients import add_objective_columns, build_objectives, objective_weights, required_specs
from eaft.analysis.landscape import (
    QUADRANTS,
    Panel,
    _edges,
    conflict_mask,
    gradient_grid,
    plot_gradient_landscape,
    plot_landscape,
    quadrant_shares,
    quantile_thresholds,
)
from eaft.analysis.tokens import FULL_SPEC, TOPK_SPEC, entropy_column, token_statistics_table
from eaft.objectives import build_objective
from eaft.objectives.flow import flow_weights
from eaft.ops.stats import EntropySpec

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def random_plane(n=2000, seed=0):
    rng = np.random.default_rng(seed)
    return rng.beta(0.6, 1.5, n).astype(np.float32), rng.beta(0.8, 0.5, n).astype(np.float32)


@pytest.mark.parametrize(("qe", "qp"), [(0.15, 0.15), (0.3, 0.05)])
def test_thresholds_follow_the_quantile_definition(qe, qp):
    entropy, prob = random_plane()
    th = quantile_thresholds(entropy, prob, entropy_quantile=qe, prob_quantile=qp)
    for values, q, tau in ((entropy, qe, th.entropy), (prob, qp, th.prob)):
        # linear-interpolation quantile: at most q of the values lie strictly below it, at least q at or below
        assert np.mean(values < tau) <= q <= np.mean(values <= tau)
        ordered = np.sort(values.astype(np.float64))
        pos = q * (len(values) - 1)
        lo = int(np.floor(pos))
        assert tau == pytest.approx(ordered[lo] + (pos - lo) * (ordered[lo + 1] - ordered[lo]), rel=1e-12)
    with pytest.raises(ValueError, match="quantile must lie in"):
        quantile_thresholds(entropy, prob, entropy_quantile=1.5)
    with pytest.raises(ValueError, match="no label tokens"):
        quantile_thresholds(entropy[:0], prob[:0])


def test_quadrant_shares_sum_to_one_and_count_each_token_once():
    entropy, prob = random_plane(seed=3)
    th = quantile_thresholds(entropy, prob)
    shares = quadrant_shares(entropy, prob, th)
    assert list(shares) == list(QUADRANTS)
    assert sum(shares.values()) == pytest.approx(1.0, abs=1e-12)
    assert shares["low_entropy_low_prob"] == pytest.approx(conflict_mask(entropy, prob, th).mean())
    assert shares["low_entropy_high_prob"] == pytest.approx(np.mean((entropy < th.entropy) & (prob >= th.prob)))
    assert shares["low_entropy_low_prob"] + shares["low_entropy_high_prob"] == pytest.approx(
        np.mean(entropy < th.entropy)
    )


def test_weights_are_the_registry_objectives_and_gradients_scale_by_them(model, samples):
    objectives = build_objectives(["dft", "sft_kl", "flow", "talr"], {"eaft": {"alpha": 2.0}})
    assert list(objectives)[:2] == ["sft", "eaft"]
    extra = EntropySpec(mode="full", k=20, normalizer=3.0)
    objectives["masked_sft"] = build_objective("masked_sft", {"entropy": "full", "normalizer": 3.0})
    specs = required_specs(objectives, [TOPK_SPEC, FULL_SPEC])
    assert specs == [TOPK_SPEC, FULL_SPEC, extra]
    cols = token_statistics_table(model, samples, specs=specs, progress=False)
    cols = add_objective_columns(cols, objectives)
    np.testing.assert_allclose(cols["weight_sft"], 1.0)
    np.testing.assert_allclose(cols["weight_eaft"], cols["entropy_topk"] ** 2, rtol=1e-6)
    np.testing.assert_allclose(cols["weight_dft"], cols["prob"], rtol=1e-6)
    np.testing.assert_allclose(cols["weight_sft_kl"], 1.0)  # reference = the analyzed model: KL and its grad are 0
    h = cols[entropy_column(extra)]
    np.testing.assert_array_equal(cols["weight_masked_sft"], (h >= np.quantile(h, 0.15)).astype(np.float32))
    # flow: exp(-L0/τ), L0 = each sample's mean NLL, τ = the median over samples
    nll = [-cols["logprob"][cols["sample"] == i].astype(np.float32) for i in np.unique(cols["sample"])]
    ref, _ = flow_weights([torch.tensor(x).mean() for x in nll])
    expected = np.concatenate([np.full(len(x), float(w)) for x, w in zip(nll, ref, strict=True)])
    np.testing.assert_allclose(cols["weight_flow"], expected, rtol=1e-5)
    assert np.mean(cols["weight_talr"]) == pytest.approx(1.0, rel=0.05)  # mean-1 weights, floored at 0.01
    for name in objectives:
        np.testing.assert_allclose(cols[f"grad_{name}"], np.abs(cols[f"weight_{name}"]) * cols["grad_norm"], rtol=1e-6)
    with pytest.raises(KeyError, match="not analyzed"):
        build_objectives([], {"dft": {}})
    with pytest.raises(KeyError, match="reads 'entropy_topk_k5'"):
        objective_weights({k: v for k, v in cols.items()}, build_objective("eaft", {"k": 5}))


def test_log_axis_keeps_tiny_probabilities_apart_and_in_range():
    prob = np.array([0.0, 1e-9, 1e-6, 1e-6, 0.5])  # 0.0: an fp32 underflow
    panel = Panel("t", np.full(5, 0.5), prob, {"sft": np.ones(5)})
    px, py = _edges([panel], 9, "log")
    assert px[0] == 1e-9 and px[-1] == 1.0
    counts = np.nansum(gradient_grid(panel, "sft", px, py, "sum"), axis=1)  # grad 1 per token: sums count
    assert counts.sum() == 5 and counts[0] == 2 and counts[3] == 2  # the underflow joins the first column


def test_gradient_grid_means_and_sums_per_cell():
    prob = np.array([0.05, 0.05, 0.95, 0.55])
    entropy = np.array([0.05, 0.06, 0.9, 0.5])
    panel = Panel("t", entropy, prob, {"sft": np.array([1.0, 3.0, 0.5, 2.0])})
    edges = np.linspace(0, 1, 3)
    mean = gradient_grid(panel, "sft", edges, edges, "mean")
    total = gradient_grid(panel, "sft", edges, edges, "sum")
    assert mean[0, 0] == 2.0 and total[0, 0] == 4.0 and mean[1, 1] == pytest.approx(1.25)
    assert np.isnan(mean[0, 1]) and np.isnan(total[1, 0])  # empty cells are blank, not zero


def assert_png(path, min_bytes=10_000):
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC and len(data) > min_bytes
    import matplotlib.image

    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 200 and pixels.std() > 0.05  # not a blank canvas


def test_landscape_pngs_are_written_and_not_empty(tmp_path):
    entropy, prob = random_plane()
    th = quantile_thresholds(entropy, prob)
    grads = {"sft": np.sqrt(1 - prob), "eaft": entropy * np.sqrt(1 - prob)}
    data = Panel("data set", entropy, prob, grads)
    rollouts = Panel("rollouts", *random_plane(seed=9), grads)
    plot_landscape([data, rollouts], th, tmp_path / "landscape.png", bins=20)
    plot_gradient_landscape(data, th, tmp_path / "grad.png", bins=20, stat="sum")
    plot_landscape([data], th, tmp_path / "log.png", bins=20, prob_axis="log")
    for name in ("landscape.png", "grad.png", "log.png"):
        assert_png(tmp_path / name)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grad.png", "landscape.png", "log.png"]  # no temp files
    with pytest.raises(ValueError, match="probability axis"):
        plot_landscape([data], th, tmp_path / "x.png", prob_axis="sqrt")
