"""The summary figures of a token table, on hand-made tokens whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest

from eaft.analysis.landscape import Thresholds
from eaft.analysis.report import figure_rows, set_summary


def hand_made_tokens() -> dict[str, np.ndarray]:
    """Six tokens: two inside the quantile region only, one inside both regions, one inside the fixed one only."""
    entropy = np.array([0.05, 0.10, 0.15, 0.30, 0.50, 0.19])
    prob = np.array([0.01, 0.20, 0.25, 0.05, 0.90, 0.08])
    grad_sft = np.array([1.0, 0.5, 0.5, 1.0, 0.1, 2.0])
    weight_eaft = entropy / 0.5
    return {
        "sample": np.array([0, 0, 0, 1, 1, 1]),
        "entropy_topk": entropy,
        "entropy_full": entropy,
        "entropy_nats": entropy,
        "prob": prob,
        "logprob": np.log(prob),
        "weight_sft": np.ones(6),
        "grad_sft": grad_sft,
        "weight_eaft": weight_eaft,
        "grad_eaft": weight_eaft * grad_sft,
    }


def test_gradient_shares_follow_both_conflict_definitions():
    columns = hand_made_tokens()
    # quantile-style thresholds that differ from the fixed ones (H̃ < 0.2, p < 0.1)
    th = Thresholds(entropy=0.16, prob=0.3, entropy_quantile=0.15, prob_quantile=0.15)
    summary = set_summary(columns, th, ["sft", "eaft"], sequences=2)
    quantile = np.array([True, True, True, False, False, False])  # H̃ < 0.16 and p < 0.3
    fixed = np.array([True, False, False, False, False, True])  # H̃ < 0.2 and p < 0.1
    assert summary["confident_conflict_share"] == pytest.approx(3 / 6)
    assert summary["fixed_conflict_share"] == pytest.approx(2 / 6)
    for name in ("sft", "eaft"):
        grad = columns[f"grad_{name}"]
        figures = summary["gradient"][name]
        assert figures["conflict_share_of_norm"] == pytest.approx(grad[quantile].sum() / grad.sum())
        assert figures["fixed_conflict_share_of_norm"] == pytest.approx(grad[fixed].sum() / grad.sum())
    assert summary["gradient"]["sft"]["fixed_conflict_share_of_norm"] == pytest.approx(3.0 / 5.1)
    labels = [label for label, _ in figure_rows({"data": summary}, ["data"])]
    assert "`sft`: share of gradient norm at fixed H̃ < 0.2, p < 0.1" in labels


def test_gradient_shares_are_zero_without_gradient():
    columns = hand_made_tokens()
    columns["grad_sft"] = np.zeros(6)
    th = Thresholds(entropy=0.16, prob=0.3, entropy_quantile=0.15, prob_quantile=0.15)
    figures = set_summary(columns, th, ["sft"], sequences=2)["gradient"]["sft"]
    assert figures["conflict_share_of_norm"] == 0.0 and figures["fixed_conflict_share_of_norm"] == 0.0
