"""The layers' import boundaries: the math layer stands alone, and the commands do not reach into training."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "eaft"

#: package -> eaft packages it must never import (at module level or inside a function).
FORBIDDEN = {
    "ops": ("objectives", "train", "evaluate", "analysis", "loss", "integrations", "experiment"),
    "objectives": ("train", "evaluate", "analysis", "loss", "integrations", "experiment"),
    "evaluate": ("train", "analysis", "integrations", "experiment"),
    "analysis": ("train", "evaluate", "integrations", "experiment"),
    "data": ("train", "evaluate", "analysis", "objectives", "ops", "loss"),
}


def eaft_imports(path: Path) -> list[tuple[int, str]]:
    """(line, first package under eaft) of every `import eaft.x` / `from eaft.x import` in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "eaft" and len(parts) > 1:
                found.append((node.lineno, parts[1]))
    return found


def test_the_scan_sees_imports_inside_functions(tmp_path):
    module = tmp_path / "m.py"
    module.write_text("import torch\n\ndef f():\n    from eaft.train.run import run_training\n    import eaft.ops\n")
    assert eaft_imports(module) == [(4, "train"), (5, "ops")]


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_stay_inside_its_layer(package):
    offending = [
        f"{path.relative_to(SRC.parent)}:{line} imports eaft.{target}"
        for path in sorted((SRC / package).rglob("*.py"))
        for line, target in eaft_imports(path)
        if target in FORBIDDEN[package]
    ]
    assert not offending, "\n".join(offending)
