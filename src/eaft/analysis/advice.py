"""Where the analysed data falls on the project's regime map: the section of report.md and report.html.

The map (src/eaft/resources/regime_map.json, written by scripts/regime_map.py) holds, for each regime the project
measured, SFT's share of gradient norm on confident conflicts and what each compared family did against SFT at
matched learning, with 95% intervals. The analysed data is placed by the same share, and the nearest measured
regimes below and above it are quoted: evidence from the project's own runs, not a prediction. A map with no
regime yet says so and quotes nothing; data analysed with another conflict region is not placed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from eaft.analysis.regime_map_report import cell, each_comparison, level_label, share

RESOURCE = "regime_map.json"
TITLE = "Where this data falls on the regime map"
#: summary config key -> the analyze flag that sets it; they define the conflict region, so the map's x
REGION_FLAGS = {"entropy": "--entropy", "entropy_quantile": "--entropy-quantile", "prob_quantile": "--prob-quantile"}


@dataclass
class Advice:
    """The section's content: paragraphs and a table in inline Markdown (**bold**, `code`)."""

    paragraphs: list[str]
    head: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    closing: list[str] = field(default_factory=list)

    def markdown(self) -> list[str]:
        lines = [f"## {TITLE}", ""]
        for text in self.paragraphs:
            lines += [text, ""]
        if self.rows:
            lines += ["| " + " | ".join(self.head) + " |", "|---" * len(self.head) + "|"]
            lines += ["| " + " | ".join(row) + " |" for row in self.rows] + [""]
        for text in self.closing:
            lines += [text, ""]
        return lines

    def html(self) -> str:
        from eaft.analysis.html import inline_markdown  # the page's renderer; it imports this module

        parts = [f"<p>{inline_markdown(text)}</p>" for text in self.paragraphs]
        if self.rows:
            head = "".join(f'<th scope="col">{inline_markdown(h)}</th>' for h in self.head)
            body = "".join(
                "<tr>" + "".join(f"<td>{inline_markdown(c)}</td>" for c in row) + "</tr>" for row in self.rows
            )
            parts.append(f'<table class="map"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>')
        parts += [f"<p>{inline_markdown(text)}</p>" for text in self.closing]
        return f'<section aria-labelledby="h-map"><h2 id="h-map">{TITLE}</h2>{"".join(parts)}</section>'


def packaged_map() -> dict[str, Any]:
    """The map shipped with eaft; `{"regimes": []}` until the project has measured one."""
    text = resources.files("eaft.resources").joinpath(RESOURCE).read_text(encoding="utf-8")
    data = json.loads(text)
    if not isinstance(data, dict) or not isinstance(data.get("regimes"), list):
        raise ValueError(f"eaft/resources/{RESOURCE}: expected an object with a list 'regimes'")
    return data


def neighbours(x: float, regimes: list[dict[str, Any]]) -> tuple[dict | None, dict | None]:
    """The measured regime nearest below (or at) `x` and the nearest above it, by SFT's conflict gradient share."""
    ordered = sorted(regimes, key=lambda r: r["dose"]["sft_gradient_share"])
    below = [r for r in ordered if r["dose"]["sft_gradient_share"] <= x]
    above = [r for r in ordered if r["dose"]["sft_gradient_share"] > x]
    return (below[-1] if below else None), (above[0] if above else None)


def _where(x: float, below: dict | None, above: dict | None) -> str:
    def name(r: dict) -> str:
        return f"`{r['name']}` ({share(r['dose']['sft_gradient_share'])})"

    if below is not None and above is not None:
        return f"between the measured regimes {name(below)} and {name(above)}"
    if above is not None:
        return f"below every measured regime; the nearest is {name(above)}"
    return f"above every measured regime; the nearest is {name(below)}"


def _table(m: dict[str, Any], regimes: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    head = ["regime", "sft conflict gradient share", "measure"] + [
        f"{family} − {m['reference']} at {level_label(f)} of the learning"
        for family in m["compare"]
        for f in m["fractions"]
    ]
    rows = []
    for r in regimes:
        for measure in m["measures"]:
            cells = [cell(c) for family in m["compare"] for c in r["comparisons"][measure][family]]
            rows.append([f"`{r['name']}`", share(r["dose"]["sft_gradient_share"]), measure, *cells])
    return head, rows


def _shown(m: dict[str, Any]) -> str:
    """The whole map in one paragraph: which comparisons, in any regime, have an interval that excludes 0."""
    shown, total = [], 0
    for r, measure, family, fraction, c in each_comparison(m):
        total += 1
        ci = c.get("ci")
        if ci is not None and (ci[0] > 0 or ci[1] < 0):
            where = f"{family} − {m['reference']} in `{r['name']}`, {measure} at {level_label(fraction)}"
            shown.append(f"{where}: {c['verdict']}")
    if not shown:
        return (
            f"Across the whole map, none of its {total} comparisons shows a difference (every 95% interval covers 0)."
        )
    return (
        f"Across the whole map, {len(shown)} of its {total} comparisons show a difference (a 95% interval that "
        f"excludes 0): {'; '.join(shown)}. Every other one: no difference shown."
    )


def _region_mismatch(config: dict[str, Any], m: dict[str, Any]) -> str | None:
    theirs = m.get("analyze") or {}
    changed = [k for k in REGION_FLAGS if k in theirs and config.get(k) != theirs[k]]
    if not changed:
        return None
    here = ", ".join(f"`{REGION_FLAGS[k]} {config.get(k)}`" for k in changed)
    flags = " ".join(f"{REGION_FLAGS[k]} {theirs[k]}" for k in REGION_FLAGS if k in theirs)
    return (
        f"This analysis drew the conflict region otherwise ({here}) than the map's regimes, so its share is not on "
        f"the map's axis and is not placed: run `eaft analyze` with `{flags}` to place it."
    )


def advise(summary: dict[str, Any], regime_map: dict[str, Any] | None = None) -> Advice:
    """The section for `summary` (summary.json's content) on `regime_map` (default: the packaged one)."""
    m = packaged_map() if regime_map is None else regime_map
    gradient = summary["data"].get("gradient", {}).get("sft")
    if gradient is None:
        return Advice(["This analysis has no `sft` gradient share, the map's axis: it cannot be placed."])
    x = float(gradient["conflict_share_of_norm"])
    opening = (
        f"SFT puts **{share(x)}** of its gradient norm on this data's confident conflicts (the `sft` gradient share "
        "in the table above)."
    )
    if not m["regimes"]:
        return Advice(
            [
                opening + " The project's regime map, which sets EAFT's advantage over SFT at matched learning "
                "against this share, has not been measured yet: there is no measured regime to compare this data with."
            ]
        )
    mismatch = _region_mismatch(summary["config"], m)
    if mismatch:
        return Advice([opening, mismatch])
    below, above = neighbours(x, m["regimes"])
    setting = f" ({m['setting']})" if m.get("setting") else ""
    shares = sorted(r["dose"]["sft_gradient_share"] for r in m["regimes"])
    measured = (
        f"{len(shares)} regimes{setting}, with SFT shares from {share(shares[0])} to {share(shares[-1])}"
        if len(shares) > 1
        else f"one regime{setting}"
    )
    paragraphs = [
        opening + f" The project's regime map measured {measured}: this data lies {_where(x, below, above)}. "
        f"There, each family's general score minus {m['reference']}'s at matched target learning was (positive: "
        "less forgetting for the same learning; 'no difference shown' where the 95% interval covers 0; † read off "
        "a run's first evaluated segment):"
    ]
    model = (m.get("analyze") or {}).get("model_label")
    label = summary["config"].get("model_label")
    if model and (label != model or summary["config"].get("adapter")):
        paragraphs.append(
            f"The map's shares were measured under {model}; this analysis used {label}"
            + (" with an adapter" if summary["config"].get("adapter") else "")
            + ": the same share under another model need not be the same dose."
        )
    head, rows = _table(m, [r for r in (below, above) if r is not None])
    closing = [
        _shown(m),
        f"This is evidence from the project's own runs{setting} on {len(shares)} regime{'s' * (len(shares) > 1)}, "
        "not a promise: another model, data set, learning rate or budget may behave otherwise. The whole map: "
        "docs/experiments.md, 'When does EAFT help? The regime map'.",
    ]
    return Advice(paragraphs, head, rows, closing)
