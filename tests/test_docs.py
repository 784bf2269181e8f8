"""README.md and docs/ cannot drift: their links resolve and their `eaft ...` command lines are ones eaft accepts
(tests/docs_check.py); each check is shown to fail on a broken fixture in tests/fixtures/docs/."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.docs_check import (
    REPO,
    Block,
    command_lines,
    command_problems,
    doc_files,
    github_slug,
    link_problems,
    path_problems,
    split_markdown,
)

FIXTURES = Path(__file__).parent / "fixtures" / "docs"


def test_the_docs_tree_is_read():
    names = {path.relative_to(REPO).as_posix() for path in doc_files()}
    assert {"README.md", "docs/training.md", "docs/trl.md", "docs/experiments.md"} <= names


def test_every_relative_link_and_image_resolves():
    assert [problem for path in doc_files() for problem in link_problems(path)] == []


def test_every_repository_path_quoted_in_the_prose_exists():
    assert [problem for path in doc_files() for problem in path_problems(path)] == []


def test_every_quoted_eaft_command_names_real_commands_flags_and_keys():
    assert [problem for path in doc_files() for problem in command_problems(path)] == []
    seen = [argv[0] for path in doc_files() for block in split_markdown(path.read_text())[1]
            for _, argv in command_lines(block) if argv]  # fmt: skip
    assert {"train", "analyze", "eval", "report", "experiment"} <= set(seen)  # the check saw every command


def test_the_readme_is_a_landing_page_that_keeps_the_ci_command():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) <= 300
    quick_start = readme[readme.index("## Quick start") :]
    first_block = quick_start[quick_start.index("```bash\n") :].split("```")[1]
    assert "make train" in first_block and "make test" in first_block
    assert "\nmake test\n" in (REPO / ".ci" / "run").read_text(encoding="utf-8")  # CI runs the README's command
    assert not re.search(r"\b(see|in the \w+) (below|above)\b", readme, re.I)  # the README links instead


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("When does EAFT help? The regime map", "when-does-eaft-help-the-regime-map"),
        ("report.html: the sample browser", "reporthtml-the-sample-browser"),
        ("Fused loss op on a GPU (prepared, not yet run)", "fused-loss-op-on-a-gpu-prepared-not-yet-run"),
        ("A CPU-scale run: SmolLM2-135M on GSM8K", "a-cpu-scale-run-smollm2-135m-on-gsm8k"),
        ("`eaft train` and [TRL](trl.md)", "eaft-train-and-trl"),
    ],
)
def test_anchors_are_githubs(heading, slug):
    assert github_slug(heading) == slug


def test_the_checks_pass_a_good_fixture_and_read_its_commands():
    good = FIXTURES / "good.md"
    assert link_problems(good, FIXTURES) == [] and command_problems(good, FIXTURES) == []
    assert path_problems(good, FIXTURES) == []
    _, blocks = split_markdown(good.read_text())
    commands = [(line, argv[0]) for block in blocks if block.lang == "bash" for line, argv in command_lines(block)]
    assert commands == [(9, "train"), (10, "eval"), (12, "analyze"), (13, "experiment")]


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("broken_link.md", [r"broken_link.md:3: 'gone.md' names no file"]),
        ("bad_path.md", [r"bad_path.md:3: `tests/integrations/test_readme_trl.py` is no file or folder"]),
        (
            "bad_anchor.md",
            [r"bad_anchor.md:3: .*no heading of target.md has the anchor", r"bad_anchor.md:3: '#no-such-part'"],
        ),
        ("unknown_flag.md", [r"unknown_flag.md:4: eaft eval --suite quick --limt 5: unrecognized arguments: --limt"]),
        ("unknown_key.md", [r"unknown_key.md:4: .*unknown key 'learning_rat'; did you mean 'learning_rate'\?"]),
        (
            "bad_commands.md",
            [
                r":4: eaft trian objective=eaft: no such command",
                r":5: .*objective_args.alhpa: no such objective parameter of eaft",
                r":6: .*objective=eaftt is no registered objective",
                r":7: .*use_liger_kernel: refused by eaft train",
                r":8: .*configs/train/no_such.yaml does not exist",
                r":9: .*'no_such_suite' is no shipped suite",
                r":10: .*argument --chunk-size: invalid int value: 'many'",
                r":11: .*unrecognized arguments: --lim 5",  # a prefix eaft would take; the docs spell flags whole
            ],
        ),
    ],
)
def test_each_check_fails_on_a_broken_fixture(fixture, expected):
    path = FIXTURES / fixture
    problems = link_problems(path, FIXTURES) + command_problems(path, FIXTURES) + path_problems(path, FIXTURES)
    assert len(problems) == len(expected), problems
    for problem, pattern in zip(problems, expected, strict=True):
        assert re.search(pattern, problem), (pattern, problem)


def test_python_and_output_blocks_are_skipped_not_unseen():
    assert list(command_lines(Block("python", 1, "eaft train no_such_key=1"))) == [(1, ["train", "no_such_key=1"])]
    _, blocks = split_markdown((FIXTURES / "good.md").read_text())
    assert {block.lang for block in blocks} == {"bash", "python", "text"}  # python and text: skipped by the check


def test_the_fused_op_pages_opening_example_runs():
    """docs/fused-op.md opens with a runnable example: run it as written (tiny tensors, CPU)."""
    text = (REPO / "docs" / "fused-op.md").read_text(encoding="utf-8")
    code = next(block.text for block in split_markdown(text)[1] if block.lang == "python")
    namespace: dict = {"__name__": "docs_fused_op"}
    exec(compile(code, "docs/fused-op.md", "exec"), namespace)  # noqa: S102 - the page's own example
    assert namespace["hidden"].grad is not None and namespace["weight"].grad is not None
    assert namespace["stats"].means()["label_tokens"] == (namespace["labels"] != -100).sum().item()
