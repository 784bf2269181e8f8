"""Hand-made inputs of the regime map: frontier.json and summary.json with known values, and a map.json."""

from __future__ import annotations

import json
from pathlib import Path

from eaft.evaluate.intervals import verdict

SERIES = {"sft": "sft", "sft_seed1": "sft", "eaft": "eaft", "eaft_seed1": "eaft", "sft_kl": "sft_kl"}
MEASURES = ("general avg", "self_consistency")


def frontier(
    *,
    base: float = 20.0,
    top: float = 40.0,
    deltas: dict[str, list[float | None]],
    ci_width: float = 1.0,
    first: dict[str, list[bool]] | None = None,
    reference_reached: list[bool] | None = None,
) -> dict:
    """A frontier.json with 5 levels (the fifths of base → top) and, at level i, each family's difference from sft
    `deltas[family][i]` (None: not reached) with the interval delta ± ci_width, the same in every measure.
    `first[series][i]` marks a series' value as read off its first segment."""
    levels = [base + (top - base) * i / 5 for i in range(1, 6)]
    curves = {s: {"family": f, "points": [[0, base, {}], [9, top, {}]]} for s, f in SERIES.items()}
    reached_ref = reference_reached or [True] * 5
    per_level = []
    for i, level in enumerate(levels):
        ref_mean = 50.0 - i if reached_ref[i] else None
        families = {"sft": {"seeds": ["sft", "sft_seed1"], "mean": ref_mean, "spread": 0.5}}
        verdicts = {}
        for family, values in deltas.items():
            delta = values[i]
            seeds = [s for s, f in SERIES.items() if f == family]
            stat = {"seeds": seeds, "mean": None if delta is None else 50.0 - i + delta, "spread": None}
            if delta is not None and ref_mean is not None:
                ci = (delta - ci_width, delta + ci_width)
                stat |= {"delta": delta, "ci": list(ci), "reached": 1.0}
                verdicts[family] = verdict(delta, ci)
            elif delta is not None:
                verdicts[family] = "not comparable: the reference does not reach this level"
            families[family] = stat
        flags = {s: bool(first and first.get(s, [False] * 5)[i]) for s in SERIES}
        per_level.append({"level": level, "families": families, "verdicts": verdicts, "first_segment": flags})
    return {
        "target": "target avg",
        "reference": "sft",
        "levels": levels,
        "curves": curves,
        "measures": {m: per_level for m in MEASURES},
        "intervals": {"resamples": 2000, "level": 0.95, "seed": 0, "tasks": []},
    }


def summary(sft_share: float, *, eaft_share: float = 0.01, entropy_quantile: float = 0.15) -> dict:
    """An `eaft analyze` summary.json with the figures the map reads."""
    return {
        "config": {
            "model_label": "SmolLM2-135M-Instruct (embedded default)",
            "entropy": "topk",
            "entropy_quantile": entropy_quantile,
            "prob_quantile": 0.15,
            "adapter": None,
        },
        "data": {
            "tokens": 1000,
            "sequences": 40,
            "confident_conflict_share": sft_share / 2,
            "fixed_conflict_share": sft_share / 3,
            "gradient": {
                "sft": {"mean_norm": 0.5, "conflict_share_of_norm": sft_share},
                "eaft": {"mean_norm": 0.2, "conflict_share_of_norm": eaft_share},
            },
        },
    }


def write_regime(root: Path, name: str, front: dict, summ: dict) -> tuple[Path, Path]:
    """(report folder, analyze folder) of one regime under `root`."""
    report, analyze = root / name / "report", root / name / "analyze"
    report.mkdir(parents=True)
    analyze.mkdir(parents=True)
    (report / "frontier.json").write_text(json.dumps(front), encoding="utf-8")
    (analyze / "summary.json").write_text(json.dumps(summ), encoding="utf-8")
    return report, analyze


def map_entry(name: str, share: float, eaft: list[str], sft_kl: list[str]) -> dict:
    """One regime of a hand-made map.json: its dose and the verdict texts at the two levels (both measures)."""

    def comparisons(texts: list[str]) -> list[dict]:  # an "above"/"below" verdict has an interval that excludes 0
        ci = {"above": [0.5, 1.5], "below": [-1.5, -0.5]}
        return [
            {
                "verdict": t,
                "first_segment": False,
                "delta": 0.0,
                "ci": ci.get(t.split()[0], [-1.0, 1.0]),
                "status": "compared",
            }  # fmt: skip
            for t in texts
        ]

    return {
        "name": name,
        "dose": {"sft_gradient_share": share, "confident_conflict_share": share / 2, "fixed_conflict_share": share},
        "comparisons": {m: {"eaft": comparisons(eaft), "sft_kl": comparisons(sft_kl)} for m in MEASURES},
    }


def hand_map(regimes: list[dict], *, model: str = "SmolLM2-135M-Instruct (embedded default)") -> dict:
    return {
        "format": 1,
        "setting": "SmolLM2-135M-Instruct, full fine-tuning, 24 steps",
        "analyze": {"model_label": model, "entropy": "topk", "entropy_quantile": 0.15, "prob_quantile": 0.15},
        "reference": "sft",
        "compare": ["eaft", "sft_kl"],
        "measures": list(MEASURES),
        "fractions": [0.4, 0.8],
        "regimes": regimes,
    }
