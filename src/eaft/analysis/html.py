"""report.html: the summary, both landscapes and a sample browser, in one self-contained page.

The page embeds a selection of samples (the densest in confident conflicts, plus a seeded random draw of the
others) as one inline JSON blob that its inline script renders page by page; the markup written here is the
static frame only, so the file stays small and the browser builds a few hundred token spans at a time.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from eaft.analysis.advice import advise
from eaft.analysis.landscape import QUADRANT_LABELS, QUADRANTS, Thresholds, conflict_mask, quadrant_codes
from eaft.analysis.report import figure_rows, sequence_keys, top_conflict_sequences
from eaft.html import escape, figure, json_script, page, resource_text

SIGNIFICANT_DIGITS = 3
PER_PAGE = (10, 25, 50, 100, 200)


@dataclass(frozen=True)
class Selection:
    """Data samples embedded in the page: `top` (densest conflicts, in rank order), `random` (sorted)."""

    top: list[int]
    random: list[int]
    total: int
    seed: int

    @property
    def left_out(self) -> int:
        return self.total - len(self.top) - len(self.random)

    def to_dict(self) -> dict:
        return {
            "file": "report.html",
            "top": len(self.top),
            "random": len(self.random),
            "left_out": self.left_out,
            "seed": self.seed,
            "samples": sorted(self.top + self.random),
        }


def select_samples(columns: dict[str, np.ndarray], th: Thresholds, total: int, *, most: int, random: int, seed: int):
    """The `most` samples with the densest confident conflicts (as report.md ranks them) and `random` others with
    label tokens, drawn without replacement with `seed`. `total` is the number of samples in the data set."""
    conflicts = conflict_mask(columns[th.entropy_column], columns["prob"], th)
    top = [entry["sample"] for entry in top_conflict_sequences(columns, conflicts, most)] if most else []
    pool = np.setdiff1d(np.unique(columns["sample"]), np.asarray(top, dtype=np.int64))
    rng = np.random.default_rng(seed)
    drawn = rng.choice(pool, size=min(random, len(pool)), replace=False) if random and len(pool) else []
    return Selection(top=top, random=sorted(int(i) for i in drawn), total=total, seed=seed)


def significant(values: np.ndarray, digits: int = SIGNIFICANT_DIGITS) -> list[float] | float:
    """Values rounded to `digits` significant digits, as a list; one number when they are all equal."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) and np.all(x == x[0]):
        return float(x[0])
    out = np.zeros_like(x)
    nonzero = np.isfinite(x) & (x != 0)
    scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(x[nonzero]))))
    out[nonzero] = np.round(x[nonzero] * scale) / scale
    return out.tolist()


def label_runs(positions: np.ndarray) -> list[int]:
    """Label positions as flat (start, length) pairs of consecutive runs: [3, 4, 5, 9] -> [3, 3, 9, 1]."""
    if not len(positions):
        return []
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = np.r_[0, breaks]
    lengths = np.diff(np.r_[starts, len(positions)])
    return np.stack([positions[starts], lengths], axis=1).reshape(-1).tolist()


def _sequence(columns, rows: np.ndarray, codes: np.ndarray, ids, vocab: dict[int, int], objectives) -> dict:
    """One sequence's tokens (indices into the page's vocabulary) and its label tokens' statistics. Gradient norms
    are not stored per objective: grad_<name> = |weight_<name>| · grad_norm, which the page multiplies out.
    Each column is a list, one number (equal over the sequence) or, for a weight, the key of an equal column."""
    counts = np.bincount(codes[rows], minlength=len(QUADRANTS))
    tokens = len(rows)
    entry = {
        "ids": [vocab.setdefault(int(t), len(vocab)) for t in ids],
        "lab": label_runs(columns["position"][rows]),
        "q": "".join(map(str, codes[rows].tolist())),
        "qc": counts.tolist(),
        "n": tokens,
        "c": int(counts[0]),
        "d": float(counts[0] / tokens) if tokens else 0.0,
        "nll": float(-np.mean(columns["logprob"][rows], dtype=np.float64)) if tokens else 0.0,
        "p": significant(columns["prob"][rows]),
        "ht": significant(columns["entropy_topk"][rows]),
        "hf": significant(columns["entropy_full"][rows]),
        "gn": significant(columns["grad_norm"][rows]),
    }
    entry["w"] = {name: _shared(significant(columns[f"weight_{name}"][rows]), entry) for name in objectives}
    return entry


def _shared(weights: list[float] | float, entry: dict) -> list[float] | float | str:
    """A weight column equal to one of the sequence's statistics is stored as that statistic's key (EAFT's weight
    is H̃ at alpha = 1, DFT's is p(y)): the largest part of the blob, stored once."""
    if isinstance(weights, list) and len(weights) > 1:
        for key in ("p", "ht", "hf"):
            if entry[key] == weights:
                return key
    return weights


def _rows_by_key(columns: dict[str, np.ndarray]) -> dict[tuple, np.ndarray]:
    keys = sequence_keys(columns)
    if not len(keys):
        return {}
    change = np.flatnonzero(np.r_[True, (keys[1:] != keys[:-1]).any(axis=1)])
    bounds = np.r_[change, len(keys)]
    return {tuple(int(k) for k in keys[a]): np.arange(a, b) for a, b in zip(bounds[:-1], bounds[1:], strict=True)}


def payload(sets: dict, th: Thresholds, objectives: list[str], selection: Selection, tokenizer) -> dict:
    """The page's JSON: one group per embedded data sample (the sample, then its rollouts), and the vocabulary."""
    vocab: dict[int, int] = {}
    per_set = {}
    for name, (columns, seqs, _) in sets.items():
        codes = quadrant_codes(columns[th.entropy_column], columns["prob"], th)
        per_set[name] = (columns, seqs, codes, _rows_by_key(columns))
    rollouts_of: dict[int, list[dict]] = {}
    if "rollouts" in per_set:
        for seq in per_set["rollouts"][1]:
            rollouts_of.setdefault(seq["sample"], []).append(seq)
    groups = []
    picks = [(i, "top") for i in selection.top] + [(i, "random") for i in selection.random]
    for sample, pick in picks:
        columns, seqs, codes, rows = per_set["data"]
        entries = [_sequence(columns, rows[(sample,)], codes, seqs[sample]["input_ids"], vocab, objectives)]
        if "rollouts" in per_set:
            r_columns, _, r_codes, r_rows = per_set["rollouts"]
            for seq in rollouts_of.get(sample, []):
                found = r_rows.get((sample, seq["rollout"]), np.zeros(0, np.int64))
                entry = _sequence(r_columns, found, r_codes, seq["input_ids"], vocab, objectives)
                entries.append({**entry, "r": seq["rollout"]})
        groups.append({"s": sample, "pick": pick, "seqs": entries})
    text = [""] * len(vocab)
    for token_id, index in vocab.items():
        text[index] = tokenizer.decode([token_id])
    meta = {
        "objectives": objectives,
        "quadrants": list(QUADRANTS),
        "quadrant_labels": [QUADRANT_LABELS[q] for q in QUADRANTS],
        "thresholds": th.to_dict(),
        "embedded": selection.to_dict() | {"total": selection.total},
        "per_page": list(PER_PAGE),
    }
    return {"meta": meta, "vocab": text, "groups": groups}


def inline_markdown(text: str) -> str:
    """The figures' labels: escaped, with Markdown `code` and **bold** as HTML."""
    out = escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _header(summary: dict) -> str:
    cfg, th = summary["config"], summary["thresholds"]
    adapter = f" with adapter <code>{escape(cfg['adapter'])}</code>" if cfg.get("adapter") else ""
    return (
        "<header><h1>eaft analyze</h1>"
        f"<p>Model <code>{escape(cfg['model_label'])}</code>{adapter}, data <code>{escape(cfg['data'])}</code> "
        f"({summary['data']['sequences']:,} samples, {summary['data']['tokens']:,} label tokens).</p>"
        f"<p>A label token is a <strong>confident conflict</strong> when its normalized entropy "
        f"<code>{escape(th['entropy_column'])}</code> is below {th['entropy']:.4g} (the {th['entropy_quantile']:.0%} "
        f"quantile) and its target probability p(y) is below {th['prob']:.4g} (the {th['prob_quantile']:.0%} "
        "quantile).</p></header>"
    )


def _figures(summary: dict, sets: list[str]) -> str:
    head = "".join(f'<th scope="col">{escape(s)}</th>' for s in sets)
    rows = "".join(
        f'<tr><th scope="row">{inline_markdown(label)}</th>'
        + "".join(f"<td>{escape(v)}</td>" for v in values)
        + "</tr>"
        for label, values in figure_rows(summary, sets)
    )
    return (
        '<section aria-labelledby="h-figures"><h2 id="h-figures">Summary</h2>'
        f'<table class="figures"><thead><tr><td></td>{head}</tr></thead><tbody>{rows}</tbody></table></section>'
    )


def _landscapes(summary: dict, out) -> str:
    files = summary["files"]
    shown = [
        ("landscape", "Entropy–probability landscape: token density over p(y) and H̃, confident conflicts hatched"),
        ("gradient_landscape", "Gradient landscape of the data set: mean logits-gradient norm per cell, per objective"),
        ("rollout_gradient_landscape", "Gradient landscape of the rollouts"),
    ]
    figures = "".join(figure(out / files[key], alt, alt) for key, alt in shown if key in files)
    return f'<section aria-labelledby="h-landscapes"><h2 id="h-landscapes">Landscapes</h2>{figures}</section>'


def _options(pairs, selected: str = "") -> str:
    return "".join(
        f'<option value="{escape(v)}"{" selected" if v == selected else ""}>{escape(label)}</option>'
        for v, label in pairs
    )


def _control(element_id: str, label: str, pairs, selected: str) -> str:
    return (
        f'<span><label for="{element_id}">{escape(label)}</label> '
        f'<select id="{element_id}">{_options(pairs, selected)}</select></span>'
    )


def _embedded_note(meta: dict, summary: dict) -> str:
    e = meta["embedded"]
    rollouts = f", each beside its {summary['config']['rollouts']} rollouts" if "rollouts" in summary else ""
    table = summary["files"]["tokens"]
    return (
        f'<p id="embedded">This page holds <strong>{e["top"] + e["random"]:,} of the {e["total"]:,} samples</strong>'
        f"{rollouts}: the {e['top']:,} with the densest confident conflicts (samples with at least 5 label tokens, "
        f"ranked as in report.md) and {e['random']:,} more drawn at random (seed {e['seed']}). "
        f"<strong>{e['left_out']:,} left out</strong>; {escape(table)} has every token. "
        "Flags: <code>--html-samples</code>, <code>--html-random</code>, <code>--seed</code>.</p>"
    )


def _browser(summary: dict, data: dict) -> str:
    meta, th = data["meta"], summary["thresholds"]
    axis = "top-k" if th["entropy_column"] == "entropy_topk" else "exact"
    measures = [("eaft", "EAFT weight"), ("prob", "p(y)"), ("entropy", f"H̃ ({axis})"), ("conflict", "conflict yes/no")]
    sorts = [("density", "conflict density"), ("nll", "mean NLL"), ("file", "position in the file")]
    present = [sum(any(s["qc"][q] for s in g["seqs"]) for g in data["groups"]) for q in range(len(QUADRANTS))]
    quadrants = [("", "any (no filter)")] + [
        (name, f"{QUADRANT_LABELS[name]}: {present[q]:,}") for q, name in enumerate(QUADRANTS)
    ]
    per = [(str(n), str(n)) for n in PER_PAGE]
    return (
        '<section id="samples" aria-labelledby="h-samples"><h2 id="h-samples">Samples</h2>'
        + _embedded_note(meta, summary)
        + '<form class="controls" id="controls" aria-label="sample browser controls">'
        + _control("measure", "Colour by", measures, "eaft")
        + _control("sort", "Sort by", sorts, "density")
        + _control("quadrant", "Only samples with a token in", quadrants, "")
        + _control("per", "Per page", per, "25")
        + '<span><button type="button" id="prev">← Previous</button> <span id="pageinfo" aria-live="polite"></span> '
        '<button type="button" id="next">Next →</button></span></form>'
        '<div id="legend" aria-hidden="true"></div>'
        '<p class="help">Prompt tokens are grey; label tokens are coloured by the chosen measure, and '
        '<span class="conflict-example">confident conflicts</span> are always underlined (wavy). Hover a token, '
        "or Tab into a sample and move with ← → (Home, End; n / p jump to the next or previous conflict), to see "
        "its p(y), H̃ and each objective's weight and gradient.</p>"
        '<div id="sample-list"><p class="noscript">The sample browser needs JavaScript.</p></div>'
        '<div id="tip" class="tip" role="status" aria-live="polite" hidden></div></section>'
    )


def render_page(summary: dict, data: dict, out) -> str:
    """The whole page: static summary, landscapes and controls; samples in the JSON blob for the script."""
    sets = ["data"] + (["rollouts"] if "rollouts" in summary else [])
    body = "\n".join(
        [
            _header(summary),
            "<main>",
            '<div class="overview">' + _figures(summary, sets) + _landscapes(summary, out) + "</div>",
            advise(summary).html(),
            _browser(summary, data),
            "</main>",
            json_script(data, "eaft-data"),
        ]
    )
    title = f"eaft analyze: {summary['config']['model_label']} on {summary['config']['data']}"
    return page(title, body, script=resource_text("analysis.js"))


def build_report_html(summary: dict, sets: dict, th: Thresholds, tokenizer, out, *, most: int, random: int, seed: int):
    """report.html's text and what it embeds (for summary.json), from the analysis still in memory."""
    data_columns, _, count = sets["data"]
    selection = select_samples(data_columns, th, count, most=most, random=random, seed=seed)
    objectives = list(summary["data"]["gradient"])
    data = payload(sets, th, objectives, selection, tokenizer)
    return render_page(summary, data, out), selection.to_dict()
