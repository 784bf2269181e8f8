"""forgetting.html of `eaft report`: the table, the embedded scatter and frontier, links to each run's samples,
nothing fetched from outside; rendered in headless Chromium."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

import pytest

from eaft.browser import file_url, run_chromium
from eaft.evaluate.report import main, write_report
from tests.browser import external_references, parse_dom, references, require_chromium
from tests.evaluate.test_frontier import curve_evals
from tests.evaluate.test_report import make_run


def add_samples(run_dir: str | Path, tasks: list[str]) -> None:
    folder = Path(run_dir) / "samples"
    folder.mkdir()
    for task in tasks:
        (folder / f"{task}.jsonl").write_text(json.dumps({"id": 0, "prediction": "x"}) + "\n")


@pytest.fixture
def report(tmp_path):
    runs = {
        "base": make_run(tmp_path, "base", {"t1": 10, "t2": 20, "g1": 50, "g2": 60}),
        "A": make_run(tmp_path, "A", {"t1": 30, "t2": 40, "g1": 45, "g2": 55}),
        "B": make_run(tmp_path, "B", {"t1": 20, "t2": 20, "g1": 50, "g2": 60}),
    }
    add_samples(runs["base"], ["t1", "t2", "g1", "g2"])
    add_samples(runs["A"], ["t1", "g1"])  # B has none: its scores are plain text
    out = tmp_path / "reports" / "r1"
    assert main([runs["A"], runs["B"], "--base", runs["base"], "--out", str(out)]) == 0
    return out, runs


def links(document: str) -> list[str]:
    return [r for r in references(document) if not r.startswith("data:")]


def test_page_holds_the_table_and_scatter_and_links_to_samples(report):
    out, runs = report
    document = (out / "forgetting.html").read_text(encoding="utf-8")
    assert external_references(document) == []
    images = [base64.b64decode(r.split(",", 1)[1]) for r in references(document) if r.startswith("data:image/png")]
    assert images == [(out / "forgetting.png").read_bytes()]
    hrefs = links(document)
    expected = {
        os.path.relpath(Path(runs[run]) / "samples" / f"{task}.jsonl", out)
        for run, tasks in (("base", ["t1", "t2", "g1", "g2"]), ("A", ["t1", "g1"]))
        for task in tasks
    }
    assert set(hrefs) == expected and all(not h.startswith("/") for h in hrefs)
    assert all((out / h).is_file() for h in hrefs)  # relative to the report folder, they open the files
    assert "<td>+20.00</td><td>-5.00</td>" in document  # A's Δ Target and Δ General


def test_frontier_figure_and_table_when_runs_carry_curves(tmp_path):
    base, dirs = curve_evals(tmp_path, seed1=False)
    add_samples(dirs[0], ["fit"])  # sft@10: a checkpoint, listed under Samples though off the table
    write_report(base, dirs, tmp_path / "report")
    document = (tmp_path / "report" / "frontier.md").read_text()
    page = (tmp_path / "report" / "forgetting.html").read_text(encoding="utf-8")
    images = [base64.b64decode(r.split(",", 1)[1]) for r in references(page) if r.startswith("data:image/png")]
    assert (tmp_path / "report" / "frontier.png").read_bytes() in images and len(images) == 2
    assert "Forgetting frontier" in page and "not reached" in page and "not reached" in document
    front = json.loads((tmp_path / "report" / "frontier.json").read_text())
    assert f"{front['measures']['mc'][1]['values']['sft']:.2f}" in page
    assert links(page) == [os.path.relpath(dirs[0] / "samples" / "fit.jsonl", tmp_path / "report")]
    assert "sft@10" in page and external_references(page) == []


def test_chromium_renders_the_page(report, tmp_path):
    require_chromium()
    out, runs = report
    shot = tmp_path / "forgetting.png"
    dom = parse_dom(run_chromium(file_url(out / "forgetting.html"), dump_dom=True, screenshot=shot, window=(1100, 900)))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    table = dom.find("table", cls="forgetting")[0]
    rows = table.find("tbody")[0].find("tr")
    assert [r.find("th")[0].text_content() for r in rows] == ["base (base)", "A", "B"]
    assert len(table.find("a")) == 6  # base: 4 tasks, A: 2, B: none
    starred = [r.find("th")[0].text_content() for r in rows if "on the front" in r.text_content()]
    assert starred == ["A", "B"]  # the Pareto mark is text, not only a star
    assert dom.find("img")[0].attrs["src"].startswith("data:image/png;base64,")
