"""95% intervals for score differences: a paired bootstrap over evaluation items (and seeds).

Every evaluation saves its per-item samples, and two evaluations of one suite score the same items, so a
difference between two models can be resampled item by item: draw the items of each task with replacement (the
same draw for every model: paired), recompute each task's score from the drawn items exactly as the task computes
it, and take the difference again. Over many draws the 2.5% and 97.5% percentiles of the difference form its 95%
interval. Where a family has several seeds, each draw also picks that many of its seeds with replacement, so the
interval carries seed noise as well as item noise.

A task's score as a function of its items (`ItemScores`):
- `mean`: the mean of per-item scores (accuracy, exact match, IFEval's prompt-level score);
- `ratio`: 100·Σa/Σb (IFEval's instruction-level score);
- `exp_nll`: 100·exp(−Σ nll·tokens / Σ tokens), the per-token likelihood of reference_likelihood and
  self_consistency;
- `category_mean`: the mean over categories of per-category accuracy (function calling, resampled within
  categories).
It is used only when recomputing the task's score from all its items gives the recorded score back (to 1e-6):
otherwise (old samples without token counts, an lm-eval record) the task has no interval and says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

RESAMPLES = 2000
LEVEL = 0.95
SEED = 0


@dataclass(frozen=True)
class ItemScores:
    """One evaluation's items of one task: keys (for pairing) and the arrays its score is computed from."""

    kind: str
    keys: tuple
    a: np.ndarray
    b: np.ndarray | None = None
    groups: np.ndarray | None = None

    def score(self, weights: np.ndarray) -> np.ndarray:
        """The task's score under item weights (bootstrap counts). Shape: weights [R, n] -> [R]."""
        if self.kind == "mean":
            return weights @ self.a / weights.sum(axis=1)
        if self.kind == "ratio":
            return 100.0 * (weights @ self.a) / (weights @ self.b)
        if self.kind == "exp_nll":
            return 100.0 * np.exp(-(weights @ self.a) / (weights @ self.b))
        means = []  # category_mean: every category keeps its size under resampling (drawn within it)
        for group in np.unique(self.groups):
            mask = self.groups == group
            means.append(weights[:, mask] @ self.a[mask] / weights[:, mask].sum(axis=1))
        return np.mean(means, axis=0)


def _samples(folder: Path, task: str) -> list[dict[str, Any]] | None:
    path = folder / "samples" / f"{task}.jsonl"
    if not path.is_file():
        return None
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _arrays(record: dict[str, Any], rows: list[dict[str, Any]]) -> ItemScores | None:
    kind = str(record.get("type", ""))
    keys = tuple((r.get("category"), r.get("line")) for r in rows)
    if kind == "multiple_choice":
        scoring = record.get("settings", {}).get("options", {}).get("scoring", "per_char")
        values = [100.0 * (r["pred"][scoring] == r["gold"]) for r in rows]
        return ItemScores("mean", keys, np.array(values))
    if kind == "generative":
        return ItemScores("mean", keys, np.array([100.0 * bool(r["correct"]) for r in rows]))
    if kind in ("reference_likelihood", "self_consistency"):
        tokens = np.array([float(r["tokens"]) for r in rows])
        return ItemScores("exp_nll", keys, np.array([r["nll"] for r in rows]) * tokens, tokens)
    if kind == "ifeval":
        strictness = "loose" if "loose" in str(record.get("metric")) else "strict"
        marks = [r[strictness] for r in rows]
        if str(record.get("metric", "")).startswith("inst_level"):
            return ItemScores(
                "ratio", keys, np.array([sum(m) for m in marks], float), np.array([len(m) for m in marks])
            )
        return ItemScores("mean", keys, np.array([100.0 * all(m) for m in marks]))
    if kind == "function_call":
        values = np.array([100.0 * bool(r["correct"]) for r in rows])
        return ItemScores("category_mean", keys, values, groups=np.array([r["category"] for r in rows]))
    return None


def item_scores(folder: str | Path, task: str, record: dict[str, Any]) -> ItemScores | None:
    """The task's items in an evaluation folder, or None where its score cannot be recomputed from them."""
    rows = _samples(Path(folder), task)
    if not rows:
        return None
    try:
        items = _arrays(record, rows)
    except (KeyError, TypeError, ValueError):
        return None
    if items is None:
        return None
    whole = float(items.score(np.ones((1, len(rows))))[0])
    if not np.isfinite(whole) or abs(whole - float(record["score"])) > 1e-6 * max(1.0, abs(whole)):
        return None
    return items


def draw_weights(rng: np.random.Generator, items: ItemScores, resamples: int) -> np.ndarray:
    """Bootstrap counts of each item in each resample. Shape: [resamples, n]. Within categories for
    `category_mean`, so each keeps its size."""
    n = len(items.keys)
    if items.groups is None:
        return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(float)
    weights = np.zeros((resamples, n))
    for group in np.unique(items.groups):
        where = np.flatnonzero(items.groups == group)
        weights[:, where] = rng.multinomial(len(where), np.full(len(where), 1.0 / len(where)), size=resamples)
    return weights


def interval(values: np.ndarray, level: float = LEVEL) -> tuple[float, float] | None:
    """The central `level` percentile interval of the finite values (None when there are none)."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None
    tail = 100.0 * (1.0 - level) / 2.0
    low, high = np.percentile(finite, [tail, 100.0 - tail])
    return float(low), float(high)


def _bound(value: float) -> str:
    """An interval end to two decimals, or to the first significant digit where two decimals would round a
    non-zero end to ±0.00 (so '-0.00' never ends an interval that excludes 0)."""
    if value == 0.0 or abs(value) >= 0.005:
        return f"{value:+.2f}"
    return f"{value:+.1g}"


def verdict(delta: float, ci: tuple[float, float] | None, reached: float = 1.0) -> str:
    """'above by …' / 'below by …' where the interval excludes 0, else 'no difference shown'."""
    if ci is None:
        return f"{delta:+.2f} (no interval: the per-item samples do not give this score back)"
    low, high = ci
    span = f"95% CI {_bound(low)} to {_bound(high)}"
    if low <= 0.0 <= high:
        text = f"no difference shown ({delta:+.2f}, {span})"
    else:  # the side is the interval's: it excludes 0 there, whatever the rounding of the point estimate
        text = f"{'above' if low > 0.0 else 'below'} by {abs(delta):.2f} ({span})"
    if reached < LEVEL:
        text += f"; the level is reached in only {100 * reached:.0f}% of resamples"
    return text


def delta_intervals(
    table: dict[str, Any],
    base: dict[str, Any],
    runs: list[dict[str, Any]],
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
) -> None:
    """Adds `delta_target_ci` and `delta_general_ci` to each row of a forgetting table: the 95% interval of its
    Δ (the mean over the group's shared tasks of run − base) under a paired bootstrap over each task's items.
    None where a task's items cannot be resampled (or differ between the two evaluations)."""
    rng = np.random.default_rng(seed)
    by_name = {run["run"]: run for run in runs}
    for row in table["rows"]:
        run = by_name.get(row["run"])
        if row["run"] == table["base"] or run is None:
            continue
        for group in ("target", "general"):
            names = [
                c["task"]
                for c in table["columns"]
                if c["group"] == group
                and c["task"] in run["tasks"]
                and c["task"] in base["tasks"]
                and c["task"] not in row.get("not_compared", {})  # left out of the Δ (--allow-mismatch)
            ]
            row[f"delta_{group}_ci"] = _paired_delta(names, base, run, rng, resamples)


def _paired_delta(
    names: list[str], base: dict[str, Any], run: dict[str, Any], rng: np.random.Generator, resamples: int
) -> tuple[float, float] | None:
    diffs = []
    for name in names:
        before = item_scores(base.get("dir", ""), name, base["tasks"][name]) if base.get("dir") else None
        after = item_scores(run.get("dir", ""), name, run["tasks"][name]) if run.get("dir") else None
        if before is None or after is None or before.keys != after.keys:
            return None
        weights = draw_weights(rng, before, resamples)
        diffs.append(after.score(weights) - before.score(weights))
    return interval(np.mean(diffs, axis=0)) if diffs else None


def ci_text(ci: tuple[float, float] | None) -> str:
    """` [low, high]` for a table cell, or nothing."""
    return "" if ci is None else f" [{ci[0]:+.2f}, {ci[1]:+.2f}]"
