"""analyze's report places the data on the regime map: on a hand-made map, and end to end on a tiny model."""

from __future__ import annotations

import json

import pytest

from eaft.analysis import advice
from eaft.analysis.advice import advise, packaged_map
from eaft.analysis.report import render_report
from eaft.cli import main as eaft_main
from tests.analysis.conftest import conversations, peaked, write_jsonl
from tests.analysis.regime_fixtures import hand_map, map_entry, summary
from tests.train.tiny import build_model, build_tokenizer

LOW = map_entry("gsm8k", 0.03, ["below by 1.15 (95% CI -2.0 to -0.3)", "no difference shown (-0.4, x)"], ["k1", "k2"])
MID = map_entry("mix10", 0.12, ["no difference shown (+0.2, y)", "above by 0.9 (z)"], ["k3", "k4"])
HIGH = map_entry("mix30", 0.31, ["above by 2.10 (95% CI +1.0 to +3.2)", "above by 3.0 (w)"], ["k5", "k6"])


def text(found) -> str:
    return "\n".join(found.markdown())


def test_data_between_two_regimes_names_both_and_their_verdicts():
    out = text(advise(summary(0.05), hand_map([HIGH, LOW, MID])))
    assert "SFT puts **5.00%** of its gradient norm" in out
    assert "lies between the measured regimes `gsm8k` (3.00%) and `mix10` (12.00%)" in out
    rows = [line for line in out.splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == ["gsm8k", "gsm8k", "mix10", "mix10"]  # two measures each
    assert rows[0].endswith("| below by 1.15 (95% CI -2.0 to -0.3) | no difference shown (-0.4, x) | k1 | k2 |")
    assert "mix30" not in out.split("There, each family")[1].split("Across the whole map")[0]  # the neighbours only
    assert "evidence from the project's own runs (SmolLM2-135M-Instruct, full fine-tuning, 24 steps)" in out
    assert "not a promise" in out


def test_the_whole_maps_shown_differences_are_listed_in_dose_order():
    # beyond the neighbours: every comparison whose interval excludes 0, anywhere on the map, and the count
    out = text(advise(summary(0.05), hand_map([HIGH, LOW, MID])))
    whole = out.split("Across the whole map, ")[1].split("\n")[0]
    assert whole.startswith("8 of its 24 comparisons show a difference")  # 3 regimes x 2 measures x 2 families x 2
    listed = whole.split(": ", 1)[1].split("; ")
    assert listed[0] == "eaft − sft in `gsm8k`, general avg at 40%: below by 1.15 (95% CI -2.0 to -0.3)"
    assert (
        listed[-1]
        == "eaft − sft in `mix30`, self_consistency at 80%: above by 3.0 (w). Every other one: no difference shown."
    )
    assert [x.split("`")[1] for x in listed] == ["gsm8k"] * 2 + ["mix10"] * 2 + ["mix30"] * 4
    quiet = map_entry("quiet", 0.05, ["no difference shown (a)"] * 2, ["no difference shown (b)"] * 2)
    out = text(advise(summary(0.05), hand_map([quiet])))
    assert "none of its 8 comparisons shows a difference (every 95% interval covers 0)" in out


@pytest.mark.parametrize(
    ("share", "where", "quoted"),
    [
        (0.01, "below every measured regime; the nearest is `gsm8k` (3.00%)", "gsm8k"),
        (0.50, "above every measured regime; the nearest is `mix30` (31.00%)", "mix30"),
        (0.12, "between the measured regimes `mix10` (12.00%) and `mix30` (31.00%)", "mix10"),
    ],
)
def test_data_outside_or_on_the_measured_range(share, where, quoted):
    out = text(advise(summary(share), hand_map([LOW, MID, HIGH])))
    assert where in out and f"| `{quoted}` |" in out


def test_an_empty_map_says_it_is_not_measured_and_quotes_no_number():
    out = text(advise(summary(0.05), hand_map([])))
    assert "has not been measured yet" in out and "| " not in out and "between" not in out
    assert [s for s in ("3.00%", "12.00%", "below by", "above by") if s in out] == []


def test_another_conflict_region_is_not_placed_and_another_model_is_named():
    out = text(advise(summary(0.05, entropy_quantile=0.1), hand_map([LOW, MID])))
    assert "`--entropy-quantile 0.1`" in out and "is not placed" in out and "| `" not in out
    assert "--entropy topk --entropy-quantile 0.15 --prob-quantile 0.15" in out
    out = text(advise(summary(0.05), hand_map([LOW, MID], model="SmolLM2-360M")))
    assert "measured under SmolLM2-360M; this analysis used SmolLM2-135M-Instruct (embedded default)" in out
    assert "between the measured regimes" in out
    assert "measured under" not in text(advise(summary(0.05), hand_map([LOW, MID])))


def test_the_shipped_map_is_readable():
    shipped = packaged_map()
    assert shipped["format"] == 1
    out = text(advise(summary(0.05), shipped))
    assert ("has not been measured yet" in out) == (not shipped["regimes"])


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    """`eaft analyze` of a sharpened tiny model (it has confident conflicts) with a hand-made packaged map whose
    regimes lie at shares 0 and 1, so that any data lies between them."""
    root = tmp_path_factory.mktemp("advice")
    tokenizer = build_tokenizer()
    model = peaked(build_model(vocab_size=len(tokenizer)))
    model.save_pretrained(root / "model")
    tokenizer.save_pretrained(root / "model")
    data = write_jsonl(root / "data.jsonl", conversations(8, seed=3))
    floor = map_entry("floor", 0.0, ["below by 1.00 (floor)", "below by 2.00 (floor)"], ["f1", "f2"])
    ceiling = map_entry("ceiling", 1.0, ["above by 3.00 (ceiling)", "above by 4.00 (ceiling)"], ["c1", "c2"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(advice, "packaged_map", lambda: hand_map([ceiling, floor]))
        args = ["analyze", "--model", str(root / "model"), "--data", data, "--out", str(root / "out")]
        assert eaft_main([*args, "--no-progress", "--bins", "10", "--top-n", "2", "--html-random", "2"]) == 0
    return root / "out"


def test_the_report_names_the_map_position_of_the_analysed_data(analysed):
    summ = json.loads((analysed / "summary.json").read_text())
    x = summ["data"]["gradient"]["sft"]["conflict_share_of_norm"]
    assert 0.0 < x < 1.0
    report = (analysed / "report.md").read_text()
    section = report.split("## Where this data falls on the regime map")[1].split("## Landscapes")[0]
    assert f"SFT puts **{x:.2%}** of its gradient norm" in section
    assert "between the measured regimes `floor` (0.00%) and `ceiling` (100.00%)" in section
    assert "| below by 1.00 (floor) | below by 2.00 (floor) | f1 | f2 |" in section
    assert "| above by 3.00 (ceiling) | above by 4.00 (ceiling) | c1 | c2 |" in section
    page = (analysed / "report.html").read_text()
    assert '<h2 id="h-map">Where this data falls on the regime map</h2>' in page
    assert f"SFT puts <strong>{x:.2%}</strong>" in page and "<td>above by 3.00 (ceiling)</td>" in page
    # the tiny model is not the map's: the report says so
    assert "measured under SmolLM2-135M-Instruct (embedded default); this analysis used" in section


def test_the_report_on_the_shipped_map(analysed):
    summ = json.loads((analysed / "summary.json").read_text())
    report = render_report(summ)
    assert ("has not been measured yet" in report) == (not packaged_map()["regimes"])


def test_a_map_of_one_regime_says_one():
    out = text(advise(summary(0.05), hand_map([MID])))
    assert "measured one regime (SmolLM2" in out and "below every measured regime; the nearest is `mix10`" in out
    assert "on 1 regime, not a promise" in out
