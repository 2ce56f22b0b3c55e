"""Functions short enough to call at once: no function or method of the project takes more than 8 parameters
(``self`` and ``cls`` aside); a group of settings that travel together becomes a small record instead."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("analysis", "app", "bench", "experiments", "models", "msma", "pipeline", "tests")
MAX_PARAMETERS = 8


def wide_functions(root: Path) -> dict[str, int]:
    """``path:line name`` -> parameter count, for every function over :data:`MAX_PARAMETERS` below ``root``."""
    wide = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    args = node.args
                    names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
                    count = len([n for n in names if n not in ("self", "cls")]) + bool(args.vararg) + bool(args.kwarg)
                    if count > MAX_PARAMETERS:
                        wide[f"{path.relative_to(root)}:{node.lineno} {node.name}"] = count
    return wide


def test_no_function_takes_more_than_eight_parameters():
    assert wide_functions(REPO) == {}


def test_the_check_finds_a_wide_function(tmp_path):
    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "wide.py").write_text("def f(a, b, c, d, e, f, g, h, *rest):\n    pass\n")
    assert wide_functions(tmp_path) == {"pipeline/wide.py:1 f": 9}
