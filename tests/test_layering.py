"""The layering rules of docs/architecture.md, for third-party libraries and for the project's own
packages: ``msma`` -> ``app``, ``pipeline`` -> ``models`` -> ``analysis``; ``app`` never reaches torch, ``models`` or
``pipeline``; ``pipeline`` never reaches ``msma`` or ``app``; ``analysis`` never reaches torch, dash or any package
above it. Checked twice: by importing every module of a package in a fresh interpreter and looking at sys.modules,
and by reading every import statement (which also catches imports inside functions); both checks are shown to fail
on a planted wrong-way import. Creating the explorer of a run loads no torch either."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "app": {"torch", "models", "pipeline", "msma"},
    "analysis": {"torch", "dash", "plotly", "app", "models", "pipeline", "msma"},
    "models": {"dash", "plotly", "app", "pipeline", "msma"},
    "pipeline": {"dash", "plotly", "app", "msma"},
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


def wrong_way_imports(root: Path) -> dict[str, list[str]]:
    """Module path -> forbidden roots it imports, for every module of every package of :data:`FORBIDDEN` under
    ``root``."""
    offenders = {}
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((root / package).rglob("*.py")):
            found = sorted(_imported_roots(path) & forbidden)
            if found:
                offenders[str(path.relative_to(root))] = found
    return offenders


def test_no_module_imports_a_forbidden_package_even_lazily():
    assert wrong_way_imports(REPO) == {}


@pytest.mark.parametrize(
    ("module", "statement", "caught"),
    [
        ("analysis/exploration/planted.py", "from models.checkpoint import load_score_model\n", ["models"]),
        ("models/planted.py", "def f():\n    import pipeline.refresh\n", ["pipeline"]),
        ("pipeline/planted.py", "from msma.cli import main\n", ["msma"]),
        ("app/planted.py", "import torch\nfrom pipeline import keys\n", ["pipeline", "torch"]),
    ],
)
def test_the_import_check_catches_a_planted_wrong_way_import(tmp_path, module, statement, caught):
    for package in FORBIDDEN:
        (tmp_path / package).mkdir()
        (tmp_path / package / "__init__.py").write_text("")
    (tmp_path / module).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / module).write_text(statement)
    assert wrong_way_imports(tmp_path) == {module: caught}


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
