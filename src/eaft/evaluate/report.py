"""`eaft report`: the forgetting table — did the fine-tune learn the domain without forgetting?

For each run: per-task scores, Target avg and General avg (plain means over the group's tasks), and against the
base run Δ Target and Δ General = the mean over the group's tasks that both runs have of (run − base); when
both runs have the same tasks this is the difference of the averages. A task enters a Δ only where it was run
the same way as the base's (`eaft.evaluate.comparability`: data, limit, prompt, scoring, few-shot, backend); any
other is refused unless `--allow-mismatch`, which leaves it out of that run's Δ and marks its score ≠. A run is
on the Pareto front when no other run (the base included, at Δ = 0) is at least as good on both deltas and better
on one. Runs that share no task with the base, or whose averages cover other tasks, are warned about.
Outputs: `forgetting.md`, `forgetting.json`, `forgetting.png` (Δ Target against Δ General) and `forgetting.html`
(all of it, the frontier included, in one offline page with links to each run's samples).
"""

from __future__ import annotations

import argparse
import html
import json
import sys
from pathlib import Path
from typing import Any

from eaft.errors import debugging
from eaft.evaluate.cache import write_json_atomic
from eaft.evaluate.comparability import coverage_warnings, left_out_warning, mismatch_error, mismatches
from eaft.evaluate.intervals import ci_text, delta_intervals
from eaft.evaluate.tasks import GROUPS
from eaft.io import save_figure, write_text_atomic


def load_run(path: str | Path) -> dict[str, Any]:
    """A run's results.json (given the run directory or the file itself)."""
    path = Path(path)
    file = path / "results.json" if path.is_dir() else path
    if not file.is_file():
        raise FileNotFoundError(f"{path}: no results.json (expected a directory written by `eaft eval`)")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file}: not a readable results file ({err}); run `eaft eval` for it again") from None
    if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
        raise ValueError(f"{file}: no `tasks` mapping; not an `eaft eval` results file")
    data.setdefault("run", file.parent.name)
    data["dir"] = str(file.parent)  # where its samples/ are, for the intervals
    return data


def task_columns(runs: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(task, group) in table order: target, general, extra; first appearance within a group."""
    groups: dict[str, str] = {}
    for run in runs:
        for name, record in run["tasks"].items():
            group = record.get("group")
            if group not in GROUPS:
                raise ValueError(f"run {run['run']!r}: task {name!r} has group {group!r}, expected one of {GROUPS}")
            if groups.setdefault(name, group) != group:
                raise ValueError(f"task {name!r} is {groups[name]!r} in one run and {group!r} in another")
    return [(name, group) for g in GROUPS for name, group in groups.items() if group == g]


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def pareto_front(points: dict[str, tuple[float, float]]) -> set[str]:
    """Names whose (x, y) no other point weakly dominates with one strict improvement (both maximized)."""
    front = set()
    for name, (x, y) in points.items():
        dominated = any(
            ox >= x and oy >= y and (ox > x or oy > y) for other, (ox, oy) in points.items() if other != name
        )
        if not dominated:
            front.add(name)
    return front


def forgetting_table(
    base: dict[str, Any], runs: list[dict[str, Any]], *, allow_mismatch: bool = False
) -> dict[str, Any]:
    """The table as data: columns, and one row per run (the base first) with scores, averages and deltas.

    A task whose setup differs from the base's raises `ComparabilityError`, or with `allow_mismatch` is left
    out of that run's Δ (listed in the row's `not_compared`); `warnings` says what else a reader must know."""
    everyone = [base] + [r for r in runs if r is not base]
    columns = task_columns(everyone)
    differing = {id(run): found for run in everyone[1:] if (found := mismatches(base, run))}
    if differing and not allow_mismatch:
        raise mismatch_error(base, {run["run"]: differing[id(run)] for run in everyone[1:] if id(run) in differing})
    rows = [table_row(run, base, columns, differing.get(id(run), {})) for run in everyone]
    points = {
        r["run"]: (r["delta_general"], r["delta_target"])
        for r in rows
        if r["delta_general"] is not None and r["delta_target"] is not None
    }
    front = pareto_front(points)
    for row in rows:
        row["pareto"] = row["run"] in front
    warnings = coverage_warnings(base, everyone[1:])
    warnings += [left_out_warning(row["run"], row["not_compared"]) for row in rows if row.get("not_compared")]
    return {
        "base": base["run"],
        "columns": [{"task": n, "group": g} for n, g in columns],
        "tasks": task_info(everyone, columns),
        "rows": rows,
        "warnings": warnings,
    }


def table_row(
    run: dict[str, Any], base: dict[str, Any], columns: list[tuple[str, str]], not_compared: dict[str, list[str]]
) -> dict[str, Any]:
    """One run's scores, its group averages, and its Δ against the base over the comparable shared tasks."""
    scores = {name: run["tasks"][name]["score"] for name, _ in columns if name in run["tasks"]}
    row: dict[str, Any] = {"run": run["run"], "model": run.get("model"), "adapter": run.get("adapter")}
    row["scores"] = scores
    if not_compared:
        row["not_compared"] = not_compared
    for group in ("target", "general"):
        names = [n for n, g in columns if g == group]
        row[f"{group}_avg"] = _mean([scores[n] for n in names if n in scores])
        common = [n for n in names if n in scores and n in base["tasks"] and n not in not_compared]
        row[f"delta_{group}"] = _mean([scores[n] - base["tasks"][n]["score"] for n in common])
    return row


def task_info(runs: list[dict[str, Any]], columns: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    info = {}
    for name, group in columns:
        record = next(r["tasks"][name] for r in runs if name in r["tasks"])
        info[name] = {
            "group": group,
            "metric": record.get("metric"),
            "type": record.get("type"),
            "n": record.get("n"),
            "notes": record.get("notes", ""),
        }
    return info


def md(text: Any) -> str:
    """Text from a results file as Markdown table text: HTML escaped (a task may be named `<script>`), `|` kept."""
    return html.escape(str(text), quote=False).replace("|", "\\|")


def _fmt(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "—"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def table_markdown(table: dict[str, Any]) -> str:
    names = [c["task"] for c in table["columns"]]
    head = [
        "run",
        *[f"{md(n)} ({table['tasks'][n]['group']})" for n in names],
        "Target avg",
        "General avg",
        "Δ Target",
        "Δ General",
        "Pareto",
    ]
    lines = [f"> **warning:** {md(w)}" for w in table.get("warnings", [])]
    lines += [""] if lines else []
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in table["rows"]:
        is_base = row["run"] == table["base"]
        marked = row.get("not_compared", {})
        cells = [
            md(row["run"]) + (" (base)" if is_base else ""),
            *[_fmt(row["scores"].get(n)) + ("≠" if n in marked else "") for n in names],
            _fmt(row["target_avg"]),
            _fmt(row["general_avg"]),
            _fmt(row["delta_target"], True) + ci_text(row.get("delta_target_ci")),
            _fmt(row["delta_general"], True) + ci_text(row.get("delta_general_ci")),
            "★" if row["pareto"] else "",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "Scores are percentages (higher is better). Δ = mean over the group's tasks of (run − base)."]
    if any(row.get("delta_general_ci") or row.get("delta_target_ci") for row in table["rows"]):
        lines.append(
            "[low, high]: the Δ's 95% interval from a paired bootstrap over each task's evaluation items (the same "
            "items for run and base); an interval that covers 0 shows no difference from the base."
        )
    if any(row.get("not_compared") for row in table["rows"]):
        lines.append("≠ run unlike the base's (other data, limit, prompt, scoring, few-shot or backend): not in Δ.")
    lines.append("")
    for name in names:
        info = table["tasks"][name]
        lines.append(
            f"- **{md(name)}** ({md(info['group'])}, {md(info['type'])}, n={md(info['n'])}): {md(info['metric'])}"
            + (f"; {md(info['notes'])}" if info["notes"] else "")
        )
    return "\n".join(lines) + "\n"


def run_markdown(summary: dict[str, Any]) -> str:
    """One run's scores (what `eaft eval` prints and writes to results.md)."""
    table = forgetting_table(summary, [])
    adapter = f" + adapter {md(summary['adapter'])}" if summary.get("adapter") else ""
    title = f"# {md(summary.get('suite', 'suite'))}: {md(summary.get('model', '?'))}{adapter}\n\n"
    return title + table_markdown(table)


def scatter_png(table: dict[str, Any], path: Path) -> Path | None:
    """Δ Target (y) against Δ General (x), one point per run, the Pareto front joined and starred."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in table["rows"] if r["delta_general"] is not None and r["delta_target"] is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.axhline(0, color="0.8", lw=0.8)
    ax.axvline(0, color="0.8", lw=0.8)
    for row in rows:
        on_front = row["pareto"]
        ax.scatter(
            row["delta_general"],
            row["delta_target"],
            s=80 if on_front else 40,
            marker="*" if on_front else "o",
            color="tab:red" if on_front else "tab:blue",
            zorder=3,
        )
        ax.annotate(
            row["run"],
            (row["delta_general"], row["delta_target"]),
            textcoords="offset points",
            xytext=(5, 4),
            fontsize=8,
        )
    front = sorted((r["delta_general"], r["delta_target"]) for r in rows if r["pareto"])
    if len(front) > 1:
        ax.plot(*zip(*front, strict=True), color="tab:red", lw=1, ls="--", label="Pareto front", zorder=2)
        ax.legend(loc="best", fontsize=8)
    ax.set_xlabel("Δ General (points vs base)  → less forgetting")
    ax.set_ylabel("Δ Target (points vs base)  → more learning")
    ax.set_title(f"Forgetting vs learning (base: {table['base']})")
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
    return path


def _curve_names(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs on a training curve are named `series@step`, the last step of each series by the series alone;
    returns the runs the forgetting table shows (one per series: its last step; and every run off a curve)."""
    last: dict[str, dict[str, Any]] = {}
    for run in runs:
        curve = run.get("curve")
        if isinstance(curve, dict) and curve.get("series") not in (None, "base"):
            run["run"] = f"{curve['series']}@{curve['step']}"
            if curve["series"] not in last or curve["step"] > last[curve["series"]]["curve"]["step"]:
                last[curve["series"]] = run
    for series, run in last.items():
        run["run"] = series
    return [
        r
        for r in runs
        if not isinstance(r.get("curve"), dict) or r["curve"].get("series") == "base" or r in last.values()
    ]


def write_report(
    base_dir: str | Path,
    run_dirs: list[str | Path],
    out: str | Path,
    *,
    frontier_target: str | None = None,
    frontier_reference: str | None = None,
    allow_mismatch: bool = False,
) -> dict[str, Any]:
    """forgetting.md/.json/.png/.html; and frontier.md/.json/.png when the runs carry training curves (compared
    with the `frontier_reference` family, by default the first run's). `allow_mismatch`: see `forgetting_table`."""
    from eaft.evaluate.frontier import frontier_markdown, frontier_png, frontier_table, has_curves
    from eaft.evaluate.html import forgetting_page

    base = load_run(base_dir)
    others = [d for d in run_dirs if Path(d).resolve() != Path(base_dir).resolve()]
    runs = [load_run(d) for d in others]
    shown = _curve_names(runs)
    names = [base["run"]] + [r["run"] for r in runs]
    for run, path in zip(runs, others, strict=True):
        if names.count(run["run"]) > 1:  # two run folders with the same name: tell them apart by parent
            run["run"] = f"{Path(path).resolve().parent.name}/{run['run']}"
    table = forgetting_table(base, shown, allow_mismatch=allow_mismatch)
    delta_intervals(table, base, shown)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("forgetting.png", "frontier.png", "frontier.md", "frontier.json"):
        (out / stale).unlink(missing_ok=True)  # never leave an older run's output beside this table
    plot = scatter_png(table, out / "forgetting.png")
    table["plot"] = plot.name if plot else None
    front = None
    if has_curves(runs):
        curve_table = forgetting_table(base, runs, allow_mismatch=allow_mismatch)
        front = frontier_table(curve_table, runs, frontier_target, frontier_reference, base=base)
        write_json_atomic(out / "frontier.json", front)
        write_text_atomic(out / "frontier.md", frontier_markdown(front))
        frontier_png(front, out / "frontier.png")
        table["frontier"] = "frontier.md"
    write_json_atomic(out / "forgetting.json", table)
    write_text_atomic(out / "forgetting.md", table_markdown(table))
    folders = {base["run"]: Path(base_dir), **{run["run"]: Path(path) for run, path in zip(runs, others, strict=True)}}
    write_text_atomic(out / "forgetting.html", forgetting_page(table, out, folders, front))
    return table


def build_parser() -> argparse.ArgumentParser:
    """`eaft report`'s arguments (tests/test_docs.py checks the documented command lines against them)."""
    parser = argparse.ArgumentParser(prog="eaft report", description="The forgetting table of eval runs vs a base.")
    parser.add_argument("runs", nargs="+", help="run directories written by `eaft eval`")
    parser.add_argument("--base", default=None, help="the base model's run directory (default: the first run)")
    parser.add_argument("--out", default="forgetting_report", help="output directory")
    parser.add_argument(
        "--frontier-target", default=None, help="the target task on the frontier's x axis (default: the target avg)"
    )
    parser.add_argument(
        "--frontier-reference", default=None, help="the run family the others are compared with (default: the first)"
    )
    parser.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="a task run unlike the base's (data, limit, prompt, scoring, few-shot, backend) is left out of the Δ "
        "and marked, instead of refused",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    base = args.base or args.runs[0]
    try:
        table = write_report(
            base,
            args.runs,
            args.out,
            frontier_target=args.frontier_target,
            frontier_reference=args.frontier_reference,
            allow_mismatch=args.allow_mismatch,
        )
    except (FileNotFoundError, ValueError) as err:
        if debugging():
            raise
        print(f"eaft report: {err}", file=sys.stderr)
        return 2
    print(table_markdown(table))
    for warning in table["warnings"]:
        print(f"eaft report: warning: {warning}", file=sys.stderr)
    plot = table["plot"] or "no scatter (it needs runs with both target and general tasks)"
    print(f"wrote {Path(args.out) / 'forgetting.md'}, forgetting.json, forgetting.html, {plot}")
    if table.get("frontier"):
        print(f"wrote {Path(args.out) / 'frontier.md'}, frontier.json, frontier.png")
    return 0
