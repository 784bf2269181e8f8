"""Summary figures of a token table and the Markdown report, with confident conflicts marked in context."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from eaft.analysis.advice import advise
from eaft.analysis.landscape import CONFLICT, QUADRANT_LABELS, Thresholds, conflict_mask, quadrant_shares
from eaft.objectives.loss import CONFLICT_ENTROPY, CONFLICT_PROB

MARKDOWN_SPECIALS = "\\`*_[]<>#|"


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x, dtype=np.float64)) if len(x) else 0.0


def sequence_keys(columns: dict[str, np.ndarray]) -> np.ndarray:
    """One key per sequence: the sample id, or (sample, rollout) pairs for rollouts. Shape: [N] or [N, 2]."""
    if "rollout" in columns:
        return np.stack([columns["sample"], columns["rollout"]], axis=1)
    return columns["sample"][:, None]


def set_summary(columns: dict[str, np.ndarray], th: Thresholds, objectives: Sequence[str], sequences: int) -> dict:
    """The figures of one token set (the data set, or the rollouts) under thresholds `th`."""
    entropy, prob = columns[th.entropy_column], columns["prob"]
    conflicts = conflict_mask(entropy, prob, th)
    shares = quadrant_shares(entropy, prob, th)
    fixed = (columns["entropy_topk"] < CONFLICT_ENTROPY) & (prob < CONFLICT_PROB)
    with_targets = len(np.unique(sequence_keys(columns), axis=0)) if len(prob) else 0
    gradient = {}
    for name in objectives:
        grad = columns[f"grad_{name}"].astype(np.float64)
        total = grad.sum()
        gradient[name] = {
            "mean_norm": _mean(grad),
            "conflict_share_of_norm": float(grad[conflicts].sum() / total) if total > 0 else 0.0,
            "fixed_conflict_share_of_norm": float(grad[fixed].sum() / total) if total > 0 else 0.0,
        }
    return {
        "sequences": sequences,
        "sequences_with_targets": with_targets,
        "tokens": len(prob),
        "quadrant_shares": shares,
        "confident_conflict_share": shares[CONFLICT],
        "fixed_conflict_share": _mean(fixed),
        "mean_entropy": _mean(entropy),
        "mean_entropy_topk": _mean(columns["entropy_topk"]),
        "mean_entropy_full": _mean(columns["entropy_full"]),
        "mean_entropy_nats": _mean(columns["entropy_nats"]),
        "mean_prob": _mean(prob),
        "mean_nll": -_mean(columns["logprob"]),
        "mean_eaft_weight": _mean(columns["weight_eaft"]),
        "mean_weight": {name: _mean(columns[f"weight_{name}"]) for name in objectives},
        "gradient": gradient,
    }


def top_conflict_sequences(
    columns: dict[str, np.ndarray], conflicts: np.ndarray, top_n: int = 10, min_tokens: int = 5
) -> list[dict]:
    """Sequences ranked by conflict density (conflicts / label tokens), then by conflict count.

    Sequences with fewer than `min_tokens` label tokens (a one-word answer is all-or-nothing) or no conflict
    are left out.
    """
    keys = sequence_keys(columns)
    if not len(keys):
        return []
    uniq, inverse = np.unique(keys, axis=0, return_inverse=True)
    inverse = inverse.reshape(-1)
    tokens = np.bincount(inverse, minlength=len(uniq))
    hits = np.bincount(inverse, weights=conflicts.astype(np.float64), minlength=len(uniq))
    density = hits / np.maximum(tokens, 1)
    ok = (tokens >= min_tokens) & (hits > 0)
    order = [i for i in np.lexsort((-hits, -density)) if ok[i]][:top_n]
    out = []
    for i in order:
        entry = {"sample": int(uniq[i, 0]), "tokens": int(tokens[i]), "conflicts": int(hits[i])}
        if keys.shape[1] == 2:
            entry["rollout"] = int(uniq[i, 1])
        entry["density"] = float(density[i])
        out.append(entry)
    return out


def escape_markdown(text: str) -> str:
    return "".join("\\" + c if c in MARKDOWN_SPECIALS else c for c in text)


def bold(text: str) -> str:
    """`**text**` per line, whitespace kept outside the marks so that Markdown renders them."""
    pieces = []
    for line in text.split("\n"):
        core = line.strip()
        if not core:
            pieces.append(line)
            continue
        lead, trail = line[: len(line) - len(line.lstrip())], line[len(line.rstrip()) :]
        pieces.append(f"{lead}**{escape_markdown(core)}**{trail}")
    return "\n".join(pieces)


def highlight_sequence(tokenizer, input_ids: Sequence[int], positions: np.ndarray, flags: np.ndarray) -> str:
    """The label tokens of one sequence as Markdown, conflicting runs in `**bold**`, gaps between assistant
    turns shown as ` … `. Runs are decoded whole so that multi-byte characters survive."""
    pieces: list[str] = []
    start = 0
    for end in range(1, len(positions) + 1):
        if end < len(positions) and flags[end] == flags[start] and positions[end] == positions[end - 1] + 1:
            continue
        # special tokens stay: an end-of-turn marker is a trained label like any other
        text = tokenizer.decode([int(input_ids[p]) for p in positions[start:end]])
        pieces.append(bold(text) if flags[start] else escape_markdown(text))
        if end < len(positions) and positions[end] != positions[end - 1] + 1:
            pieces.append(" … ")
        start = end
    return "".join(pieces)


def prompt_tail(tokenizer, input_ids: Sequence[int], first_label: int, chars: int = 240) -> str:
    text = tokenizer.decode(list(input_ids[:first_label]), skip_special_tokens=True).strip()
    return ("…" + text[-chars:]) if len(text) > chars else text


def quote(text: str) -> str:
    return "\n".join("> " + line if line.strip() else ">" for line in text.split("\n"))


def annotate_top(tokenizer, columns: dict[str, np.ndarray], conflicts: np.ndarray, top: list[dict], ids_of) -> None:
    """Add `prompt`, `markdown` (highlighted response) and `conflict_tokens` to each entry of `top`, in place.

    `ids_of(entry)` returns the input_ids of the entry's sequence.
    """
    keys = sequence_keys(columns)
    entropy_col = "entropy_topk"
    for entry in top:
        key = [entry["sample"]] + ([entry["rollout"]] if "rollout" in entry else [])
        rows = np.flatnonzero((keys == np.asarray(key)).all(axis=1))
        ids = ids_of(entry)
        positions, flags = columns["position"][rows], conflicts[rows]
        entry["prompt"] = prompt_tail(tokenizer, ids, int(positions[0]))
        entry["markdown"] = highlight_sequence(tokenizer, ids, positions, flags)
        entry["conflict_tokens"] = [
            {
                "position": int(columns["position"][r]),
                "token": tokenizer.decode([int(columns["token_id"][r])]),
                "prob": float(columns["prob"][r]),
                "entropy_topk": float(columns[entropy_col][r]),
            }
            for r in rows[flags][:10]
        ]


def figure_rows(summary: dict, sets: list[str]) -> list[tuple[str, list[str]]]:
    """The summary figures of each set as (label, formatted values); labels use Markdown's `code` and **bold**."""
    rows: list[tuple[str, list[str]]] = []

    def row(label, get, fmt="{:.2%}"):
        rows.append((label, [fmt.format(get(summary[s])) for s in sets]))

    row("label tokens", lambda s: s["tokens"], "{:,}")
    row("sequences with label tokens", lambda s: s["sequences_with_targets"], "{:,}")
    for quadrant in summary[sets[0]]["quadrant_shares"]:
        row(f"{QUADRANT_LABELS[quadrant]} (`{quadrant}`)", lambda s, q=quadrant: s["quadrant_shares"][q])
    row("**confident-conflict share**", lambda s: s["confident_conflict_share"])
    row(
        f"conflict share at fixed H̃ < {CONFLICT_ENTROPY}, p < {CONFLICT_PROB} (as in training logs)",
        lambda s: s["fixed_conflict_share"],
    )
    row("mean entropy H̃ (landscape axis)", lambda s: s["mean_entropy"], "{:.4f}")
    row("mean exact entropy (nats)", lambda s: s["mean_entropy_nats"], "{:.4f}")
    row("mean target probability", lambda s: s["mean_prob"], "{:.4f}")
    row("mean NLL (nats)", lambda s: s["mean_nll"], "{:.4f}")
    row("mean EAFT weight", lambda s: s["mean_eaft_weight"], "{:.4f}")
    for name in summary[sets[0]]["gradient"]:
        row(f"`{name}`: mean weight", lambda s, n=name: s["mean_weight"][n], "{:.4f}")
        row(
            f"`{name}`: share of gradient norm in the conflict region",
            lambda s, n=name: s["gradient"][n]["conflict_share_of_norm"],
        )
        row(
            f"`{name}`: share of gradient norm at fixed H̃ < {CONFLICT_ENTROPY}, p < {CONFLICT_PROB}",
            lambda s, n=name: s["gradient"][n]["fixed_conflict_share_of_norm"],
        )
    return rows


def _figures_table(summary: dict, sets: list[str]) -> list[str]:
    lines = ["| | " + " | ".join(sets) + " |", "|---" * (len(sets) + 1) + "|"]
    return lines + [f"| {label} | " + " | ".join(values) + " |" for label, values in figure_rows(summary, sets)]


def _samples_section(title: str, top: list[dict]) -> list[str]:
    lines = [f"## {title}", ""]
    if not top:
        return lines + ["No sequence with at least one confident conflict.", ""]
    for rank, entry in enumerate(top, 1):
        which = f"sample {entry['sample']}" + (f", rollout {entry['rollout']}" if "rollout" in entry else "")
        lines += [f"### {rank}. {which}: {entry['conflicts']} of {entry['tokens']} tokens ({entry['density']:.1%})", ""]
        if entry.get("prompt"):
            lines += ["Prompt (end):", "", quote(escape_markdown(entry["prompt"])), ""]
        lines += ["Response, confident conflicts in **bold**:", "", quote(entry["markdown"]), ""]
        marks = ", ".join(
            f"`{t['token'].strip() or repr(t['token'])}` (p={t['prob']:.3g}, H̃={t['entropy_topk']:.3f})"
            for t in entry["conflict_tokens"]
        )
        lines += [f"Conflicts: {marks}", ""]
    return lines


def render_report(summary: dict) -> str:
    """report.md from summary.json's content."""
    cfg, th = summary["config"], summary["thresholds"]
    sets = ["data"] + (["rollouts"] if "rollouts" in summary else [])
    lines = [
        "# eaft analyze",
        "",
        f"Model `{cfg['model_label']}`"
        + (f" with adapter `{cfg['adapter']}`" if cfg.get("adapter") else "")
        + f", data `{cfg['data']}` ({summary['data']['sequences']:,} samples).",
        "",
        "## Confident conflicts",
        "",
        f"A label token is a confident conflict when its normalized entropy `{th['entropy_column']}` is below "
        f"**{th['entropy']:.4g}** (the {th['entropy_quantile']:.0%} quantile over the data set) and its target "
        f"probability is below **{th['prob']:.4g}** (the {th['prob_quantile']:.0%} quantile)."
        + (" Rollouts are measured against the data set's thresholds." if "rollouts" in summary else ""),
        "",
        *_figures_table(summary, sets),
        "",
        "Objectives whose weights depend on the whole batch see the whole token set as one batch; `sft_kl` is "
        "measured with the analyzed model as its reference (KL term zero); `flow` with it as the initial model.",
        "",
        *advise(summary).markdown(),
        "## Landscapes",
        "",
        f"![entropy–probability landscape]({summary['files']['landscape']})",
        "",
        f"![gradient landscape]({summary['files']['gradient_landscape']})",
        "",
    ]
    if "rollouts" in summary:
        lines += [f"![rollout gradient landscape]({summary['files']['rollout_gradient_landscape']})", ""]
    lines += _samples_section("Samples with the densest confident conflicts", summary["data"]["top"])
    if "rollouts" in summary:
        lines += _samples_section("Rollouts with the densest confident conflicts", summary["rollouts"]["top"])
    return "\n".join(lines)
