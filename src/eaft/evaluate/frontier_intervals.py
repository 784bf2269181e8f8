"""The frontier's 95% intervals: each family's difference from the reference at a matched target level, resampled.

One resample redraws the items of every task (paired: the same draw for every evaluation) and, in each family,
as many seeds as it has (with replacement). From the drawn items it recomputes every evaluation's target and
general scores, redraws each run's curve, reads each run's general score where its curve first reaches the level
(the levels stay those of the measured curves), averages a family's drawn seeds and takes the difference from the
reference family. The 2.5% and 97.5% percentiles over the resamples where both families reach the level form the
interval (eaft.evaluate.intervals).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from eaft.evaluate.intervals import LEVEL, RESAMPLES, SEED, ItemScores, draw_weights, interval, item_scores, verdict

GENERAL_AVG = "general avg"
TARGET_AVG = "target avg"


def crossing(xs: np.ndarray, ys: np.ndarray, level: float) -> np.ndarray:
    """y where each column's polyline (rows in step order) first reaches x = level, NaN where it never does.
    Shape: xs, ys [P, R] -> [R]."""
    out = np.full(xs.shape[1], np.nan)
    found = np.zeros(xs.shape[1], dtype=bool)
    for i in range(xs.shape[0] - 1):
        x0, x1, y0, y1 = xs[i], xs[i + 1], ys[i], ys[i + 1]
        hit = ~found & (np.minimum(x0, x1) <= level) & (level <= np.maximum(x0, x1))
        with np.errstate(divide="ignore", invalid="ignore"):
            value = np.where(x1 == x0, y1, y0 + (y1 - y0) * (level - x0) / (x1 - x0))
        out[hit] = value[hit]
        found |= hit
    return out


def _task_groups(table: dict[str, Any], target: str | None) -> tuple[list[str], list[str], list[str]]:
    columns = table["columns"]
    targets = [target] if target else [c["task"] for c in columns if c["group"] == "target"]
    general = [c["task"] for c in columns if c["group"] == "general"]
    extra = [c["task"] for c in columns if c["group"] == "extra"]
    return targets, general, extra


def _evaluation_items(evaluations: list[dict[str, Any]], tasks: list[str]) -> dict[str, list[ItemScores]]:
    """task -> its items in every evaluation (same order), for the tasks whose items all evaluations share."""
    found = {}
    for task in tasks:
        items = []
        for run in evaluations:
            record = run["tasks"].get(task)
            got = item_scores(run["dir"], task, record) if record is not None and run.get("dir") else None
            if got is None or (items and got.keys != items[0].keys):
                break
            items.append(got)
        else:
            found[task] = items
    return found


def resampled_scores(
    evaluations: list[dict[str, Any]], tasks: list[str], resamples: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """task -> [evaluations, resamples] scores under one shared item draw per task."""
    out = {}
    for task, items in _evaluation_items(evaluations, tasks).items():
        weights = draw_weights(rng, items[0], resamples)
        out[task] = np.stack([i.score(weights) for i in items])
    return out


def _measure(scores: dict[str, np.ndarray], tasks: list[str]) -> np.ndarray | None:
    if not tasks or any(t not in scores for t in tasks):
        return None
    return np.mean([scores[t] for t in tasks], axis=0)


def add_intervals(
    front: dict[str, Any],
    table: dict[str, Any],
    base: dict[str, Any],
    runs: list[dict[str, Any]],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> None:
    """Adds to each family's entry at each level of `front` (frontier_table's output) its `delta`, 95% `ci`,
    the share of resamples reaching the level (`reached`) and the `verdict`; `front['intervals']` says how."""
    rng = np.random.default_rng(seed)
    target = None if front["target"] == TARGET_AVG else front["target"]
    targets, general, extra = _task_groups(table, target)
    index = {(run["curve"]["series"], int(run["curve"]["step"])): run for run in runs if run.get("curve")}
    order = [("base", 0)] + [(s, p[0]) for s, c in front["curves"].items() for p in c["points"][1:]]
    evaluations = [base if key == ("base", 0) else index[key] for key in order]
    position = {key: i for i, key in enumerate(order)}
    scores = resampled_scores(evaluations, sorted(set(targets + general + extra)), resamples, rng)
    x = _measure(scores, targets)
    front["intervals"] = {"resamples": resamples, "level": LEVEL, "seed": seed, "tasks": sorted(scores)}
    families: dict[str, list[str]] = {}
    for series, curve in front["curves"].items():
        families.setdefault(curve["family"], []).append(series)
    draws = {f: rng.integers(0, len(seeds), size=(resamples, len(seeds))) for f, seeds in families.items()}
    seed_counts = {f: len(seeds) for f, seeds in families.items()}
    for measure, per_level in front["measures"].items():
        tasks = general if measure == GENERAL_AVG else [measure]
        y = _measure(scores, tasks)
        for entry in per_level:
            family_values = {}
            if x is not None and y is not None:
                for family, seeds in families.items():
                    values = []
                    for series in seeds:
                        rows = [position[(series, p[0])] if p[0] else 0 for p in front["curves"][series]["points"]]
                        values.append(crossing(x[rows], y[rows], entry["level"]))
                    picked = np.stack(values)[draws[family].T, np.arange(resamples)]  # [seeds, R]
                    family_values[family] = _nanmean(picked)
            _family_intervals(entry, front["reference"], family_values, seed_counts)


def _nanmean(values: np.ndarray) -> np.ndarray:
    """Column means over the finite entries (NaN where a column has none), without numpy's empty-slice warning."""
    finite = np.isfinite(values)
    counts = finite.sum(axis=0)
    sums = np.where(finite, values, 0.0).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / counts, np.nan)


def one_seed_note(family: str, reference: str, seeds: dict[str, int]) -> str:
    """The caveat of a comparison in which a side has one seed: the bootstrap can resample only what was run, so
    that side's seed-to-seed variation (often larger than the item noise) is not in the interval."""
    single = [name for name in (family, reference) if seeds.get(name, 0) == 1]
    if not single:
        return ""
    if len(single) == 2:
        return "; one seed on each side: the interval holds no seed-to-seed variation"
    return f"; one seed of {single[0]}: the interval holds no seed-to-seed variation of {single[0]}"


def _family_intervals(
    entry: dict[str, Any], reference: str, values: dict[str, np.ndarray], seeds: dict[str, int]
) -> None:
    ref_stat = entry["families"].get(reference) or {}
    for family, stat in entry["families"].items():
        if family == reference or stat["mean"] is None or ref_stat.get("mean") is None:
            continue
        delta = stat["mean"] - ref_stat["mean"]
        ci, reached = None, 0.0
        if family in values and reference in values:
            diff = values[family] - values[reference]
            reached = float(np.isfinite(diff).mean())
            ci = interval(diff)
        stat.update({"delta": delta, "ci": ci, "reached": reached})
        if ci is None:  # no items to resample (no samples, or scores they do not give back): the seed spread
            entry["verdicts"][family] += "; no per-item interval (the samples do not give the scores back)"
        else:
            entry["verdicts"][family] = verdict(delta, ci, reached) + one_seed_note(family, reference, seeds)
