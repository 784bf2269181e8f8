"""Final-answer extraction and numeric comparison for generative exact-match tasks (GSM8K, AIME style).

`auto` tries, in order: the first number after the last `####` (on its line), the last `\\boxed{...}`
(nested braces allowed), the last number in the text. A number may carry thousands commas (`1,234`), a sign,
a decimal part, a `$` or a trailing `%`; `\\frac{a}{b}` and `a/b` inside a box are read as fractions.
Failing extraction gives None, which scores as wrong.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

NUMBER = re.compile(r"(?<![\w.])[-−]?(?:\$\s?)?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|(?<![\w.])[-−]?\.\d+")
_FRAC = re.compile(r"^\\[dt]?frac\{([^{}]+)\}\{([^{}]+)\}$")
_METHODS = ("auto", "hash", "boxed", "last_number")


def boxed_contents(text: str) -> list[str]:
    """The contents of every `\\boxed{...}` / `\\fbox{...}`, matching nested braces."""
    found = []
    for match in re.finditer(r"\\(?:boxed|fbox)\s*\{", text):
        depth, start = 1, match.end()
        for pos in range(start, len(text)):
            depth += {"{": 1, "}": -1}.get(text[pos], 0)
            if depth == 0:
                found.append(text[start:pos])
                break
    return found


def parse_number(text: str) -> float | None:
    """A number from a short answer string: `1,234`, `-5`, `$3.50`, `12%`, `\\frac{1}{2}`, `3/4`; else None."""
    s = text.strip().strip("$").strip()
    s = re.sub(r"\\text\{[^{}]*\}|\\!|\\,|\\ |\{,\}", lambda m: "," if m.group(0) == "{,}" else "", s)
    s = s.replace("−", "-").rstrip(".").removesuffix("\\%").removesuffix("%").strip()
    frac = _FRAC.match(s) or re.match(r"^(-?\d+)\s*/\s*(\d+)$", s)
    if frac:
        try:
            num, den = Fraction(frac.group(1).replace(",", "")), Fraction(frac.group(2).replace(",", ""))
            return float(num / den) if den else None
        except (ValueError, ZeroDivisionError):
            return None
    if re.fullmatch(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+", s):
        return float(s.replace(",", ""))
    return None


def last_number(text: str, *, first: bool = False) -> float | None:
    """The last (or first) number in free text."""
    matches = NUMBER.findall(text)
    if not matches:
        return None
    return parse_number(matches[0 if first else -1].replace("$", "").replace(" ", ""))


def extract_answer(text: str, method: str = "auto") -> float | None:
    """The final numeric answer of a model's response (or a gold string), or None when there is none."""
    if method not in _METHODS:
        raise ValueError(f"extraction must be one of {_METHODS}, got {method!r}")
    if method in ("auto", "hash") and "####" in text:
        tail = text.rsplit("####", 1)[1].strip()
        first_line = tail.splitlines()[0] if tail else ""
        value = parse_number(first_line)
        return value if value is not None else last_number(first_line, first=True)
    if method in ("auto", "boxed"):
        boxes = boxed_contents(text)
        if boxes:
            value = parse_number(boxes[-1])
            return value if value is not None else last_number(boxes[-1])
    if method in ("auto", "last_number"):
        return last_number(text)
    return None


def gold_number(value: object) -> float | None:
    """A gold answer as a number: plain numbers, numeric strings, or a full GSM8K solution ending in `####`."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    text = str(value)
    direct = parse_number(text)
    return direct if direct is not None else extract_answer(text, "auto")


def numbers_equal(pred: float | None, gold: float | None) -> bool:
    """Numeric equality with a relative tolerance of 1e-6; a missing value is never equal."""
    if pred is None or gold is None:
        return False
    return math.isclose(pred, gold, rel_tol=1e-6, abs_tol=1e-9)
