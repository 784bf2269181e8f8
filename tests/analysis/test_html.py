"""report.html of `eaft analyze`: what it embeds (checked against the token tables), that it references nothing
outside itself, and — in headless Chromium — what its script renders: samples, token spans, conflict marks, the
sort and filter controls, and the token details shown on focus."""

from __future__ import annotations

import base64
import json
import re

import numpy as np
import pytest

from eaft.analysis.html import select_samples, significant
from eaft.analysis.landscape import Thresholds, conflict_mask
from eaft.analysis.outputs import read_table
from eaft.browser import file_url, run_chromium
from eaft.cli import main as eaft_main
from eaft.data import encode_conversation
from tests.analysis.conftest import conversations, peaked, write_jsonl
from tests.browser import external_references, parse_dom, references, require_chromium
from tests.train.tiny import build_model, build_tokenizer

N_SAMPLES, TOP, RANDOM, K = 16, 4, 5, 2


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    """An analysis with rollouts whose page embeds the 4 densest samples and 5 drawn at random."""
    root = tmp_path_factory.mktemp("html")
    tokenizer = build_tokenizer()
    convs = conversations(N_SAMPLES, seed=7)
    data = write_jsonl(root / "data.jsonl", convs)
    peaked(build_model(vocab_size=len(tokenizer))).save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    out = root / "out"
    args = ["analyze", "--model", str(root / "model"), "--data", data, "--out", str(out), "--no-progress"]
    args += ["--objectives", "dft", "--bins", "10", "--top-n", "3", "--rollouts", str(K), "--max-new-tokens", "5"]
    args += ["--html-samples", str(TOP), "--html-random", str(RANDOM), "--table-format", "jsonl"]
    assert eaft_main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    th = Thresholds(**summary["thresholds"])
    tables = {
        name: read_table(out / f"{prefix}tokens.jsonl") for name, prefix in (("data", ""), ("rollouts", "rollout_"))
    }
    flags = {name: conflict_mask(t[th.entropy_column], t["prob"], th) for name, t in tables.items()}
    ids = [encode_conversation(tokenizer, c)["input_ids"] for c in convs]
    return {"out": out, "summary": summary, "tables": tables, "flags": flags, "ids": ids, "tokenizer": tokenizer}


def per_sample(analysis, sample: int, name: str = "data"):
    """Label-token rows of one data sample (name='data') or of all its rollouts (name='rollouts')."""
    rows = analysis["tables"][name]["sample"] == sample
    return analysis["tables"][name], rows, analysis["flags"][name][rows]


def expected_order(analysis, samples: list[int], sort: str) -> list[int]:
    def key(s):
        table, rows, flags = per_sample(analysis, s)
        density, nll = flags.mean(), -table["logprob"][rows].astype(np.float64).mean()
        return {"density": (-density, -int(flags.sum()), s), "nll": (-nll, s), "file": (s,)}[sort]

    return sorted(samples, key=key)


def test_summary_records_the_selection_and_it_follows_the_ranking_and_the_seed(analysis):
    summary, table = analysis["summary"], analysis["tables"]["data"]
    info = summary["html"]
    assert summary["files"]["html"] == "report.html" and (analysis["out"] / "report.html").is_file()
    assert (info["top"], info["random"], info["left_out"]) == (TOP, RANDOM, N_SAMPLES - TOP - RANDOM)
    # the densest samples as report.md ranks them (>= 5 label tokens, at least one conflict)
    eligible = [s for s in range(N_SAMPLES) if (table["sample"] == s).sum() >= 5 and per_sample(analysis, s)[2].any()]
    dense = expected_order(analysis, eligible, "density")[:TOP]
    assert [t["sample"] for t in summary["data"]["top"]] == dense[:3]
    th = Thresholds(**summary["thresholds"])
    same = select_samples(table, th, N_SAMPLES, most=TOP, random=RANDOM, seed=0)
    assert same.top == dense and sorted(same.top + same.random) == info["samples"]
    assert not set(same.top) & set(same.random) and len(set(same.random)) == RANDOM
    draws = {tuple(select_samples(table, th, N_SAMPLES, most=TOP, random=RANDOM, seed=s).random) for s in range(6)}
    assert len(draws) > 1  # another seed, another draw
    everything = select_samples(table, th, N_SAMPLES, most=0, random=100, seed=3)
    assert everything.top == [] and everything.random == list(range(N_SAMPLES)) and everything.left_out == 0


def test_page_references_nothing_outside_itself(analysis):
    out = analysis["out"]
    document = (out / "report.html").read_text(encoding="utf-8")
    assert external_references(document) == []
    assert "Content-Security-Policy" in document and "default-src 'none'" in document
    images = [r for r in references(document) if r.startswith("data:")]
    embedded = {base64.b64decode(r.split(",", 1)[1]) for r in images}
    on_disk = {(out / analysis["summary"]["files"][k]).read_bytes() for k in ("landscape", "gradient_landscape")}
    assert on_disk | {(out / "rollout_gradient_landscape.png").read_bytes()} == embedded
    assert len(document) < 2_000_000  # 9 samples: the frame, the images and a small JSON blob


def test_embedded_data_match_the_token_tables(analysis):
    document = (analysis["out"] / "report.html").read_text(encoding="utf-8")
    blob = re.search(r'<script type="application/json" id="eaft-data">(.*?)</script>', document, re.S).group(1)
    data = json.loads(blob)
    picks = [g["pick"] for g in data["groups"]]
    assert picks == ["top"] * TOP + ["random"] * RANDOM
    assert sorted(g["s"] for g in data["groups"]) == analysis["summary"]["html"]["samples"]
    randoms = [g["s"] for g in data["groups"] if g["pick"] == "random"]
    assert randoms == sorted(randoms)
    for group in data["groups"]:
        table, rows, flags = per_sample(analysis, group["s"])
        seq = group["seqs"][0]
        assert seq["n"] == rows.sum() and seq["c"] == flags.sum() and seq["q"].count("0") == flags.sum()
        assert [data["vocab"][i] for i in seq["ids"]] == [
            analysis["tokenizer"].decode([t]) for t in analysis["ids"][group["s"]]
        ]
        starts, lengths = seq["lab"][::2], seq["lab"][1::2]
        positions = [p for start, n in zip(starts, lengths, strict=True) for p in range(start, start + n)]
        assert positions == table["position"][rows].tolist() and len(starts) < len(positions)  # runs, not tokens
        np.testing.assert_allclose(seq["p"], table["prob"][rows], rtol=5e-3)
        for name in ("sft", "eaft", "dft"):
            stored = seq["w"][name]
            weights = np.broadcast_to(seq[stored] if isinstance(stored, str) else stored, rows.sum())
            np.testing.assert_allclose(weights, table[f"weight_{name}"][rows], rtol=5e-3, atol=1e-7)
            grads = np.abs(weights) * np.asarray(seq["gn"])  # what the page shows as the objective's gradient
            np.testing.assert_allclose(grads, table[f"grad_{name}"][rows], rtol=1e-2, atol=1e-6)
        assert seq["w"]["dft"] == "p"  # DFT's weight is p(y): stored once
        assert [s["r"] for s in group["seqs"][1:]] == list(range(K))
    assert significant(np.array([0.123456, 3.21987e-7, 0.0])) == [0.123, 3.22e-7, 0.0]
    assert significant(np.array([1.0, 1.0])) == 1.0  # a constant column is one number


def test_bad_html_flags_name_the_flag(tmp_path, capsys):
    assert eaft_main(["analyze", "--data", "x.jsonl", "--html-samples", "-1"]) == 2
    assert "--html-samples must be an integer >= 0, got -1" in capsys.readouterr().err
    assert eaft_main(["analyze", "--data", "x.jsonl", "--html-random", "-3"]) == 2
    assert "--html-random must be an integer >= 0, got -3" in capsys.readouterr().err


def test_no_html_writes_no_page(tmp_path, model, tokenizer):
    from eaft.analysis import AnalyzeConfig, run_analysis

    data = write_jsonl(tmp_path / "data.jsonl", conversations(4, seed=1))
    config = AnalyzeConfig(data=data, out=str(tmp_path / "out"), html=False, bins=5, progress=False)
    summary = run_analysis(config, model, tokenizer)
    assert "html" not in summary["files"] and "html" not in summary
    assert not (tmp_path / "out" / "report.html").exists() and (tmp_path / "out" / "report.md").is_file()


def rendered(analysis, tmp_path, fragment: str = "", screenshot: bool = False):
    require_chromium()
    shot = tmp_path / f"report-{re.sub(r'[^a-z0-9]+', '_', fragment) or 'default'}.png" if screenshot else None
    dom = parse_dom(run_chromium(file_url(analysis["out"] / "report.html", fragment), dump_dom=True, screenshot=shot))
    return dom, shot


def articles(dom):
    return dom.by_id("sample-list").find("article")


def test_chromium_renders_every_embedded_sample_with_its_conflicts_marked(analysis, tmp_path):
    dom, shot = rendered(analysis, tmp_path, screenshot=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 20_000
    html = dom.find("html")[0]
    assert float(html.attrs["data-rendered"]) > 0 and html.attrs["data-resources"] == "0"
    shown = articles(dom)
    assert len(shown) == TOP + RANDOM
    tokens = conflicts = 0
    for article in shown:
        sample = int(article.attrs["data-sample"])
        seqs = article.find("div", cls="seq")
        assert [s.attrs["data-k"] for s in seqs] == [str(k) for k in range(K + 1)]  # the sample, then its rollouts
        table, rows, flags = per_sample(analysis, sample)
        spans = seqs[0].find("span", cls="tok")
        assert [s.attrs["tabindex"] for s in spans] == ["0"] + ["-1"] * (len(spans) - 1)  # one tab stop per sample
        assert [int(s.attrs["data-j"]) for s in spans] == list(range(rows.sum()))
        assert [s.text_content().lstrip("⏎") for s in spans] == table["token"][rows].tolist()
        text = seqs[0].find("div", cls="text")[0].text_content().replace("⏎", "")
        assert text == analysis["tokenizer"].decode(analysis["ids"][sample])  # the prompt is there, in order
        assert sum("c" in s.classes for s in spans) == flags.sum()
        _, r_rows, r_flags = per_sample(analysis, sample, "rollouts")
        tokens += rows.sum() + r_rows.sum()
        conflicts += flags.sum() + r_flags.sum()
    marked = dom.by_id("sample-list").find("span", cls="c")
    assert len(dom.by_id("sample-list").find("span", cls="tok")) == tokens
    assert len(marked) == conflicts and all("tok" in m.classes for m in marked)
    top = {t["sample"]: t["conflicts"] for t in analysis["summary"]["data"]["top"]}
    for article in shown:
        if int(article.attrs["data-sample"]) in top:
            first = article.find("div", cls="seq")[0]
            assert len(first.find("span", cls="c")) == top[int(article.attrs["data-sample"])]


def test_the_sort_control_reorders_the_samples(analysis, tmp_path):
    samples = analysis["summary"]["html"]["samples"]
    orders = {sort: expected_order(analysis, samples, sort) for sort in ("density", "nll", "file")}
    assert len({tuple(o) for o in orders.values()}) == 3  # the fixture has three different orders to tell apart
    for sort, fragment in (("density", ""), ("nll", "sort=nll"), ("file", "sort=file")):
        dom, _ = rendered(analysis, tmp_path, fragment)
        assert [int(a.attrs["data-sample"]) for a in articles(dom)] == orders[sort], sort
        assert dom.by_id("sample-list").attrs["data-sort"] == sort


def test_quadrant_filter_paging_and_colouring_by_conflict(analysis, tmp_path):
    dom, shot = rendered(analysis, tmp_path, "quadrant=low_entropy_low_prob&measure=conflict&per=10", screenshot=True)
    expected = [
        s
        for s in analysis["summary"]["html"]["samples"]
        if per_sample(analysis, s)[2].any() or per_sample(analysis, s, "rollouts")[2].any()
    ]
    shown = [int(a.attrs["data-sample"]) for a in articles(dom)]
    assert sorted(shown) == expected and len(expected) < TOP + RANDOM
    spans = dom.by_id("sample-list").find("span", cls="tok")
    coloured = [s for s in spans if "background" in (s.attrs.get("style") or "")]
    assert coloured and coloured == [s for s in spans if "c" in s.classes]  # colour and underline agree
    assert "of " + str(TOP + RANDOM) + " embedded" in dom.by_id("pageinfo").text_content()
    dom, _ = rendered(analysis, tmp_path, "sort=file&per=10&page=1")
    assert len(articles(dom)) == TOP + RANDOM and dom.by_id("next").attrs.get("disabled") is not None


def test_focusing_a_token_shows_its_statistics(analysis, tmp_path):
    sample = analysis["summary"]["data"]["top"][0]["sample"]
    table, rows, flags = per_sample(analysis, sample)
    j = int(np.flatnonzero(flags)[0])
    dom, _ = rendered(analysis, tmp_path, f"focus={sample}.0.{j}", screenshot=True)
    tip = dom.by_id("tip")
    assert "hidden" not in tip.attrs
    text = tip.text_content()
    prob = float(np.format_float_positional(table["prob"][rows][j], precision=3, unique=False, fractional=False))
    shown = f"{prob:.4f}" if prob >= 1e-3 else re.sub(r"e([+-])0*(\d)", r"e\1\2", f"{prob:.2e}")  # as JS prints it
    assert "confident conflict" in text and f"p(y) = {shown}" in text
    assert all(name in text for name in ("sft", "eaft", "dft")) and "H̃ top-k" in text and "H̃ exact" in text
    for label in ("measure", "sort", "quadrant", "per"):  # real controls with labels
        assert dom.by_id(label).tag == "select" and dom.find("label", for_=label)


# Appended after the page's own script (the page's CSP allows inline scripts): real DOM events on its controls.
DRIVE = """<script>
(() => {
  const log = {};
  const list = document.getElementById("sample-list");
  const sort = document.getElementById("sort");
  sort.value = "nll";
  sort.dispatchEvent(new Event("change"));
  log.hash = location.hash;
  log.order = [...list.querySelectorAll("article")].map((a) => +a.dataset.sample);
  const press = (key) => document.activeElement.dispatchEvent(new KeyboardEvent("keydown", { key, bubbles: true }));
  const at = () => document.activeElement.dataset.j;
  list.querySelector(".tok").focus();
  log.moves = [];
  for (const key of KEYS) {
    press(key);
    log.moves.push(+at());
  }
  log.stops = list.querySelector(".text").querySelectorAll('.tok[tabindex="0"]').length;
  log.tip = !document.getElementById("tip").hidden;
  document.documentElement.dataset.drive = JSON.stringify(log);
})();
</script>"""


KEYS = ["ArrowRight", "ArrowRight", "ArrowLeft", "End", "Home", "n", "n", "p", "ArrowLeft"]


def key_moves(keys: list[str], n: int, conflicts: list[int]) -> list[int]:
    """Where focus goes, token by token: ← → one step, Home/End the ends, n/p the next/previous conflict."""
    at, out = 0, []
    for key in keys:
        goal = {
            "ArrowRight": at + 1,
            "ArrowLeft": at - 1,
            "Home": 0,
            "End": n - 1,
            "n": min([c for c in conflicts if c > at], default=-1),
            "p": max([c for c in conflicts if c < at], default=-1),
        }[key]
        at = goal if 0 <= goal < n else at
        out.append(at)
    return out


def test_controls_and_keys_work_through_dom_events(analysis, tmp_path):
    require_chromium()
    page = (analysis["out"] / "report.html").read_text(encoding="utf-8")
    driven = tmp_path / "driven.html"
    drive = DRIVE.replace("KEYS", json.dumps(KEYS))
    driven.write_text(page.replace("</body>", drive + "\n</body>"), encoding="utf-8")
    dom = parse_dom(run_chromium(file_url(driven), dump_dom=True))
    log = json.loads(dom.find("html")[0].attrs["data-drive"])
    samples = analysis["summary"]["html"]["samples"]
    assert "sort=nll" in log["hash"] and log["order"] == expected_order(analysis, samples, "nll")
    first = log["order"][0]  # the sample whose first token got focus, after the re-sort
    _, rows, flags = per_sample(analysis, first)
    assert flags.any(), "the fixture's highest-NLL sample has a conflict to jump to"
    assert log["moves"] == key_moves(KEYS, int(rows.sum()), np.flatnonzero(flags).tolist())
    assert log["stops"] == 1 and log["tip"]  # the roving tab stop moved along; the details follow focus


def test_the_reference_check_finds_what_a_page_would_fetch():
    assert external_references('<img src="https://example.org/a.png">')
    assert external_references('<script src="//cdn.example.org/x.js"></script>')
    assert external_references("<style>body { background: url(http://example.org/b.png) }</style>")
    assert external_references('<link rel="stylesheet" href="file:///etc/x.css">')
    assert external_references('<img src="data:image/png;base64,AAAA"><a href="#x"></a><a href="../s/t.jsonl">') == []
