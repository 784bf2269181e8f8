"""Write src/eaft/resources/house_calc.jsonl: the small domain set of the embedded default `eaft train`.

Questions of arithmetic, percentages and unit conversion, answered in a house notation that an instruct model does
not use on its own ("[calc] ...\\n[result] ..."), so that the base model meets confident conflicts on the format
tokens while the arithmetic stays within its reach. Deterministic: `python scripts/make_house_calc.py` rewrites the
same file.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "src" / "eaft" / "resources" / "house_calc.jsonl"
ROWS_PER_KIND = 60
UNITS = [  # (from, to, factor, from name, to name)
    ("km", "m", 1000, "kilometres", "metres"),
    ("m", "cm", 100, "metres", "centimetres"),
    ("kg", "g", 1000, "kilograms", "grams"),
    ("L", "mL", 1000, "litres", "millilitres"),
    ("h", "min", 60, "hours", "minutes"),
    ("min", "s", 60, "minutes", "seconds"),
]


def number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def addition(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(10, 999), rng.randint(10, 999)
    question = rng.choice(["What is {a} + {b}?", "Add {a} and {b}.", "Compute the sum of {a} and {b}."])
    return question.format(a=a, b=b), f"[calc] {a} + {b}\n[result] {a + b}"


def subtraction(rng: random.Random) -> tuple[str, str]:
    a = rng.randint(100, 999)
    b = rng.randint(10, a - 1)
    question = rng.choice(["What is {a} - {b}?", "Subtract {b} from {a}.", "How much is {a} minus {b}?"])
    return question.format(a=a, b=b), f"[calc] {a} - {b}\n[result] {a - b}"


def multiplication(rng: random.Random) -> tuple[str, str]:
    a, b = rng.randint(2, 30), rng.randint(2, 30)
    question = rng.choice(["What is {a} × {b}?", "Multiply {a} by {b}.", "What is {a} times {b}?"])
    return question.format(a=a, b=b), f"[calc] {a} × {b}\n[result] {a * b}"


def percentage(rng: random.Random) -> tuple[str, str]:
    p, n = rng.choice([5, 10, 15, 20, 25, 50, 75]), rng.choice(range(20, 420, 20))
    question = rng.choice(["What is {p}% of {n}?", "Find {p} percent of {n}.", "Compute {p}% of {n}."])
    return question.format(p=p, n=n), f"[calc] {n} × {p} / 100\n[result] {number(n * p / 100)}"


def conversion(rng: random.Random) -> tuple[str, str]:
    src, dst, factor, src_name, dst_name = rng.choice(UNITS)
    x = rng.choice([rng.randint(1, 40), rng.randint(1, 40) + 0.5])
    question = rng.choice(["Convert {x} {s} to {d}.", "How many {dn} are in {x} {sn}?", "Express {x} {s} in {d}."])
    text = question.format(x=number(x), s=src, d=dst, sn=src_name, dn=dst_name)
    return text, f"[calc] {number(x)} {src} × {factor} {dst}/{src}\n[result] {number(x * factor)} {dst}"


def average(rng: random.Random) -> tuple[str, str]:
    values = [rng.randint(1, 50) for _ in range(rng.choice([2, 4]))]
    listed = ", ".join(map(str, values))
    question = rng.choice(["What is the average of {v}?", "Find the mean of {v}."])
    calc = f"({' + '.join(map(str, values))}) / {len(values)}"
    return question.format(v=listed), f"[calc] {calc}\n[result] {number(sum(values) / len(values))}"


KINDS = [addition, subtraction, multiplication, percentage, conversion, average]


def main() -> None:
    rng = random.Random(20260102)
    rows = [kind(rng) for kind in KINDS for _ in range(ROWS_PER_KIND)]
    rng.shuffle(rows)
    lines = [
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}, ensure_ascii=False
        )
        for q, a in rows
    ]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(lines)} rows to {OUT}")


if __name__ == "__main__":
    main()
