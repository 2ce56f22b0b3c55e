"""Every script of experiments/ and bench/ imports against the current packages (their measurements take minutes
and run by hand, so a renamed function would otherwise only show when someone reruns them)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*(REPO / "experiments").glob("*.py"), *(REPO / "bench").glob("*.py")])


@pytest.mark.parametrize("script", SCRIPTS, ids=[f"{p.parent.name}/{p.name}" for p in SCRIPTS])
def test_the_script_imports_and_has_a_main(script):
    spec = importlib.util.spec_from_file_location(f"script_{script.stem}", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # runs the imports and definitions; the measurement sits behind __main__
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
