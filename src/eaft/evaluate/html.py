"""forgetting.html: the forgetting table, its scatter, the frontier where there is one, and links to each run's
per-item samples, in one self-contained page (no script; images embedded as data: URIs)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from eaft.evaluate.intervals import ci_text
from eaft.html import escape, figure, page


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def samples_link(run_dir: Path | None, task: str, out: Path) -> str | None:
    """The run's samples/<task>.jsonl as a path relative to the report folder; None when the run has none."""
    if run_dir is None:
        return None
    file = Path(run_dir) / "samples" / f"{task}.jsonl"
    if not file.is_file():
        return None
    return Path(os.path.relpath(file.resolve(), Path(out).resolve())).as_posix()


def _score_cell(row: dict, task: str, link: str | None) -> str:
    text = _fmt(row["scores"].get(task))
    if link is None or task not in row["scores"]:
        return f"<td>{text}</td>"
    label = escape(f"{row['run']}: {task} samples")
    return f'<td><a href="{escape(link)}" aria-label="{label} ({text})">{text}</a></td>'


def warnings_html(warnings: list[str]) -> str:
    if not warnings:
        return ""
    items = "".join(f"<li><strong>warning:</strong> {escape(w)}</li>" for w in warnings)
    return f'<ul class="warnings" role="alert">{items}</ul>'


def table_html(table: dict[str, Any], out: Path, run_dirs: dict[str, Path]) -> str:
    """The forgetting table, each score linked to the items it was computed from."""
    names = [c["task"] for c in table["columns"]]
    head = [f"{n} ({table['tasks'][n]['group']})" for n in names]
    head += ["Target avg", "General avg", "Δ Target", "Δ General", "Pareto"]
    lines = ['<table class="forgetting"><thead><tr><th scope="col">run</th>']
    lines += [f'<th scope="col">{escape(h)}</th>' for h in head] + ["</tr></thead><tbody>"]
    for row in table["rows"]:
        run = row["run"] + (" (base)" if row["run"] == table["base"] else "")
        cells = [_score_cell(row, n, samples_link(run_dirs.get(row["run"]), n, out)) for n in names]
        cells = [
            cell.replace("</td>", "≠</td>") if n in row.get("not_compared", {}) else cell
            for n, cell in zip(names, cells, strict=True)
        ]
        cells += [f"<td>{_fmt(row['target_avg'])}</td>", f"<td>{_fmt(row['general_avg'])}</td>"]
        cells += [
            f"<td>{_fmt(row['delta_target'], True)}{ci_text(row.get('delta_target_ci'))}</td>",
            f"<td>{_fmt(row['delta_general'], True)}{ci_text(row.get('delta_general_ci'))}</td>",
        ]
        pareto = '<td><span aria-hidden="true">★</span> on the front</td>' if row["pareto"] else "<td></td>"
        lines.append(f'<tr><th scope="row">{escape(run)}</th>{"".join(cells)}{pareto}</tr>')
    lines.append("</tbody></table>")
    notes = []
    for name in names:
        info = table["tasks"][name]
        extra = f"; {escape(info['notes'])}" if info["notes"] else ""
        notes.append(
            f"<li><strong>{escape(name)}</strong> ({escape(info['group'])}, {escape(info['type'])}, "
            f"n={escape(info['n'])}): {escape(info['metric'])}{extra}</li>"
        )
    lines.append(
        "<p>Scores are percentages (higher is better); Δ = mean over the group's tasks of (run − base). "
        "Each score links to its run's <code>samples/&lt;task&gt;.jsonl</code>, the items it was computed from.</p>"
    )
    return "".join(lines) + f"<ul>{''.join(notes)}</ul>"


def samples_html(table: dict[str, Any], out: Path, run_dirs: dict[str, Path]) -> str:
    """Per run, a link to each task's samples (also what the frontier's checkpoints were scored on)."""
    items = []
    for run, folder in run_dirs.items():
        links = [
            f'<a href="{escape(link)}">{escape(task)}</a>'
            for task in (c["task"] for c in table["columns"])
            if (link := samples_link(folder, task, out)) is not None
        ]
        if links:
            items.append(f"<li><strong>{escape(run)}</strong>: {', '.join(links)}</li>")
    if not items:
        return "<p>No run folder holds <code>samples/</code>.</p>"
    return f'<ul class="run-links">{"".join(items)}</ul>'


def _cell(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f}"


def _spread(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def frontier_html(front: dict[str, Any]) -> str:
    """frontier.md's tables: per general measure, each run's value at each matched target level."""
    levels, series = front["levels"], list(front["curves"])
    head = '<th scope="col">run</th>' + "".join(f'<th scope="col">@ {lv:.2f}</th>' for lv in levels)
    parts = [
        f"<p>General scores where each run's training curve first reaches the target level ({escape(front['target'])}"
        f"), interpolated between neighbouring checkpoints; verdicts compare with <strong>{escape(front['reference'])}"
        "</strong>, and a gap no larger than the seed spread names no winner.</p>"
    ]
    for measure, per_level in front["measures"].items():
        rows = [
            f'<tr><th scope="row">{escape(name)}</th>'
            + "".join(f"<td>{_cell(p['values'][name])}</td>" for p in per_level)
            + "</tr>"
            for name in series
        ]
        spreads = "".join(f"<td>{_spread(p['seed_spread'])}</td>" for p in per_level)
        rows.append(f'<tr><th scope="row"><em>seed spread</em></th>{spreads}</tr>')
        for family in dict.fromkeys(f for p in per_level for f in p["verdicts"]):
            cells = "".join(f"<td>{escape(p['verdicts'].get(family, 'not reached'))}</td>" for p in per_level)
            rows.append(
                f'<tr><th scope="row"><em>{escape(family)} vs {escape(front["reference"])}</em></th>{cells}</tr>'
            )
        parts.append(
            f"<h3>{escape(measure)}</h3><table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
        )
    return "".join(parts)


def forgetting_page(
    table: dict[str, Any], out: str | Path, run_dirs: dict[str, Path], front: dict[str, Any] | None = None
) -> str:
    """forgetting.html's text; `run_dirs` maps each run's name to its eval folder (for the sample links)."""
    out = Path(out)
    sections = [
        f"<header><h1>eaft report: forgetting</h1><p>Base run <strong>{escape(table['base'])}</strong>; "
        f"{len(table['rows']) - 1} other run(s).</p></header><main>",
        '<section aria-labelledby="h-table"><h2 id="h-table">Forgetting table</h2>',
        warnings_html(table.get("warnings", [])),
        table_html(table, out, run_dirs),
        "</section>",
        figure(
            out / "forgetting.png",
            "Δ Target against Δ General, one point per run, Pareto front starred",
            "Forgetting vs learning: Δ Target (y) against Δ General (x); the Pareto front is starred.",
        ),
    ]
    if front is not None:
        sections += [
            '<section aria-labelledby="h-frontier"><h2 id="h-frontier">Forgetting frontier</h2>',
            figure(
                out / "frontier.png",
                "General score against target score along each run's checkpoints",
                "One panel per general measure; one line per run through its checkpoints in step order.",
            ),
            frontier_html(front),
            "</section>",
        ]
    sections += [
        '<section aria-labelledby="h-samples"><h2 id="h-samples">Samples</h2>',
        samples_html(table, out, run_dirs),
        "</section></main>",
    ]
    return page(f"eaft report: forgetting (base {table['base']})", "\n".join(sections))
