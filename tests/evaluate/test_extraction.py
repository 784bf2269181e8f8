"""Final-answer extraction: `####`, `\\boxed{}`, last number, commas, negatives; failures score as wrong."""

from __future__ import annotations

import pytest

from eaft.evaluate.extraction import boxed_contents, extract_answer, gold_number, numbers_equal, parse_number


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("She makes 9 * 2 = 18 dollars.\n#### 18", 18.0),
        ("#### 1,234", 1234.0),
        ("The loss is\n#### -12\nthanks", -12.0),
        ("#### $1,000.50", 1000.5),
        ("so the answer is \\boxed{-7}.", -7.0),
        ("first \\boxed{3} then \\boxed{\\frac{3}{4}}", 0.75),
        ("\\boxed{1{,}024}", 1024.0),
        ("\\boxed{\\text{(A) } 12}", 12.0),
        ("It costs -5 dollars, no wait, 1,250,000 dollars in total.", 1250000.0),
        ("The temperature dropped to −3 degrees", -3.0),
        ("x = -0.5", -0.5),
        ("answer: 033", 33.0),
        ("10 - 4 leaves 6", 6.0),
        ("There are 12%", 12.0),
        ("no digits at all", None),
        ("\\boxed{x+y}", None),
        ("#### about ten", None),
    ],
)
def test_auto_extraction(text, expected):
    assert extract_answer(text) == expected


def test_methods_are_restricted():
    text = "We have 5 apples. #### 7 and also \\boxed{9}"
    assert extract_answer(text, "hash") == 7.0
    assert extract_answer(text, "boxed") == 9.0
    assert extract_answer(text, "last_number") == 9.0
    assert extract_answer("only 4 here", "hash") is None
    assert extract_answer("only 4 here", "boxed") is None
    with pytest.raises(ValueError, match="extraction must be one of"):
        extract_answer("1", "regex")


def test_boxed_nesting_and_parsing():
    assert boxed_contents("\\boxed{\\frac{1}{2}} and \\fbox{3}") == ["\\frac{1}{2}", "3"]
    assert boxed_contents("\\boxed{unclosed") == []
    assert parse_number(" 3/4 ") == 0.75
    assert parse_number("1,23") is None  # not a thousands grouping


def test_gold_answers_and_comparison():
    assert gold_number("Natalia sold 48/2 = <<48/2=24>>24 clips.\n#### 72") == 72.0
    assert gold_number("070") == 70.0 and gold_number(5) == 5.0 and gold_number("n/a") is None
    assert numbers_equal(72.0, 72.0) and numbers_equal(0.1 + 0.2, 0.3)
    assert not numbers_equal(None, 72.0) and not numbers_equal(71.0, 72.0) and not numbers_equal(None, None)
