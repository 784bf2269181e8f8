"""`eaft analyze --compare DIR1 DIR2`: how confident conflicts and entropy moved between two analyses.

Each analysis sets its thresholds from its own quantiles, so its own conflict share measures the shape of its
landscape rather than a fixed region. The comparable figure re-reads DIR2's token table under DIR1's thresholds
(and the fixed thresholds the training logs use).

A folder whose files do not all match the sha256 its summary.json records mixes two analyses (files of another
analysis copied in, or, before analyses were written whole, a kill between files): it is refused.
"""

from __future__ import annotations

import json
from pathlib import Path

from eaft.analysis.landscape import Thresholds, conflict_mask
from eaft.analysis.outputs import read_table
from eaft.errors import EaftError
from eaft.io import sha256_file

SHARES = ("confident_conflict_share", "fixed_conflict_share")


class MixedAnalysisError(EaftError, ValueError):
    """An analysis folder whose files are not the ones its summary.json was written with."""


def check_whole(run_dir: str | Path, summary: dict) -> str | None:
    """Refuses a folder whose files differ from the checksums in its summary; returns a warning for a summary
    written before eaft recorded them (its files cannot be checked), else None."""
    recorded = summary.get("sha256")
    if not isinstance(recorded, dict):
        return (
            f"warning: {run_dir} was written by an older eaft that recorded no checksums, so whether its files "
            "belong to one analysis cannot be checked; run `eaft analyze` again to be sure"
        )
    for name, digest in sorted(recorded.items()):
        path = Path(run_dir) / name
        if not path.is_file() or sha256_file(path) != digest:
            state = "is missing" if not path.is_file() else "is not the file summary.json was written with"
            raise MixedAnalysisError(
                f"{path} {state}: {run_dir} mixes files of two analyses, so no figure of it can be trusted; "
                "run `eaft analyze` into it again"
            )
    return None


def load_summary(run_dir: str | Path) -> dict:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no summary.json (is {run_dir} an `eaft analyze --out` folder?)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None


def share_at(run_dir: str | Path, summary: dict, which: str, th: Thresholds) -> float:
    """Conflict share of a run's token table under thresholds `th` (possibly another run's)."""
    key = "tokens" if which == "data" else "rollout_tokens"
    columns = read_table(Path(run_dir) / summary["files"][key])
    if th.entropy_column not in columns:
        raise KeyError(f"{run_dir}: token table has no {th.entropy_column!r} column to apply the thresholds to")
    if not len(columns["prob"]):
        return 0.0
    return float(conflict_mask(columns[th.entropy_column], columns["prob"], th).mean())


def _rows(a: dict, b: dict) -> list[tuple[str, float, float, bool]]:
    return [
        ("confident-conflict share (own thresholds)", a["confident_conflict_share"], b["confident_conflict_share"], 1),
        ("conflict share at fixed H̃<0.2, p<0.1", a["fixed_conflict_share"], b["fixed_conflict_share"], 1),
        ("mean entropy H̃", a["mean_entropy"], b["mean_entropy"], 0),
        ("mean exact entropy (nats)", a["mean_entropy_nats"], b["mean_entropy_nats"], 0),
        ("mean target probability", a["mean_prob"], b["mean_prob"], 0),
        ("mean NLL (nats)", a["mean_nll"], b["mean_nll"], 0),
        ("mean EAFT weight", a["mean_eaft_weight"], b["mean_eaft_weight"], 0),
    ]


def _fmt(value: float, share: bool) -> str:
    return f"{value:.2%}" if share else f"{value:.4f}"


def _delta(a: float, b: float, share: bool) -> str:
    return f"{(b - a) * 100:+.2f} pp" if share else f"{b - a:+.4f}"


def compare_runs(dir1: str | Path, dir2: str | Path) -> str:
    """A Markdown table of DIR1 -> DIR2 for the data set (and the rollouts when both have them)."""
    s1, s2 = load_summary(dir1), load_summary(dir2)
    th = Thresholds(**s1["thresholds"])
    lines = [f"eaft analyze --compare: {dir1} -> {dir2}", ""]
    for run_dir, summary in ((dir1, s1), (dir2, s2)):
        warning = check_whole(run_dir, summary)
        lines += [warning, ""] if warning else []
    f1, f2 = s1["config"].get("data_fingerprint"), s2["config"].get("data_fingerprint")
    if f1 != f2:
        lines += [
            f"warning: the two analyses read different tokens (data fingerprints {f1} and {f2}): different data, "
            "max_samples, cutoff_len or tokenizer; the figures below compare different token sets.",
            "",
        ]
    e1, e2 = s1["thresholds"]["entropy_column"], s2["thresholds"]["entropy_column"]
    if e1 != e2:
        lines += [
            f"warning: the runs put different entropies on the axis ({e1} and {e2}); mean H̃ is not comparable.",
            "",
        ]
    for which in ("data", "rollouts"):
        if which not in s1 or which not in s2:
            continue
        a, b = s1[which], s2[which]
        lines += [f"## {which}", "", "| | DIR1 | DIR2 | change |", "|---|---|---|---|"]
        fixed_label = f"confident-conflict share at DIR1's thresholds (H̃<{th.entropy:.4g}, p<{th.prob:.4g})"
        rows = _rows(a, b)
        # DIR1's rollouts are already measured against DIR1's data thresholds
        rows.insert(1, (fixed_label, a["confident_conflict_share"], share_at(dir2, s2, which, th), 1))
        lines += [f"| label tokens | {a['tokens']:,} | {b['tokens']:,} | {b['tokens'] - a['tokens']:+,} |"]
        for label, x, y, share in rows:
            lines.append(f"| {label} | {_fmt(x, share)} | {_fmt(y, share)} | {_delta(x, y, share)} |")
        lines.append("")
    return "\n".join(lines)
