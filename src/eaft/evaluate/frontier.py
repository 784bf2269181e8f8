"""The forgetting frontier: general scores against the target score along each run's training curve.

A curve is one training run's evaluations in step order, starting at the base model (step 0). At matched target
levels each curve's general score is read off by linear interpolation between the two neighbouring checkpoints
where the curve first reaches the level; a curve that never reaches a level is "not reached" there, never
extrapolated. Runs that differ only in seed form a family. At a level, the seed spread of a family is the range
(max − min) of its seeds' values; a gap between two families no larger than the largest seed spread at that level
reads "within seed spread", and no winner is named there.
Outputs: `frontier.md`, `frontier.json` and `frontier.png` (one panel per general measure).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eaft.io import save_figure

TARGET_AVG = "target avg"
GENERAL_AVG = "general avg"


def has_curves(runs: list[dict[str, Any]]) -> bool:
    """True when some training run was scored at two or more steps (`eaft eval --series/--step`, or in its
    training process): a run scored only at its end is one straight segment from the base, which the forgetting
    table already says."""
    steps: dict[str, set[int]] = {}
    for run in runs:
        curve = run.get("curve")
        if isinstance(curve, dict) and curve.get("series") != "base":
            steps.setdefault(curve["series"], set()).add(int(curve["step"]))
    return any(len(points) >= 2 for points in steps.values())


def crossing(points: list[tuple[float, float]], level: float) -> tuple[float, int] | None:
    """(y, segment) at x = level on the polyline `points` (in step order): the first segment that reaches it
    (segment 0 joins the first two points); None where none does."""
    if len(points) == 1:
        return (points[0][1], 0) if points[0][0] == level else None
    for segment, ((x0, y0), (x1, y1)) in enumerate(zip(points, points[1:], strict=False)):
        if min(x0, x1) <= level <= max(x0, x1):
            if x1 == x0:
                return y1, segment
            return y0 + (y1 - y0) * (level - x0) / (x1 - x0), segment
    return None


def value_at(points: list[tuple[float, float]], level: float) -> float | None:
    """y at x = level on the polyline `points` (in step order), on the first segment that reaches it; else None."""
    found = crossing(points, level)
    return None if found is None else found[0]


def target_levels(base_x: float, curves: dict[str, dict[str, Any]], count: int = 5) -> list[float]:
    """`count` evenly spaced target levels above the base's, up to the highest target any checkpoint reached
    (exactly: the top level is the highest point itself, so the run that reached it reaches it)."""
    top = max((x for c in curves.values() for _, x, _ in c["points"]), default=base_x)
    if top <= base_x:
        return []
    return [top if i == count else base_x + (top - base_x) * i / count for i in range(1, count + 1)]


def build_curves(table: dict[str, Any], runs: list[dict[str, Any]], target: str | None) -> dict[str, dict[str, Any]]:
    """series -> {family, points: [(step, target x, {measure: y})]}, the base prepended as step 0.

    `table` is `forgetting_table(base, runs)`: its rows (in the same order as `runs`, after the base) give the
    scores and averages. `target` names a target task; None takes the target average.
    """
    rows = {row["run"]: row for row in table["rows"]}
    base_row = rows[table["base"]]
    measures = general_measures(table)

    def point(row: dict[str, Any]) -> tuple[float, dict[str, float]] | None:
        x = row["scores"].get(target) if target else row["target_avg"]
        if x is None:
            return None
        ys = {m: (row["general_avg"] if m == GENERAL_AVG else row["scores"].get(m)) for m in measures}
        return x, {m: y for m, y in ys.items() if y is not None}

    base_point = point(base_row)
    if base_point is None:
        raise ValueError(f"the base run has no target score ({target or 'no target tasks'}); no frontier")
    curves: dict[str, dict[str, Any]] = {}
    for run in runs:
        curve = run.get("curve") or {}
        if not curve or curve.get("series") == "base" or run["run"] not in rows:
            continue
        found = point(rows[run["run"]])
        if found is None:
            continue
        entry = curves.setdefault(curve["series"], {"family": curve.get("family") or curve["series"], "points": []})
        entry["points"].append((int(curve["step"]), found[0], found[1]))
    for entry in curves.values():
        entry["points"] = [(0, *base_point), *sorted(p for p in entry["points"] if p[0] > 0)]
    return curves


def general_measures(table: dict[str, Any]) -> list[str]:
    """Each general task, the general average, then each extra task (self-consistency and the like)."""
    general = [c["task"] for c in table["columns"] if c["group"] == "general"]
    extra = [c["task"] for c in table["columns"] if c["group"] == "extra"]
    return [*general, *([GENERAL_AVG] if general else []), *extra]


def verdict(gap: float, spread: float | None) -> str:
    if spread is None:
        return f"{gap:+.2f} (no second seed: no spread to judge by)"
    if abs(gap) <= spread:
        return f"within seed spread ({gap:+.2f}, spread {spread:.2f})"
    return f"{'above' if gap > 0 else 'below'} by {abs(gap):.2f} (beyond seed spread {spread:.2f})"


def frontier_table(
    table: dict[str, Any],
    runs: list[dict[str, Any]],
    target: str | None = None,
    reference: str | None = None,
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Matched-target comparison: per measure and level, each run's interpolated value (and whether it comes from
    the segment between the base and the run's first point), seed spreads, and each family against the `reference`
    family (default: the first run's): with the `base` run given, the difference's 95% interval from a paired
    bootstrap over items and seeds (eaft.evaluate.frontier_intervals) and the verdict it supports."""
    curves = build_curves(table, runs, target)
    if not curves:
        raise ValueError("no eval run carries a training curve (eaft eval --series/--step); no frontier")
    base_x = next(iter(curves.values()))["points"][0][1]
    levels = target_levels(base_x, curves)
    families = list(dict.fromkeys(c["family"] for c in curves.values()))
    if reference is not None and reference not in families:
        raise ValueError(f"frontier reference {reference!r} is not a run family here (families: {', '.join(families)})")
    reference = reference or families[0]
    out_measures = {}
    for measure in general_measures(table):
        per_level = []
        for level in levels:
            values, first = {}, {}
            for series, curve in curves.items():
                points = [(x, ys[measure]) for _, x, ys in curve["points"] if measure in ys]
                found = crossing(points, level)
                values[series] = None if found is None else found[0]
                first[series] = found is not None and found[1] == 0
            stats = _family_stats(curves, values)
            spreads = [s["spread"] for s in stats.values() if s["spread"] is not None]
            spread = max(spreads) if spreads else None
            ref = stats.get(reference)
            verdicts = {}
            for family, stat in stats.items():
                if family == reference or stat["mean"] is None:
                    continue
                verdicts[family] = (
                    "not comparable: the reference does not reach this level"
                    if ref is None or ref["mean"] is None
                    else verdict(stat["mean"] - ref["mean"], spread)
                )
            per_level.append(
                {
                    "level": level,
                    "reached_by_all": all(v is not None for v in values.values()),
                    "values": values,
                    "first_segment": first,
                    "families": stats,
                    "seed_spread": spread,
                    "verdicts": verdicts,
                }
            )
        out_measures[measure] = per_level
    front = {
        "target": target or TARGET_AVG,
        "reference": reference,
        "levels": levels,
        "curves": {s: {"family": c["family"], "points": c["points"]} for s, c in curves.items()},
        "measures": out_measures,
    }
    if base is not None:
        from eaft.evaluate.frontier_intervals import add_intervals

        add_intervals(front, table, base, runs)
    return front


def _family_stats(curves: dict[str, dict[str, Any]], values: dict[str, float | None]) -> dict[str, dict[str, Any]]:
    stats: dict[str, dict[str, Any]] = {}
    for series, curve in curves.items():
        stats.setdefault(curve["family"], {"seeds": [], "mean": None, "spread": None})["seeds"].append(series)
    for stat in stats.values():
        reached = [values[s] for s in stat["seeds"] if values[s] is not None]
        stat["mean"] = sum(reached) / len(reached) if reached else None
        stat["spread"] = max(reached) - min(reached) if len(reached) >= 2 else None
    return stats


def _cell(value: float | None, first: bool = False) -> str:
    return "not reached" if value is None else f"{value:.2f}" + (" †" if first else "")


def _verdict_cell(point: dict[str, Any], family: str, reference: str, curves: dict[str, Any]) -> str:
    text = point["verdicts"].get(family, "not reached")
    if point["families"].get(family, {}).get("delta") is None:
        return text
    involved = [s for s, c in curves.items() if c["family"] in (family, reference)]
    return text + (" †" if any(point["first_segment"].get(s) for s in involved) else "")


def frontier_markdown(front: dict[str, Any]) -> str:
    levels, series = front["levels"], list(front["curves"])
    intervals = front.get("intervals")
    how = (
        f"Each family is compared with **{front['reference']}** by the difference of their mean general score at "
        f"the level (above = higher general score = less forgetting for the same learning), with a 95% interval "
        f"from a paired bootstrap ({intervals['resamples']} resamples of the evaluation items of every task, the "
        "same draw for every model, and of each family's seeds): 'no difference shown' where the interval covers "
        "0, a winner named only where it does not. A family with one seed brings no seed-to-seed variation into "
        "the interval (its verdicts say so): read them against the seed spread of the families that have several."
        if intervals
        else f"Seed spread = max − min over the seeds of a family; a gap no larger than the largest spread at a "
        f"level is 'within seed spread'. Verdicts compare each family with **{front['reference']}**."
    )
    lines = [
        f"# Forgetting frontier: general scores at matched {front['target']}",
        "",
        "Each run's general score where its training curve (base = step 0, then each evaluated point) first "
        "reaches the target level, linearly interpolated between the two neighbouring points; 'not reached' "
        "where the curve never gets there. " + how,
        "",
        "† marks a value read off the straight segment from the base to the run's first evaluated point (and a "
        "verdict that involves one): it restates that one point, not a measured path.",
        "",
        "Curves: "
        + "; ".join(f"{s}: steps {', '.join(str(p[0]) for p in c['points'])}" for s, c in front["curves"].items()),
    ]
    if intervals:
        lines += ["", f"Tasks with per-item intervals: {', '.join(intervals['tasks']) or 'none'}."]
    head = "| run | " + " | ".join(f"@ {lv:.2f}" for lv in levels) + " |"
    for measure, per_level in front["measures"].items():
        lines += ["", f"## {measure}", "", head, "|" + "---|" * (len(levels) + 1)]
        for name in series:
            cells = [_cell(p["values"][name], p.get("first_segment", {}).get(name, False)) for p in per_level]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        spreads = [("—" if p["seed_spread"] is None else f"{p['seed_spread']:.2f}") for p in per_level]
        lines.append("| *seed spread* | " + " | ".join(spreads) + " |")
        families = list(dict.fromkeys(f for p in per_level for f in p["verdicts"]))
        for family in families:
            cells = [_verdict_cell(p, family, front["reference"], front["curves"]) for p in per_level]
            lines.append(f"| *{family} vs {front['reference']}* | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def frontier_png(front: dict[str, Any], path: Path) -> Path:
    """One panel per general measure against the target, one line per run through its points in step order; with
    intervals, beneath each panel the families' differences from the reference at each level, with 95% intervals
    (hollow markers: values read off a run's first segment)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = list(front["measures"])
    cols = min(4, len(measures))
    blocks = (len(measures) + cols - 1) // cols
    per_block = 2 if front.get("intervals") else 1
    fig, axes = plt.subplots(blocks * per_block, cols, figsize=(4.2 * cols, 3.3 * blocks * per_block), squeeze=False)
    families = list(dict.fromkeys(c["family"] for c in front["curves"].values()))
    colours = {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(families)}
    seen: dict[str, int] = {}
    styles = {}
    for series, curve in front["curves"].items():
        styles[series] = ("-", "--", ":", "-.")[seen.get(curve["family"], 0) % 4]
        seen[curve["family"]] = seen.get(curve["family"], 0) + 1
    for i, measure in enumerate(measures):
        ax = axes[(i // cols) * per_block, i % cols]
        _curve_panel(ax, front, measure, styles, colours)
        if per_block == 2:
            _difference_panel(axes[(i // cols) * per_block + 1, i % cols], front, measure, colours)
    for i in range(len(measures), blocks * cols):
        for r in range(per_block):
            axes[(i // cols) * per_block + r, i % cols].axis("off")
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=min(7, len(labels)), fontsize=8, frameon=False)
    fig.suptitle("Forgetting frontier: general score against target score along each run", fontsize=11)
    fig.tight_layout(rect=(0, 0.05 + 0.02 * (len(labels) > 7), 1, 0.97))
    save_figure(fig, path, dpi=110)
    return path


def _curve_panel(ax: Any, front: dict[str, Any], measure: str, styles: dict, colours: dict) -> None:
    for series, curve in front["curves"].items():
        pts = [(x, ys[measure]) for _, x, ys in curve["points"] if measure in ys]
        if not pts:
            continue
        xs, ys = zip(*pts, strict=True)
        ax.plot(xs, ys, styles[series], marker="o", ms=3, lw=1.2, color=colours[curve["family"]], label=series)
    first = next(iter(front["curves"].values()))["points"][0]
    if measure in first[2]:
        ax.scatter([first[1]], [first[2][measure]], marker="*", s=120, color="black", zorder=4, label="base")
    for level in front["levels"]:
        ax.axvline(level, color="0.9", lw=0.6, zorder=0)
    ax.set_title(measure, fontsize=10)
    ax.set_xlabel(f"{front['target']} → more learning", fontsize=8)
    ax.set_ylabel("score", fontsize=8)
    ax.tick_params(labelsize=7)


def _difference_panel(ax: Any, front: dict[str, Any], measure: str, colours: dict) -> None:
    reference, levels = front["reference"], front["levels"]
    width = (levels[-1] - levels[0]) / max(len(levels) - 1, 1) if len(levels) > 1 else 1.0
    others = [f for f in colours if f != reference]
    for k, family in enumerate(others):
        offset = (k - (len(others) - 1) / 2) * width * 0.6 / max(len(others), 1)
        for point in front["measures"][measure]:
            stat = point["families"].get(family, {})
            if stat.get("delta") is None or stat.get("ci") is None:
                continue
            low, high = stat["ci"]
            involved = [s for s, c in front["curves"].items() if c["family"] in (family, reference)]
            hollow = any(point["first_segment"].get(s) for s in involved)
            ax.errorbar(
                point["level"] + offset,
                stat["delta"],
                yerr=[[stat["delta"] - low], [high - stat["delta"]]],
                fmt="o",
                ms=4,
                capsize=2,
                lw=1,
                color=colours[family],
                mfc="white" if hollow else colours[family],
            )
    ax.axhline(0.0, color="0.4", lw=0.8)
    ax.set_title(f"{measure}: − {reference}, 95% CI", fontsize=9)
    ax.set_xlabel(f"matched {front['target']}", fontsize=8)
    ax.set_ylabel("difference (points)", fontsize=8)
    ax.tick_params(labelsize=7)
