"""The regime map on hand-made frontier.json / summary.json with known answers, and scripts/regime_map.py."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from eaft.analysis.regime_map import MapError, MapSpec, RegimeSource, build_map, load_spec, write_map
from eaft.analysis.regime_map_report import _dose_axis, _spread, map_markdown, map_png, reach_label
from tests.analysis.regime_fixtures import frontier, summary, write_regime

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "regime_map.py"


def script():
    spec = importlib.util.spec_from_file_location("regime_map_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def regimes(tmp_path) -> list[RegimeSource]:
    """Three regimes, given out of dose order. At level i (0..4) eaft − sft is the value listed; sft_kl +1.5."""
    made = [
        ("mix30", 0.30, [0.5, 1.5, 2.5, 3.5, None], {"eaft": [False, True, False, False, False]}),
        ("gsm8k", 0.03, [-0.5, -1.5, -0.2, -2.5, -3.0], None),
        ("mix10", 0.12, [0.0, 0.3, 0.6, None, None], None),
    ]
    out = []
    for name, share, eaft, first in made:
        front = frontier(deltas={"eaft": eaft, "sft_kl": [1.5] * 5}, first=first)
        out.append(RegimeSource(name, *write_regime(tmp_path, name, front, summary(share))))
    return out


def test_regimes_are_sorted_by_dose_and_read_at_the_chosen_fractions(regimes):
    m = build_map(MapSpec(regimes))
    assert [r["name"] for r in m["regimes"]] == ["gsm8k", "mix10", "mix30"]
    gsm8k = m["regimes"][0]
    assert gsm8k["dose"]["sft_gradient_share"] == 0.03 and gsm8k["dose"]["confident_conflict_share"] == 0.015
    # fractions 0.4 and 0.8 of the way from 20 to 40: the frontier's 2nd and 4th levels
    assert [lv["target"] for lv in gsm8k["levels"]] == pytest.approx([28.0, 36.0])
    eaft = gsm8k["comparisons"]["self_consistency"]["eaft"]
    assert [c["delta"] for c in eaft] == [-1.5, -2.5] and eaft[0]["ci"] == [-2.5, -0.5]
    assert eaft[0]["verdict"] == "below by 1.50 (95% CI -2.50 to -0.50)"
    mix10 = m["regimes"][1]["comparisons"]["general avg"]["eaft"]
    assert mix10[0]["verdict"] == "no difference shown (+0.30, 95% CI -0.70 to +1.30)"
    assert mix10[1]["status"] == "not reached" and mix10[1]["delta"] is None
    assert m["regimes"][2]["comparisons"]["general avg"]["sft_kl"][1]["verdict"].startswith("above by 1.50")


def test_other_fractions_pick_other_levels_and_off_grid_ones_are_refused(regimes):
    m = build_map(MapSpec(regimes, fractions=[0.2, 0.6]))
    assert [c["delta"] for c in m["regimes"][0]["comparisons"]["general avg"]["eaft"]] == [-0.5, -0.2]
    with pytest.raises(MapError, match=r"frontier.json: no frontier level at 0.5 of the way.*0.2, 0.4, 0.6, 0.8, 1"):
        build_map(MapSpec(regimes, fractions=[0.5]))


def test_first_segment_values_are_marked_in_json_and_table(regimes):
    m = build_map(MapSpec(regimes))
    mix30 = m["regimes"][2]["comparisons"]["self_consistency"]
    assert [c["first_segment"] for c in mix30["eaft"]] == [True, False]
    assert [c["first_segment"] for c in mix30["sft_kl"]] == [False, False]
    row = next(line for line in map_markdown(m).splitlines() if line.startswith("| `mix30` | 15.00% / 10.00%"))
    assert "above by 1.50 (95% CI +0.50 to +2.50) † |" in row and row.count("†") == 1


def test_a_reference_value_on_its_first_segment_marks_every_comparison(tmp_path):
    front = frontier(
        deltas={"eaft": [0.0] * 5, "sft_kl": [1.0] * 5}, first={"sft_seed1": [False, True, False, False, False]}
    )
    source = RegimeSource("early", *write_regime(tmp_path, "early", front, summary(0.05)))
    found = build_map(MapSpec([source]))["regimes"][0]["comparisons"]["general avg"]
    assert [c["first_segment"] for family in ("eaft", "sft_kl") for c in found[family]] == [True, False, True, False]


def test_a_reference_that_does_not_reach_a_level_is_not_compared(tmp_path):
    front = frontier(deltas={"eaft": [0.0] * 5, "sft_kl": [1.0] * 5}, reference_reached=[True] * 3 + [False] * 2)
    source = RegimeSource("short", *write_regime(tmp_path, "short", front, summary(0.05)))
    high = build_map(MapSpec([source]))["regimes"][0]["comparisons"]["general avg"]["eaft"][1]
    assert high["status"] == "reference not reached" and high["verdict"] == "not comparable: sft not reached"


def test_markdown_has_one_table_per_measure_in_dose_order(regimes):
    text = map_markdown(build_map(MapSpec(regimes, setting="SmolLM2-135M, 24 steps")))
    assert text.count("## general avg") == 1 and text.count("## self_consistency") == 1
    rows = [line for line in text.split("## self_consistency")[1].splitlines() if line.startswith("| `")]
    assert [r.split("`")[1] for r in rows] == ["gsm8k", "mix10", "mix30"]
    assert rows[1].split(" | ")[1:3] == ["6.00% / 4.00%", "12.00%"]  # conflict shares (both), sft gradient share
    assert "not reached (eaft)" in rows[1] and "SmolLM2-135M, 24 steps." in text


def test_inputs_the_map_cannot_use_are_refused_naming_the_file(regimes, tmp_path):
    path = regimes[0].frontier / "frontier.json"
    old = json.loads(path.read_text())
    del old["intervals"]
    path.write_text(json.dumps(old))
    with pytest.raises(MapError, match=r"mix30/report/frontier.json: no 95% intervals"):
        build_map(MapSpec(regimes))
    with pytest.raises(MapError, match=r"gsm8k/report/frontier.json: no family 'dft'"):
        build_map(MapSpec(regimes[1:], compare=["dft"]))
    other = RegimeSource("q10", *write_regime(tmp_path, "q10", frontier(deltas={"eaft": [0] * 5, "sft_kl": [0] * 5}),
                                              summary(0.2, entropy_quantile=0.1)))  # fmt: skip
    with pytest.raises(MapError, match=r"q10/analyze: analysed with other entropy_quantile.*0.1 vs 0.15"):
        build_map(MapSpec([regimes[1], other]))
    with pytest.raises(MapError, match=r"nowhere: no summary.json there"):
        build_map(MapSpec([RegimeSource("x", regimes[1].frontier, tmp_path / "nowhere")]))


def test_a_frontier_written_by_eaft_report_is_read(tmp_path):
    """The map reads what the frontier writer writes (here without per-item samples: no interval, said so)."""
    from eaft.evaluate.report import write_report
    from tests.evaluate.test_frontier import curve_evals

    (tmp_path / "evals").mkdir()
    base, dirs = curve_evals(tmp_path / "evals")
    write_report(base, dirs, tmp_path / "report")
    analyze = tmp_path / "analyze"
    analyze.mkdir()
    (analyze / "summary.json").write_text(json.dumps(summary(0.04)))
    m = build_map(MapSpec([RegimeSource("made", tmp_path / "report", analyze)], compare=["eaft"], measures=["mc"]))
    front = json.loads((tmp_path / "report" / "frontier.json").read_text())
    low, high = m["regimes"][0]["comparisons"]["mc"]["eaft"]
    assert m["regimes"][0]["levels"][0]["target"] == pytest.approx(28.0)  # base 20 → top 40
    assert low["verdict"] == front["measures"]["mc"][1]["verdicts"]["eaft"] and low["ci"] is None
    assert high["status"] == "not reached"  # eaft stops at 35 < 36


def test_the_script_writes_table_json_and_figure_from_a_yaml(regimes, tmp_path):
    spec_file = tmp_path / "maps" / "map.yaml"
    spec_file.parent.mkdir()
    lines = ["setting: SmolLM2-135M-Instruct, 24 steps", "out: out", "package: false", "regimes:"]
    lines += [f"  - {{name: {r.name}, frontier: ../{r.name}/report, analyze: ../{r.name}/analyze}}" for r in regimes]
    spec_file.write_text("\n".join(lines) + "\n")
    assert script().main([str(spec_file)]) == 0
    out = tmp_path / "maps" / "out"
    written = json.loads((out / "map.json").read_text())
    assert [r["name"] for r in written["regimes"]] == ["gsm8k", "mix10", "mix30"]
    assert written["command"].endswith("scripts/regime_map.py " + str(spec_file))
    assert "| `gsm8k` |" in (out / "map.md").read_text()
    assert (out / "map.png").read_bytes()[:4] == b"\x89PNG" and (out / "map.png").stat().st_size > 20_000


def test_the_script_takes_regimes_on_the_command_line_and_says_what_is_wrong(regimes, tmp_path, capsys):
    args = [x for r in regimes[:2] for x in ("--regime", r.name, str(r.frontier), str(r.analyze))]
    assert script().main([*args, "--out", str(tmp_path / "cli"), "--fractions", "0.6", "1.0"]) == 0
    written = json.loads((tmp_path / "cli" / "map.json").read_text())
    assert written["fractions"] == [0.6, 1.0] and len(written["regimes"]) == 2
    assert script().main([*args, "--out", str(tmp_path / "bad"), "--compare", "sft"]) == 2
    assert capsys.readouterr().err.strip().endswith("compare must list families other than the reference 'sft'")


def test_yaml_keys_are_checked(tmp_path):
    path = tmp_path / "map.yaml"
    path.write_text("fraction: [0.4]\nregimes: [{name: a, frontier: a, analyze: b}]\n")
    with pytest.raises(MapError, match=r"map.yaml: unknown key 'fraction'; did you mean 'fractions'"):
        load_spec(path)
    path.write_text("regimes: [{name: a, frontier: a}]\n")
    with pytest.raises(MapError, match=r"regimes\[0\]: missing key 'analyze'"):
        load_spec(path)


def test_write_map_also_writes_the_package_copy(regimes, tmp_path):
    m = build_map(MapSpec(regimes))
    write_map(m, tmp_path / "out", tmp_path / "package.json")
    assert json.loads((tmp_path / "package.json").read_text()) == json.loads(
        (tmp_path / "out" / "map.json").read_text()
    )


def test_the_shipped_map_yaml_is_valid():
    """Its structure only: the regimes' outputs land as their runs finish."""
    path = Path(__file__).resolve().parents[2] / "docs" / "results" / "regimes" / "map.yaml"
    spec = load_spec(path)
    assert spec.package and spec.reference == "sft" and spec.fractions == [0.4, 0.8]
    assert spec.out == path.parent and spec.regimes[0].frontier.name == "report"


def test_a_level_reached_in_few_resamples_is_labelled_in_the_figure(regimes):
    # the figure prints the reach share beside a point only where the difference rests on part of the resamples
    assert reach_label({"reached": 0.62}, 0.95) == "62%"
    assert reach_label({"reached": 0.949}, 0.95) == "95%"  # printed rounded, but still under the intervals' 95%
    assert reach_label({"reached": 0.95}, 0.95) is None and reach_label({"reached": 1.0}, 0.95) is None
    assert reach_label({"reached": None}, 0.95) is None and reach_label({}, 0.95) is None
    # the level is the frontier's own interval level, carried into the map
    assert {r["interval_level"] for r in build_map(MapSpec(regimes))["regimes"]} == {0.95}


def test_the_dose_axis_is_logarithmic_unless_a_regime_has_no_conflicts():
    # doses from ~1% to ~30%: equal ratios get equal room, and a regime's points are spread by one factor
    style = _dose_axis([1.4, 2.9, 12.1])
    assert style["log"] and style["xlim"][0] < 1.4 and style["xlim"][1] > 12.1
    assert _spread(10.0, 0, style) == 10.0
    assert _spread(10.0, 1, style) / 10.0 == pytest.approx(10.0 / _spread(10.0, -1, style))
    assert _spread(1.0, 1, style) / 1.0 == pytest.approx(_spread(10.0, 1, style) / 10.0)
    # a regime without conflicts has no place on a log axis: linear, spread in share points
    style = _dose_axis([0.0, 2.9, 12.1])
    assert not style["log"]
    step = _spread(5.0, 1, style) - 5.0
    assert step > 0 and 5.0 - _spread(5.0, -1, style) == pytest.approx(step)


def test_the_figure_is_drawn_for_both_axes(regimes, tmp_path):
    m = build_map(MapSpec(regimes))
    assert map_png(m, tmp_path / "log.png").read_bytes()[:4] == b"\x89PNG"
    m["regimes"][0]["dose"]["sft_gradient_share"] = 0.0
    assert map_png(m, tmp_path / "linear.png").read_bytes()[:4] == b"\x89PNG"
