"""map.md and map.png of a regime map (eaft.analysis.regime_map builds the dictionary both read)."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from eaft.io import save_figure
from eaft.objectives.loss import CONFLICT_ENTROPY, CONFLICT_PROB


def share(value: float | None) -> str:
    return "—" if value is None else f"{value:.2%}"


def level_label(fraction: float) -> str:
    return f"{fraction:.0%}"


def cell(comparison: dict[str, Any]) -> str:
    """The frontier's verdict for one family at one level; † where it involves a run's first segment."""
    return comparison["verdict"] + (" †" if comparison["first_segment"] else "")


def _gradient_share(regime: dict[str, Any], objective: str) -> str:
    found = regime["dose"]["gradient"].get(objective)
    return share(found["conflict_share_of_norm"]) if found else "—"


def _regimes_table(m: dict[str, Any]) -> list[str]:
    fractions = " / ".join(level_label(f) for f in m["fractions"])
    lines = [
        f"| regime | target: base → top | levels at {fractions} | confident-conflict share | conflict share at "
        f"fixed H̃ < {CONFLICT_ENTROPY}, p < {CONFLICT_PROB} | sft: gradient share on conflicts | eaft: gradient "
        "share on conflicts | seeds |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in m["regimes"]:
        target = r["target"]
        seeds = ", ".join(f"{family} {len(names)}" for family, names in r["seeds"].items())
        lines.append(
            f"| `{r['name']}` | {target['name']}: {target['base']:.2f} → {target['top']:.2f} | "
            + " / ".join(f"{lv['target']:.2f}" for lv in r["levels"])
            + f" | {share(r['dose']['confident_conflict_share'])} | {share(r['dose']['fixed_conflict_share'])} | "
            f"{_gradient_share(r, 'sft')} | {_gradient_share(r, 'eaft')} | {seeds} |"
        )
    return lines


def _measure_table(m: dict[str, Any], measure: str) -> list[str]:
    heads = [f"{family} − {m['reference']} at {level_label(f)}" for family in m["compare"] for f in m["fractions"]]
    lines = [
        "| regime | conflict share (quantile / fixed) | sft gradient share on conflicts | " + " | ".join(heads) + " |",
        "|---" * (3 + len(heads)) + "|",
    ]
    for r in m["regimes"]:
        cells = [cell(c) for family in m["compare"] for c in r["comparisons"][measure][family]]
        dose = r["dose"]
        lines.append(
            f"| `{r['name']}` | {share(dose['confident_conflict_share'])} / {share(dose['fixed_conflict_share'])} | "
            f"{share(dose['sft_gradient_share'])} | " + " | ".join(cells) + " |"
        )
    return lines


def map_markdown(m: dict[str, Any]) -> str:
    fractions = " and ".join(level_label(f) for f in m["fractions"])
    compared = " and ".join(f"{family} − {m['reference']}" for family in m["compare"])
    lines = [
        f"# Regime map: {compared} at matched learning, against the dose of confident conflicts",
        "",
        (m["setting"].rstrip(".") + ". " if m["setting"] else "")
        + "One row per regime (training set), in order of SFT's share of gradient norm in the confident-conflict "
        "region (`eaft analyze` on the regime's training rows under the base model: "
        f"conflict region at the {m['analyze']['entropy_quantile']:.0%} quantile of `{m['analyze']['entropy']}` "
        f"entropy and the {m['analyze']['prob_quantile']:.0%} quantile of p(y); model "
        f"{m['analyze']['model_label']}).",
        "",
        f"Each difference is a family's mean general score minus {m['reference']}'s where their training curves reach "
        "the same target score (positive: a higher general score, less forgetting for the same learning), with the "
        "95% interval of the frontier's paired bootstrap over evaluation items and seeds, in the frontier's words: "
        "'no difference shown' where the interval covers 0, a winner only where it does not. Levels: "
        f"{fractions} of the way from the base's target score to the highest any run of the regime reached (the "
        "frontier's levels are the fifths of that range), so every regime is read at the same share of the "
        "learning it allows. † marks a value read off the straight segment from the base to a run's first "
        "evaluated point: it restates that one point, not a measured path. 'not reached': the family's curves "
        "never get to the level (no lower level is taken instead).",
        "",
        "## Regimes",
        "",
        *_regimes_table(m),
    ]
    notes = [f"- `{r['name']}`: {r['note']}" for r in m["regimes"] if r.get("note")]
    if notes:
        lines += ["", *notes]
    for measure in m["measures"]:
        lines += ["", f"## {measure}", "", *_measure_table(m, measure)]
    if m.get("command"):
        lines += ["", f"Written by `{m['command']}`; the figure is map.png."]
    return "\n".join(lines) + "\n"


def each_comparison(
    m: dict[str, Any], measures: list[str] | None = None
) -> Iterator[tuple[dict[str, Any], str, str, float, dict[str, Any]]]:
    """(regime, measure, family, fraction, comparison) for every comparison on the map (of `measures`, default
    all), the regimes in dose order."""
    for r in sorted(m["regimes"], key=lambda r: r["dose"]["sft_gradient_share"]):
        for measure in measures or m["measures"]:
            for family in m["compare"]:
                for fraction, c in zip(m["fractions"], r["comparisons"][measure][family], strict=True):
                    yield r, measure, family, fraction, c


def _points(m: dict[str, Any], measure: str) -> list[dict[str, Any]]:
    """One plotted point per regime, family and level: x (share), y (difference), interval, style keys."""
    return [
        {"x": r["dose"]["sft_gradient_share"], "family": family, "fraction": fraction, "level": r["interval_level"]} | c
        for r, _, family, fraction, c in each_comparison(m, [measure])
        if c["delta"] is not None
    ]


def reach_label(comparison: dict[str, Any], level: float) -> str | None:
    """The share of resamples in which both curves reach the level, as the figure prints it beside a point, where
    it is under the intervals' `level` (0.95: the difference then rests on the seeds and items that reach it, and
    the frontier's verdict says so); None otherwise."""
    reached = comparison.get("reached")
    return None if reached is None or reached >= level else f"{100 * reached:.0f}%"


def _dose_axis(xs: list[float]) -> dict[str, Any]:
    """The x axis of the map: logarithmic where every dose is positive (a dose is a share, and the measured ones
    span an order of magnitude, so equal ratios get equal room), each regime's points spread by one factor, the
    axis padded by a factor 1.45 each side; linear, spread in share points, otherwise (a regime without conflicts)."""
    if min(xs) > 0:
        return {"log": True, "offset": 0.035, "xlim": (min(xs) / 1.45, max(xs) * 1.45)}
    return {"log": False, "offset": 0.012 * ((max(xs) - min(xs)) or max(xs) or 1.0)}


def _spread(x: float, k: float, style: dict[str, Any]) -> float:
    """The plotted x of the k-th series (centred on 0) of a regime at dose x (percent)."""
    return x * math.exp(k * style["offset"]) if style["log"] else x + k * style["offset"]


def _panel(ax: Any, m: dict[str, Any], measure: str, style: dict[str, Any]) -> None:
    """One measure's differences against the dose; `style`: colours, markers, series order and x offset unit."""
    series = style["series"]
    for p in _points(m, measure):
        k = series.index((p["family"], p["fraction"]))
        x = _spread(100 * p["x"], k - (len(series) - 1) / 2, style)
        yerr = None if p["ci"] is None else [[p["delta"] - p["ci"][0]], [p["ci"][1] - p["delta"]]]
        colour = style["colours"][p["family"]]
        fill = "white" if p["first_segment"] else colour
        ax.errorbar(x, p["delta"], yerr=yerr, fmt=style["markers"][p["fraction"]], ms=5, capsize=2, lw=1,
                    color=colour, mfc=fill)  # fmt: skip
        label = reach_label(p, p["level"])
        if label:  # the left half of a regime's series labelled on the left, so neighbours do not overprint
            left = k < len(series) / 2
            ax.annotate(label, (x, p["delta"]), xytext=(-4 if left else 4, 2), textcoords="offset points",
                        ha="right" if left else "left", fontsize=6, color=colour)  # fmt: skip
    ax.axhline(0.0, color="0.4", lw=0.8)
    for r in m["regimes"]:
        x = 100 * r["dose"]["sft_gradient_share"]
        ax.axvline(x, color="0.92", lw=0.6, zorder=0)
        ax.annotate(r["name"], (x, 1.0), xycoords=("data", "axes fraction"), fontsize=7, rotation=30, va="bottom")
    ax.set_title(f"{measure}: − {m['reference']} at matched learning, 95% CI", fontsize=9, pad=28)
    if style["log"]:
        from matplotlib.ticker import FixedLocator, NullLocator, ScalarFormatter

        ax.set_xscale("log")
        ax.set_xlim(style["xlim"])
        ticks = [t for t in (0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100) if style["xlim"][0] <= t <= style["xlim"][1]]
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(
        "sft's share of gradient norm on confident conflicts (%" + (", log scale)" if style["log"] else ")"), fontsize=8
    )
    ax.set_ylabel("difference (points; > 0: less forgetting)", fontsize=8)
    ax.tick_params(labelsize=7)


def map_png(m: dict[str, Any], path: str | Path) -> Path:
    """One panel per measure: each compared family's difference from the reference (95% interval) against SFT's
    conflict gradient share, one point per regime and level; hollow: read off a run's first segment; no bar: no
    interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measures = m["measures"]
    fig, axes = plt.subplots(1, len(measures), figsize=(5.2 * len(measures), 4.2), squeeze=False)
    xs = [100 * r["dose"]["sft_gradient_share"] for r in m["regimes"]]
    style = {
        "colours": {f: plt.get_cmap("tab10")(i % 10) for i, f in enumerate(m["compare"])},
        "markers": dict(zip(m["fractions"], "os^Dv", strict=False)),
        "series": [(f, fr) for f in m["compare"] for fr in m["fractions"]],
    }
    style.update(_dose_axis(xs))
    for ax, measure in zip(axes[0], measures, strict=True):
        _panel(ax, m, measure, style)
    for family, fraction in style["series"]:
        label = f"{family} − {m['reference']}, {level_label(fraction)} of the learning"
        axes[0, 0].plot([], [], style["markers"][fraction], color=style["colours"][family], label=label)
    columns = min(4, len(style["series"]))
    fig.legend(loc="lower center", bbox_to_anchor=(0.5, 0.06), ncol=columns, fontsize=8, frameon=False)
    note = (
        "hollow: read off a run's first evaluated segment (†); no bar: no interval; a level a family does not reach "
        "has no point (map.md says 'not reached');\na percentage beside a point: the share of resamples in which "
        "the level is reached, where under 95%"
    )
    fig.text(0.5, 0.01, note, ha="center", fontsize=7, color="0.3")
    fig.tight_layout(rect=(0, 0.14 + 0.04 * (len(style["series"]) > 4), 1, 1))
    save_figure(fig, path, dpi=110)
    return Path(path)
