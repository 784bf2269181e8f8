"""Suite files: parsing, validation errors that name the key, and every example config in configs/suites."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from eaft.evaluate.extraction import gold_number
from eaft.evaluate.multiple_choice import build_items
from eaft.evaluate.suite import load_suite
from eaft.evaluate.tasks import TaskError, field_value, iter_rows, render, select_rows

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "suites"


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_inline_and_referenced_tasks_with_overrides(tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.jsonl").write_text('{"question": "q", "choices": ["x", "y"], "answer": 1}\n')
    (tmp_path / "tasks").mkdir()
    write(tmp_path / "tasks" / "arc.yaml", "type: multiple_choice\npath: ../data/a.jsonl\nscoring: raw\nlimit: 50\n")
    suite_file = write(
        tmp_path / "s.yaml",
        """
data_root: data
target:
  - name: inline
    type: generative
    path: a.jsonl
    max_new_tokens: 7
general:
  - task: tasks/arc.yaml
    scoring: per_token
    limit: 10
""",
    )
    suite = load_suite(suite_file)
    assert suite.name == "s" and [t.name for t in suite.tasks] == ["inline", "arc"]
    inline, arc = suite.tasks
    assert inline.group == "target" and inline.options.max_new_tokens == 7 and inline.path == tmp_path / "data/a.jsonl"
    assert arc.group == "general" and arc.options.scoring == "per_token" and arc.limit == 10
    assert arc.path.resolve() == (tmp_path / "data" / "a.jsonl").resolve()
    capped = load_suite(suite_file, limit=3)
    assert [t.limit for t in capped.tasks] == [3, 3]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "general:\n  - {name: a, type: multiple_choice, path: x.jsonl, scorring: raw}\n",
            r"unknown option 'scorring'.*did you mean 'scoring'",
        ),
        ("generl:\n  - {name: a, type: ifeval, path: x.jsonl}\n", r"unknown key 'generl'.*did you mean 'general'"),
        ("general:\n  - {name: a, type: multiple_choise, path: x}\n", r"did you mean 'multiple_choice'"),
        ("general:\n  - {name: a, type: ifeval}\n", r"general\[0\]: task 'a' of type ifeval needs `path`"),
        ("general:\n  - {name: a, path: x.jsonl}\n", r"needs `type`"),
        ("general:\n  - {name: a, type: multiple_choice, path: x, scoring: mean}\n", r"scoring must be one of"),
        ("general:\n  - {name: a, type: generative, path: x, max_new_tokens: -1}\n", r"non-negative integer"),
        ("general:\n  - {name: a, type: ifeval, path: x, limit: 0}\n", r"limit must be a positive integer"),
        (
            "target:\n  - {name: a, type: ifeval, path: x}\ngeneral:\n  - {name: a, type: ifeval, path: y}\n",
            r"unique, repeated: \['a'\]",
        ),
        ("name: empty\n", r"no tasks"),
        ("general:\n  - task: missing.yaml\n", r"missing.yaml: no such file"),
    ],
)
def test_errors_name_the_problem(tmp_path, body, message):
    with pytest.raises(TaskError, match=message):
        load_suite(write(tmp_path / "bad.yaml", body))


def test_row_selection_and_templates():
    rows = [{"i": i} for i in range(10)]
    assert select_rows(rows, 3) == rows[:3]
    assert select_rows(rows, 3, "spread") == [rows[0], rows[3], rows[6]]
    assert select_rows(rows, None) == rows
    row = {"q": "2+2", "t": {"a": "x"}, "ctx": ["one", "two"]}
    assert render("Q: {q} {t.a} \\boxed{} {ctx}", row, "here") == "Q: 2+2 x \\boxed{} one\ntwo"
    with pytest.raises(TaskError, match=r"here: no field 't.b'"):
        field_value(row, "t.b", "here")


def example_suites() -> list[Path]:
    return sorted(CONFIGS.glob("*.yaml"))


def test_every_task_file_is_used_by_an_example_suite(stand_in_data_root):
    used = {t.source for f in example_suites() for t in load_suite(f).tasks}
    assert example_suites() and used
    referenced = "\n".join(f.read_text() for f in example_suites())
    for task_file in sorted((CONFIGS / "tasks").glob("*.yaml")):
        assert f"tasks/{task_file.name}" in referenced or task_file.stem in ("arc_challenge", "piqa", "winogrande")


@pytest.mark.parametrize("suite_file", example_suites(), ids=lambda p: p.stem)
def test_example_suites_load_without_the_data(suite_file, stand_in_data_root):
    """Each example suite parses and validates anywhere; its data paths lie under the data root, or are rows the
    project ships itself (under configs/, e.g. the regime map's PubMedQA target)."""
    for task in load_suite(suite_file).tasks:
        path = None if task.path is None else task.path.resolve()
        shipped = path is not None and path.is_relative_to(CONFIGS.parent.resolve()) and path.is_file()
        assert path is None or path.is_relative_to(stand_in_data_root.resolve()) or shipped, task.path


@pytest.mark.parametrize("suite_file", example_suites(), ids=lambda p: p.stem)
def test_example_suites_load_and_fit_their_data(suite_file, real_data_root):
    """Each example suite parses, its files exist, and its templates fit the first rows of the real data."""
    for task in load_suite(suite_file).tasks:
        if task.path is None or task.type == "function_call":  # a folder of BFCL files: test_function_call.py
            continue
        assert task.path.is_file(), task.path
        small = dataclasses.replace(task, limit=2, limit_mode="first")
        if task.type == "multiple_choice":
            assert len(build_items(small)) == 2
        for line, row in iter_rows(small.path, 2, "first"):
            if task.type == "generative":
                render(task.options.prompt, row, str(line))
                assert gold_number(row[task.options.answer]) is not None
            if task.type == "ifeval":
                assert {"key", "prompt", "instruction_id_list", "kwargs"} <= set(row)


@pytest.mark.parametrize("name", ["arc_challenge", "piqa", "winogrande"])
def test_standalone_task_files_fit_their_data(tmp_path, name, real_data_root):
    suite = load_suite(write(tmp_path / "s.yaml", f"general:\n  - task: {CONFIGS}/tasks/{name}.yaml\n    limit: 2\n"))
    assert len(build_items(suite.tasks[0])) == 2
