"""The forgetting table: averages, deltas against the base, the Pareto front, and the files `eaft report` writes."""

from __future__ import annotations

import json

import pytest

from eaft.evaluate.report import forgetting_table, main, pareto_front

GROUPS = {"t1": "target", "t2": "target", "g1": "general", "g2": "general", "e": "extra"}


def make_run(tmp_path, name: str, scores: dict[str, float]) -> str:
    folder = tmp_path / name
    folder.mkdir()
    tasks = {
        t: {"group": GROUPS[t], "score": s, "metric": "acc", "type": "multiple_choice", "n": 10}
        for t, s in scores.items()
    }
    (folder / "results.json").write_text(json.dumps({"run": name, "model": "m", "tasks": tasks}))
    return str(folder)


@pytest.fixture
def runs(tmp_path):
    return {
        "base": make_run(tmp_path, "base", {"t1": 10, "t2": 20, "g1": 50, "g2": 60, "e": 40}),
        "A": make_run(tmp_path, "A", {"t1": 30, "t2": 40, "g1": 45, "g2": 55, "e": 30}),
        "B": make_run(tmp_path, "B", {"t1": 20, "t2": 20, "g1": 50, "g2": 60, "e": 39}),
        "C": make_run(tmp_path, "C", {"t1": 12, "t2": 18, "g1": 40, "g2": 50, "e": 20}),
        "D": make_run(tmp_path, "D", {"t1": 10, "t2": 20, "g1": 52}),  # g2 missing
    }


def test_table_math(runs):
    from eaft.evaluate.report import load_run

    table = forgetting_table(load_run(runs["base"]), [load_run(runs[k]) for k in "ABCD"])
    rows = {r["run"]: r for r in table["rows"]}
    assert [c["task"] for c in table["columns"]] == ["t1", "t2", "g1", "g2", "e"]
    assert rows["A"]["target_avg"] == 35 and rows["A"]["general_avg"] == 50
    assert rows["A"]["delta_target"] == 20 and rows["A"]["delta_general"] == -5
    assert rows["B"]["delta_target"] == 5 and rows["B"]["delta_general"] == 0
    assert rows["C"]["delta_target"] == 0 and rows["C"]["delta_general"] == -10
    # D lacks g2: its General avg is over g1 alone, its Δ General over the tasks it shares with the base
    assert rows["D"]["general_avg"] == 52 and rows["D"]["delta_general"] == 2
    assert rows["base"]["delta_target"] == 0 and rows["base"]["delta_general"] == 0
    assert {r for r, row in rows.items() if row["pareto"]} == {"A", "B", "D"}


def test_pareto_front_edge_cases():
    assert pareto_front({"a": (0, 0), "b": (0, 0)}) == {"a", "b"}  # ties dominate nobody
    assert pareto_front({"a": (1, 1), "b": (0, 2), "c": (0, 1), "d": (1, 0)}) == {"a", "b"}
    assert pareto_front({}) == set()


def test_report_command_writes_markdown_json_and_png(runs, tmp_path, capsys):
    out = tmp_path / "report"
    assert main([runs["A"], runs["B"], runs["C"], "--base", runs["base"], "--out", str(out)]) == 0
    markdown = (out / "forgetting.md").read_text()
    assert "| A | 30.00 | 40.00 | 45.00 | 55.00 | 30.00 | 35.00 | 50.00 | +20.00 | -5.00 | ★ |" in markdown
    assert "| base (base) | 10.00 |" in markdown and "| C | " in markdown
    data = json.loads((out / "forgetting.json").read_text())
    assert data["base"] == "base" and [r["run"] for r in data["rows"]] == ["base", "A", "B", "C"]
    assert (out / "forgetting.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Δ General" in capsys.readouterr().out


def test_first_run_is_the_base_by_default(runs, tmp_path):
    out = tmp_path / "r"
    assert main([runs["base"], runs["A"], "--out", str(out)]) == 0
    assert json.loads((out / "forgetting.json").read_text())["base"] == "base"


def test_no_scatter_without_both_groups(tmp_path, capsys):
    only_general = [make_run(tmp_path, n, {"g1": s}) for n, s in (("b", 50), ("x", 40))]
    out = tmp_path / "r"
    (out).mkdir()
    (out / "forgetting.png").write_bytes(b"stale")
    assert main([*only_general, "--out", str(out)]) == 0
    assert not (out / "forgetting.png").exists() and json.loads((out / "forgetting.json").read_text())["plot"] is None
    assert "no scatter" in capsys.readouterr().out


def test_errors(runs, tmp_path, capsys):
    assert main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")]) == 2
    assert "no results.json" in capsys.readouterr().err
    clash = make_run(tmp_path, "clash", {"t1": 1})
    data = json.loads((tmp_path / "clash" / "results.json").read_text())
    data["tasks"]["t1"]["group"] = "general"
    (tmp_path / "clash" / "results.json").write_text(json.dumps(data))
    assert main([runs["base"], clash, "--out", str(tmp_path / "r")]) == 2
    assert "task 't1' is 'target' in one run and 'general' in another" in capsys.readouterr().err


def setup_run(tmp_path, name: str, arc: float, gsm: float, prompt: str = "Question: {question}\nAnswer:") -> str:
    """A run whose two tasks carry the settings `eaft eval` records; `prompt` is arc's."""

    def record(group, score, options, data):
        settings = {"type": "multiple_choice", "options": options, "limit": None, "limit_mode": "first"}
        return {
            "group": group,
            "score": score,
            "metric": "acc",
            "type": "multiple_choice",
            "n": 6,
            "backend": "native",
            "settings": settings,
            "data": {f"/data/{name}/{data}.jsonl": f"sha-{data}"},
        }

    tasks = {
        "gsm": record("target", gsm, {"prompt": None, "scoring": "raw", "few_shot": 0}, "gsm"),
        "arc": record("general", arc, {"prompt": prompt, "scoring": "per_char", "few_shot": 0}, "arc"),
    }
    folder = tmp_path / name
    folder.mkdir()
    (folder / "results.json").write_text(json.dumps({"run": name, "model": "m", "tasks": tasks}))
    return str(folder)


def test_a_task_run_another_way_than_the_bases_is_refused_or_left_out_of_the_delta(tmp_path, capsys):
    base = setup_run(tmp_path, "base", arc=50.0, gsm=10.0)
    same = setup_run(tmp_path, "same", arc=55.0, gsm=20.0)  # its data lie elsewhere, with the same content
    other_prompt = setup_run(tmp_path, "tuned", arc=66.67, gsm=20.0, prompt="Q: {question}\nA:")
    assert main([base, same, other_prompt, "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "not comparable with the base 'base': run 'tuned', task 'arc': prompt differ" in err
    assert "--allow-mismatch" in err and not (tmp_path / "r" / "forgetting.md").exists()
    assert main([base, same, other_prompt, "--out", str(tmp_path / "r"), "--allow-mismatch"]) == 0
    rows = {r["run"]: r for r in json.loads((tmp_path / "r" / "forgetting.json").read_text())["rows"]}
    assert rows["same"]["delta_general"] == 5.0 and rows["same"]["delta_target"] == 10.0
    assert rows["tuned"]["delta_general"] is None and rows["tuned"]["not_compared"] == {"arc": ["prompt"]}
    assert not rows["tuned"]["pareto"]  # nothing general left to judge it on
    markdown = (tmp_path / "r" / "forgetting.md").read_text()
    assert "| tuned | 20.00 | 66.67≠ | 20.00 | 66.67 | +10.00 | — |  |" in markdown
    assert "> **warning:** run 'tuned': arc left out of its Δ, run unlike the base's (arc: prompt differ)" in markdown
    assert "warning: run 'tuned': arc left out of its Δ" in capsys.readouterr().err


def test_runs_that_share_no_task_or_other_tasks_are_warned_about(tmp_path, capsys):
    base = make_run(tmp_path, "base", {"t1": 10, "g1": 50})
    disjoint = make_run(tmp_path, "A", {"t2": 30, "g2": 45})
    partial = make_run(tmp_path, "B", {"t1": 20, "g2": 60})
    assert main([base, disjoint, partial, "--out", str(tmp_path / "r")]) == 0
    err = capsys.readouterr().err
    assert "warning: run 'A' shares no task with the base 'base': nothing of it can be compared" in err
    assert "warning: run 'B' lacks g1; adds g2 (against the base): its Target/General avg cover other tasks" in err
    assert "shares no task with the base" in (tmp_path / "r" / "forgetting.md").read_text()


def test_task_and_run_names_are_escaped_in_markdown(tmp_path):
    base = make_run(tmp_path, "base", {"t1": 10})
    data = json.loads((tmp_path / "base" / "results.json").read_text())
    data["tasks"] = {"<img src=x onerror=alert(1)>|x": {**data["tasks"]["t1"], "notes": "<b>bold</b>"}}
    (tmp_path / "base" / "results.json").write_text(json.dumps(data))
    assert main([base, "--out", str(tmp_path / "r")]) == 0
    markdown = (tmp_path / "r" / "forgetting.md").read_text()
    assert "<img" not in markdown and "<b>" not in markdown
    assert "&lt;img src=x onerror=alert(1)&gt;\\|x (target)" in markdown and "&lt;b&gt;bold&lt;/b&gt;" in markdown
