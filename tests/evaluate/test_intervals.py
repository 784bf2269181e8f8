"""The paired bootstrap behind the frontier's and the report's 95% intervals, on hand-made evaluations whose right
verdict is known: a clear winner; seeds that disagree while items agree; items that disagree while seeds agree;
a family with one seed, whose verdict carries the caveat that its seed variation is not in the interval."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from eaft.evaluate.intervals import ItemScores, interval, item_scores, verdict
from eaft.evaluate.report import write_report

ITEMS = 100


def write_eval(folder, *, series: str, step: int, family: str, target: float, correct: list[bool]):
    """An evaluation folder as `eaft eval` writes it: a reference-likelihood target whose every item has the same
    NLL (so the target score is exact under resampling) and a 100-item multiple-choice general task."""
    folder.mkdir(parents=True)
    nll = -math.log(target / 100.0)
    fit = [{"line": i + 1, "nll": nll, "tokens": 10} for i in range(20)]
    mc = [
        {"line": i + 1, "gold": 0, "pred": {"per_char": 0 if ok else 1}, "logprobs": [0, 0]}
        for i, ok in enumerate(correct)
    ]
    (folder / "samples").mkdir()
    for name, rows in (("fit", fit), ("mc", mc)):
        (folder / "samples" / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    tasks = {
        "fit": {"group": "target", "type": "reference_likelihood", "score": target, "metric": "token_prob", "n": 20},
        "mc": {
            "group": "general",
            "type": "multiple_choice",
            "score": 100.0 * sum(correct) / len(correct),
            "metric": "acc_per_char",
            "n": len(correct),
            "settings": {"options": {"scoring": "per_char"}},
        },
    }
    curve = {"series": series, "step": step, "family": family}
    (folder / "results.json").write_text(json.dumps({"run": folder.name, "curve": curve, "tasks": tasks}))
    return folder


def flips(count: int, start: int | None = None) -> list[bool]:
    """Items 0-59 of 100 right, and `count` more from item `start` on (default 60; negative: that many fewer,
    from item 0 by default)."""
    right = [i < 60 for i in range(ITEMS)]
    start = (60 if count > 0 else 0) if start is None else start
    for i in range(start, start + abs(count)):
        right[i] = count > 0
    return right


def frontier_of(tmp_path, families: dict[str, list[list[bool]]]) -> dict:
    """Every seed of every family learns the target alike (20 -> 40 -> 60); its general items after step 1 are
    the given pattern. Returns frontier.json with `ref` as the reference family."""
    base = write_eval(tmp_path / "base", series="base", step=0, family="base", target=20.0, correct=flips(0))
    dirs = []
    for family, seeds in families.items():
        for k, pattern in enumerate(seeds):
            name = f"{family}_s{k}"
            for step, target in ((1, 40.0), (2, 60.0)):
                folder = tmp_path / name / f"step-{step}"
                dirs.append(write_eval(folder, series=name, step=step, family=family, target=target, correct=pattern))
    write_report(base, dirs, tmp_path / "report", frontier_reference="ref")
    return json.loads((tmp_path / "report" / "frontier.json").read_text())


def at(front: dict, level: float, family: str) -> dict:
    point = next(p for p in front["measures"]["mc"] if p["level"] == pytest.approx(level))
    return {**point["families"][family], "verdict": point["verdicts"][family], "first": point["first_segment"]}


def test_a_clear_winner_is_named(tmp_path):
    front = frontier_of(tmp_path, {"ref": [flips(0), flips(0)], "better": [flips(10), flips(10)]})
    got = at(front, 52.0, "better")  # past every run's first point: a measured path
    assert got["delta"] == pytest.approx(10.0)
    assert 3.0 < got["ci"][0] < 10.0 < got["ci"][1] < 17.5  # about 10 ± 2 sd of Binomial(100, 0.1)
    assert got["verdict"].startswith("above by 10.00 (95% CI")
    assert not any(got["first"].values())


def test_seeds_that_disagree_while_items_agree_show_no_difference(tmp_path):
    # one seed of `noisy` gains 12 items, the other loses 4: every item-level difference is one-signed, but the
    # two seeds disagree, and resampling the seeds covers 0
    front = frontier_of(tmp_path, {"ref": [flips(0), flips(0)], "noisy": [flips(12), flips(-4, start=50)]})
    got = at(front, 52.0, "noisy")
    assert got["delta"] == pytest.approx(4.0)
    assert got["ci"][0] < 0.0 < got["ci"][1]
    assert got["verdict"].startswith("no difference shown (+4.00, 95% CI")
    # the same +12 in both seeds is a winner: the seeds were what made the difference uncertain
    agreed = frontier_of(tmp_path / "agreed", {"ref": [flips(0), flips(0)], "noisy": [flips(12), flips(12)]})
    assert at(agreed, 52.0, "noisy")["verdict"].startswith("above by 12.00")


def test_items_that_disagree_while_seeds_agree_show_no_difference(tmp_path):
    # both seeds gain 30 items and lose 28 others (net +2): the seeds agree exactly, the items do not
    churn = flips(30, start=60)
    for i in range(28):
        churn[i] = False
    front = frontier_of(tmp_path, {"ref": [flips(0), flips(0)], "churn": [churn, churn]})
    got = at(front, 52.0, "churn")
    assert got["delta"] == pytest.approx(2.0)
    assert got["ci"][0] < 0.0 < got["ci"][1] and got["ci"][1] - got["ci"][0] > 6.0
    assert got["verdict"].startswith("no difference shown")


def test_a_one_seed_family_is_named_with_its_caveat(tmp_path):
    # one seed of `single` gains 12 items: the items make it a winner, but the interval cannot hold the seed
    # variation it did not run, and the verdict says so; a family with several seeds carries no such note
    front = frontier_of(tmp_path, {"ref": [flips(0), flips(0)], "single": [flips(12)], "pair": [flips(12), flips(12)]})
    single = at(front, 52.0, "single")["verdict"]
    assert single.startswith("above by 12.00 (95% CI")
    assert single.endswith("; one seed of single: the interval holds no seed-to-seed variation of single")
    assert "one seed" not in at(front, 52.0, "pair")["verdict"]
    lonely = frontier_of(tmp_path / "lonely", {"ref": [flips(0)], "single": [flips(12)]})
    assert at(lonely, 52.0, "single")["verdict"].endswith(
        "; one seed on each side: the interval holds no seed-to-seed variation"
    )
    assert (
        "A family with one seed brings no seed-to-seed variation" in (tmp_path / "report" / "frontier.md").read_text()
    )


def test_levels_on_the_first_segment_are_marked(tmp_path):
    front = frontier_of(tmp_path, {"ref": [flips(0)], "better": [flips(10)]})
    first = at(front, 28.0, "better")["first"]  # between the base (20) and step 1 (40): one point restated
    assert first == {"ref_s0": True, "better_s0": True}
    markdown = (tmp_path / "report" / "frontier.md").read_text()
    assert "† marks a value read off the straight segment" in markdown
    assert "| better_s0 | 64.00 † |" in markdown  # 60 + 10 · (28 − 20) / (40 − 20)
    assert "| ref_s0 | 60.00 † | 60.00 † | 60.00 | 60.00 | 60.00 |" in markdown


def test_the_report_delta_carries_its_interval(tmp_path):
    base = write_eval(tmp_path / "base", series="base", step=0, family="base", target=20.0, correct=flips(0))
    same = write_eval(tmp_path / "same", series="same", step=1, family="same", target=20.0, correct=flips(0))
    worse = write_eval(tmp_path / "worse", series="worse", step=1, family="worse", target=40.0, correct=flips(-15))
    table = write_report(base, [same, worse], tmp_path / "report")
    rows = {r["run"]: r for r in table["rows"]}
    assert rows["same"]["delta_general_ci"] == [0.0, 0.0] or rows["same"]["delta_general_ci"] == (0.0, 0.0)
    low, high = rows["worse"]["delta_general_ci"]
    assert rows["worse"]["delta_general"] == pytest.approx(-15.0) and low < -15.0 < high < 0.0
    assert rows["worse"]["delta_target_ci"] == pytest.approx((20.0, 20.0))  # every target item moved alike
    assert "-15.00 [" in (tmp_path / "report" / "forgetting.md").read_text()


def test_a_score_the_items_do_not_give_back_has_no_interval(tmp_path):
    folder = write_eval(tmp_path / "e", series="s", step=1, family="s", target=40.0, correct=flips(0))
    record = json.loads((folder / "results.json").read_text())["tasks"]["mc"]
    assert item_scores(folder, "mc", record).score(np.ones((1, ITEMS)))[0] == pytest.approx(60.0)
    assert item_scores(folder, "mc", {**record, "score": 61.0}) is None  # not this task's scores: no interval
    assert item_scores(folder, "missing", record) is None
    assert verdict(-1.0, None).endswith("(no interval: the per-item samples do not give this score back)")


def test_item_score_kinds_and_the_percentile_interval():
    keys = tuple(range(4))
    weights = np.array([[1, 1, 1, 1], [2, 0, 0, 2]], float)
    assert ItemScores("mean", keys, np.array([100, 0, 100, 0.0])).score(weights) == pytest.approx([50, 50])
    ratio = ItemScores("ratio", keys, np.array([1, 2, 0, 1.0]), np.array([1, 2, 2, 1.0]))
    assert ratio.score(weights) == pytest.approx([100 * 4 / 6, 100 * 4 / 4])
    nll = ItemScores("exp_nll", keys, np.array([1.0, 3.0, 0, 0]), np.array([1.0, 1.0, 1.0, 1.0]))
    assert nll.score(weights) == pytest.approx([100 * math.exp(-1), 100 * math.exp(-0.5)])
    groups = ItemScores("category_mean", keys, np.array([100, 0, 100, 100.0]), groups=np.array(["a", "a", "b", "b"]))
    assert groups.score(weights) == pytest.approx([75, 100])
    assert interval(np.arange(1001.0)) == pytest.approx((25.0, 975.0))
    assert interval(np.array([np.nan])) is None


def test_verdict_bounds_never_round_to_a_zero_that_contradicts_them():
    # an interval that just excludes 0 shows its end, not '-0.00'; ends that are 0 or clear of it keep 2 decimals
    assert verdict(-2.66, (-5.21, -0.0004)) == "below by 2.66 (95% CI -5.21 to -0.0004)"
    assert verdict(0.5, (0.003, 1.2)) == "above by 0.50 (95% CI +0.003 to +1.20)"
    assert verdict(0.0, (-0.0, 0.0)).startswith("no difference shown (+0.00, 95% CI -0.00 to +0.00)")
    assert verdict(1.0, (-1.0, 2.0)) == "no difference shown (+1.00, 95% CI -1.00 to +2.00)"
