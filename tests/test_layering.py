"""The layering rules of DESIGN.md: app/ never loads torch or the model code; analysis/ never loads torch, dash or
the packages above it; models/ never loads dash, plotly or the app. Checked twice: by importing every module of a
package in a fresh interpreter and looking at sys.modules, and by reading every import statement (which also catches
imports inside functions); and creating the explorer of a run loads no torch either."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "app": {"torch", "models", "msma"},
    "analysis": {"torch", "dash", "plotly", "app", "models", "msma"},
    "models": {"dash", "plotly", "app"},
}

_PROBE = """
import importlib, json, pkgutil, sys
package = importlib.import_module(sys.argv[1])
for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_importing_a_package_loads_no_forbidden_library(package):
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, package], cwd=REPO, capture_output=True, text=True, check=True
    )
    loaded = set(json.loads(result.stdout))
    assert not loaded & FORBIDDEN[package], f"{package} loads {sorted(loaded & FORBIDDEN[package])}"


def _imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_module_imports_a_forbidden_library_even_lazily(package):
    offenders = {
        str(path.relative_to(REPO)): sorted(_imported_roots(path) & FORBIDDEN[package])
        for path in (REPO / package).rglob("*.py")
    }
    assert not {k: v for k, v in offenders.items() if v}


def test_the_probe_detects_a_forbidden_import(tmp_path):
    """The subprocess check is not vacuous: a package that imports a forbidden library is caught."""
    (tmp_path / "leaky").mkdir()
    (tmp_path / "leaky" / "__init__.py").write_text("")
    (tmp_path / "leaky" / "inner.py").write_text("import json as torch_free\nimport statistics\n")
    result = subprocess.run(
        [sys.executable, "-c", _PROBE, "leaky"], cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert "statistics" in json.loads(result.stdout)


_CREATE_APP = """
import json, sys
from analysis.runs.reader import open_run
from analysis.demo.synthetic_run import write_synthetic_study
from app import create_app
app = create_app(open_run(write_synthetic_study(sys.argv[1], 60)))
assert app.layout is not None
print(json.dumps(sorted({name.split(".")[0] for name in sys.modules})))
"""


def test_creating_the_explorer_of_a_run_loads_no_torch_and_no_model_code(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", _CREATE_APP, str(tmp_path / "study")], cwd=REPO, capture_output=True, text=True,
        check=True,
    )
    loaded = set(json.loads(result.stdout.splitlines()[-1]))
    assert {"dash", "app", "analysis"} <= loaded
    assert not loaded & {"torch", "models", "msma"}, sorted(loaded & {"torch", "models", "msma"})
