"""The frontier: interpolation at matched target levels on hand-made curves, seed spreads and their wording."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from eaft.evaluate import frontier
from eaft.evaluate.report import main as report_main
from eaft.evaluate.report import write_report


def test_value_at_interpolates_between_the_neighbouring_checkpoints():
    points = [(10.0, 50.0), (20.0, 40.0), (30.0, 36.0)]
    assert frontier.value_at(points, 15.0) == pytest.approx(45.0)
    assert frontier.value_at(points, 27.5) == pytest.approx(37.0)
    assert frontier.value_at(points, 30.0) == pytest.approx(36.0)
    assert frontier.value_at(points, 10.0) == pytest.approx(50.0)


def test_a_level_the_curve_never_reaches_is_none_not_extrapolated():
    points = [(10.0, 50.0), (20.0, 40.0)]
    assert frontier.value_at(points, 25.0) is None
    assert frontier.value_at(points, 5.0) is None
    assert frontier.value_at([(10.0, 50.0)], 12.0) is None


def test_a_curve_that_turns_back_is_read_where_it_first_reaches_the_level():
    points = [(10.0, 50.0), (30.0, 30.0), (20.0, 10.0)]  # target rises to 30, then falls back to 20
    assert frontier.value_at(points, 20.0) == pytest.approx(40.0)


def result(run: str, target: float, general: dict[str, float], curve: dict | None, extra: float | None = None) -> dict:
    tasks = {"fit": {"group": "target", "score": target, "metric": "token_prob"}}
    tasks.update({name: {"group": "general", "score": v, "metric": "acc"} for name, v in general.items()})
    if extra is not None:
        tasks["drift"] = {"group": "extra", "score": extra, "metric": "token_prob"}
    return {"run": run, "tasks": tasks, **({"curve": curve} if curve else {})}


def write_curve(root: Path, series: str, family: str, points: list[tuple[int, float, float, float]]) -> list[Path]:
    dirs = []
    for step, target, mc, drift in points:
        path = root / series / f"step-{step}"
        path.mkdir(parents=True)
        curve = {"series": series, "step": step, "family": family}
        path.joinpath("results.json").write_text(json.dumps(result(f"step-{step}", target, {"mc": mc}, curve, drift)))
        dirs.append(path)
    return dirs


def curve_evals(root: Path, *, seed1: bool = True) -> tuple[Path, list[Path]]:
    """A base and the curves of sft (and its second seed) and eaft, as an experiment leaves them."""
    base = root / "base"
    base.mkdir()
    base_curve = {"series": "base", "step": 0, "family": "base"}
    base.joinpath("results.json").write_text(json.dumps(result("base", 20.0, {"mc": 50.0}, base_curve, 60.0)))
    dirs = write_curve(root, "sft", "sft", [(10, 30.0, 46.0, 50.0), (20, 40.0, 42.0, 40.0)])
    if seed1:
        dirs += write_curve(root, "sft_seed1", "sft", [(10, 30.0, 47.0, 51.0), (20, 40.0, 43.0, 41.0)])
    # eaft learns less per step: it stops at target 35 and keeps mc higher at equal target
    dirs += write_curve(root, "eaft", "eaft", [(10, 26.0, 49.0, 56.0), (20, 35.0, 47.0, 52.0)])
    return base, dirs


@pytest.fixture
def experiment_evals(tmp_path) -> tuple[Path, list[Path]]:
    return curve_evals(tmp_path)


def test_report_writes_the_matched_target_table(experiment_evals, tmp_path):
    base, dirs = experiment_evals
    table = write_report(base, dirs, tmp_path / "report")
    assert [r["run"] for r in table["rows"]] == ["base", "sft", "sft_seed1", "eaft"]  # the last step of each curve
    assert table["rows"][1]["scores"]["fit"] == 40.0
    front = json.loads((tmp_path / "report" / "frontier.json").read_text())
    assert front["levels"] == [24.0, 28.0, 32.0, 36.0, 40.0]
    mc = {p["level"]: p for p in front["measures"]["mc"]}
    # sft from (20, 50) to (30, 46): at 28 → 46.8; eaft from (20, 50) to (26, 49) to (35, 47): at 28 → 48.556
    assert mc[28.0]["values"]["sft"] == pytest.approx(46.8)
    assert mc[28.0]["values"]["eaft"] == pytest.approx(49 - 2 * 2 / 9)
    assert mc[40.0]["values"]["eaft"] is None and not mc[40.0]["reached_by_all"]
    assert mc[28.0]["seed_spread"] == pytest.approx(0.8)  # sft_seed1 at 28: 50 - 3 * 0.8 = 47.6
    assert mc[28.0]["verdicts"]["eaft"].startswith("above by")
    markdown = (tmp_path / "report" / "frontier.md").read_text()
    assert "not reached" in markdown and "## general avg" in markdown and "## drift" in markdown
    assert (tmp_path / "report" / "frontier.png").stat().st_size > 10_000


def test_a_gap_inside_the_seed_spread_names_no_winner(experiment_evals, tmp_path):
    base, dirs = experiment_evals
    write_report(base, dirs, tmp_path / "report")
    front = json.loads((tmp_path / "report" / "frontier.json").read_text())
    # at level 24 on drift: sft 56, sft_seed1 56.4 (spread 0.36 after interpolation), eaft 60 - 4 * 4 / 6 = 57.33
    drift = {p["level"]: p for p in front["measures"]["drift"]}
    assert drift[24.0]["verdicts"]["eaft"].startswith("above")
    # a larger spread swallows the same gap
    assert frontier.verdict(1.0, 1.5).startswith("within seed spread")
    assert "above" not in frontier.verdict(1.0, 1.5) and "below" not in frontier.verdict(-1.0, 1.5)
    assert frontier.verdict(-2.0, 1.5).startswith("below by 2.00")
    assert "no second seed" in frontier.verdict(3.0, None)


def test_runs_off_a_curve_give_no_frontier(tmp_path):
    for name, target in (("base", 10.0), ("sft", 20.0)):
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps(result(name, target, {"mc": 40.0}, None)))
    table = write_report(tmp_path / "base", [tmp_path / "sft"], tmp_path / "report")
    assert "frontier" not in table and not (tmp_path / "report" / "frontier.md").exists()


def test_the_reference_family_can_be_chosen(experiment_evals, tmp_path, capsys):
    base, dirs = experiment_evals
    write_report(base, dirs, tmp_path / "report", frontier_reference="eaft")
    front = json.loads((tmp_path / "report" / "frontier.json").read_text())
    mc = {p["level"]: p for p in front["measures"]["mc"]}
    assert front["reference"] == "eaft" and set(mc[28.0]["verdicts"]) == {"sft"}
    assert mc[28.0]["verdicts"]["sft"].startswith("below by")  # the mirror of eaft "above" sft
    assert "*sft vs eaft*" in (tmp_path / "report" / "frontier.md").read_text()
    with pytest.raises(ValueError, match="frontier reference 'dft' is not a run family here.*sft, eaft"):
        write_report(base, dirs, tmp_path / "report2", frontier_reference="dft")
    assert report_main([str(base), *map(str, dirs), "--out", str(tmp_path / "r3"), "--frontier-reference", "dft"]) == 2
    assert "eaft report: frontier reference 'dft'" in capsys.readouterr().err


def test_the_top_level_is_reached_by_the_run_that_defines_it():
    # rounding the levels to 4 decimals put the top one (31.1567) above the best point (31.15665): "not reached"
    curves = {"sft": {"family": "sft", "points": [(0, 24.5, {}), (6, 31.15665, {})]}}
    levels = frontier.target_levels(24.5, curves)
    assert levels[-1] == 31.15665
    assert frontier.value_at([(24.5, 50.0), (31.15665, 40.0)], levels[-1]) == pytest.approx(40.0)
