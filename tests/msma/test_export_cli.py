"""``msma export`` on a small synthetic published run: its defaults, the files it writes, and errors that name the
option, what was expected and what was found (exit 2), before any figure is computed."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pytest

from analysis.demo.synthetic_run import add_gnsm_norms, write_synthetic_study
from analysis.runs.reader import open_run
from app import export
from app.views import Explorer, prototype_units
from msma.cli import main

SIZES = {"typical": 60, "down_syndrome": 24, "autism": 6, "atypical": 4, "high_risk_typical": 4, "typical_lesion": 4}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_synthetic_study(tmp_path_factory.mktemp("cli") / "study", sizes=SIZES, n_scores=3,
                                 planted_regions=2, seed=3)


@pytest.mark.parametrize(("arguments", "option", "found"), [
    (["--cohort", "../../x"], "--cohort", "'../../x'"),
    (["--cohort", "down_syndrome", "--units", "99,0"], "--units", "[99, 0]"),
    (["--cohort", "down_syndrome", "--alpha", "1.5"], "--alpha", "1.5"),
    (["--cohort", "down_syndrome", "--q", "0"], "--q", "0.0"),
    (["--cohort", "down_syndrome", "--permutations", "0"], "--permutations", "0"),
    (["--cohort", "down_syndrome", "--crosshair", "0,0,999"], "--crosshair", "(0, 0, 999)"),
    (["--cohort", "down_syndrome", "--scores", "adjusted", "--correction", "bh", "--alpha", "-1"], "--alpha", "-1.0"),
    (["--cohort", "down_syndrome", "--grid", "1,40"], "--grid", "'1,40'"),
    (["--cohort", "down_syndrome", "--grid", "4,31", "--topology", "hexagonal"], "--grid", "'4,31'"),
    (["--cohort", "down_syndrome", "--grid", "3,3", "--units", "3,0"], "--units", "[3, 0]"),
])
def test_a_bad_value_names_its_option(manifest, tmp_path, capsys, arguments, option, found):
    assert main(["export", str(manifest), *arguments, "--out", str(tmp_path / "out"), "--quiet"]) == 2
    message = capsys.readouterr().err.strip().splitlines()[-1]
    assert message.startswith(f"{option}: expected ") and found in message
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("arguments", "option"), [
    (["--units", "3;4"], "--units"), (["--crosshair", "1,2"], "--crosshair"), (["--formats", "png,gif"], "--formats"),
    (["--grid", "5x6"], "--grid"), (["--grid", "5"], "--grid"), (["--grid", "5,6,7"], "--grid"),
    (["--grid", "-5,6"], "--grid"),
])
def test_a_malformed_value_is_a_usage_error_naming_its_option(manifest, tmp_path, capsys, arguments, option):
    with pytest.raises(SystemExit) as stopped:
        main(["export", str(manifest), "--cohort", "down_syndrome", *arguments, "--out", str(tmp_path / "o")])
    assert stopped.value.code == 2 and f"argument {option}: expected" in capsys.readouterr().err


def test_a_topology_without_a_grid_is_refused_naming_both(manifest, tmp_path, capsys):
    assert main(["export", str(manifest), "--cohort", "down_syndrome", "--topology", "hexagonal", "--out",
                 str(tmp_path / "out"), "--quiet"]) == 2
    assert capsys.readouterr().err.strip().startswith("--topology: only with --grid")
    assert not (tmp_path / "out").exists()


def test_msma_export_grid_exports_the_selection_on_that_grids_map(manifest, tmp_path, capsys, monkeypatch):
    """--grid: the figures are those of the map the Grid sweep room shows for that grid (Explorer.map), with the
    cohort's prototype there as the default units; the JSON records the grid. The renderer is stubbed."""
    def fake_images(figures, formats=export.FORMATS, on_figure=None, tabs=1):
        return {(item.name, fmt): b"<svg/>" for item in figures for fmt in formats}

    monkeypatch.setattr(export, "render_images", fake_images)
    out = tmp_path / "figures"
    assert main(["export", str(manifest), "--cohort", "down_syndrome", "--grid", "4,5", "--out", str(out),
                 "--formats", "svg", "--permutations", "99", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "on the 4 x 5 rectangular map refitted" in printed
    run = open_run(manifest)
    ex = Explorer(run)
    grid = (4, 5, run.som.topology)
    view = ex.map(grid)
    index = json.loads((out / "export.json").read_text())
    selection = index["selection"]
    assert selection["grid"] == {"rows": 4, "cols": 5, "topology": run.som.topology, "norms": "msma",
                                 "map": selection["grid"]["map"]} and selection["grid"]["map"].startswith("refitted")
    units = prototype_units(ex, "down_syndrome", grid)
    assert selection["units"] == units and selection["som_grid"] == [4, 5]
    flat = [r * 5 + c for r, c in units]
    on_units = set(run.subjects.index[np.isin(view.bmu_flat, flat)])
    assert selection["members"] == [i for i in run.cohort_ids("down_syndrome") if i in on_units]
    som = pd.read_csv(next(out.glob("*_som_map.csv")))
    assert len(som) == 20 and som.loc[som["selected"], ["row", "col"]].values.tolist() == sorted(units)
    np.testing.assert_allclose(som["u_matrix"], view.som.u_matrix[som["row"], som["col"]])


def test_som_input_gnsm_is_refused_for_a_run_without_gnsm_norms(manifest, tmp_path, capsys):
    assert main(["export", str(manifest), "--cohort", "down_syndrome", "--som-input", "gnsm", "--out",
                 str(tmp_path / "out"), "--quiet"]) == 2
    assert "--som-input: run " in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_msma_export_som_input_gnsm_draws_the_map_of_both_norm_sets(tmp_path, capsys, monkeypatch):
    """--som-input gnsm without --grid: the run's grid size refitted on the score and GNSM norms, as the explorer's
    input menu shows it; the JSON says so."""
    study = write_synthetic_study(tmp_path / "study", sizes=SIZES, n_scores=3, planted_regions=2, seed=4)
    add_gnsm_norms(study)
    monkeypatch.setattr(export, "render_images", lambda figures, formats=export.FORMATS, on_figure=None, tabs=1: {
        (item.name, fmt): b"<svg/>" for item in figures for fmt in formats})
    out = tmp_path / "figures"
    assert main(["export", str(study), "--cohort", "down_syndrome", "--som-input", "gnsm", "--out", str(out),
                 "--formats", "svg", "--permutations", "99", "--quiet"]) == 0
    assert "refitted on the score + GNSM norms" in capsys.readouterr().out
    run = open_run(study)
    ex = Explorer(run)
    grid = (run.som.n_rows, run.som.n_cols, run.som.topology, "gnsm")
    selection = json.loads((out / "export.json").read_text())["selection"]
    assert selection["grid"]["norms"] == "gnsm" and "GNSM" in selection["grid"]["map"]
    assert selection["units"] == prototype_units(ex, "down_syndrome", grid)
    som = pd.read_csv(next(out.glob("*_som_map.csv")))
    np.testing.assert_allclose(som["u_matrix"], ex.map(grid).som.u_matrix[som["row"], som["col"]])


def test_an_existing_folder_with_files_is_not_overwritten(manifest, tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "paper.tex").write_text("keep me")
    assert main(["export", str(manifest), "--cohort", "down_syndrome", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip().startswith("--out: expected a new or empty folder")
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["paper.tex"]


def test_a_study_without_a_run_says_so(tmp_path, capsys, manifest):
    text = manifest.read_text().replace("output_dir: runs", "output_dir: no_runs_here")
    (manifest.parent / "empty.yaml").write_text(text)
    assert main(["export", str(manifest.parent / "empty.yaml"), "--cohort", "x", "--out", str(tmp_path / "o")]) == 1
    assert "no_runs_here" in capsys.readouterr().err


def test_msma_export_writes_the_prototypes_figures_of_the_latest_run(manifest, tmp_path, capsys):
    if export.chromium_path() is None:
        if os.environ.get("MSMA_REQUIRE_BROWSER") == "1":
            pytest.fail("no Chromium (MSMA_REQUIRE_BROWSER=1: browser tests must run here)", pytrace=False)
        pytest.skip("no Chromium (chromium on PATH or BROWSER_PATH): image export needs Debian's chromium")
    out = tmp_path / "figures"
    assert main(["export", str(manifest), "--cohort", "down_syndrome", "--out", str(out), "--formats", "svg",
                 "--permutations", "99", "--quiet"]) == 0
    printed = capsys.readouterr().out
    run = open_run(manifest)
    assert f"from run {run.run_id}" in printed and str(out) in printed
    index = json.loads((out / "export.json").read_text())
    assert index["run_id"] == run.run_id and index["selection"]["cohort"] == "down_syndrome"
    assert index["selection"]["units"] == prototype_units(Explorer(run), "down_syndrome")
    settings = index["settings"]
    assert (settings["correction"], settings["alpha"], settings["q"]) == ("bonferroni", 0.05, 0.1)
    assert settings["roi_scores"] == run.default_roi_scores and settings["formats"] == ["svg"]
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(index["files"])
    for figure in index["figures"]:
        assert {f.rsplit(".", 1)[1] for f in figure["files"]} == {"svg", "csv", "json"}
        assert (out / figure["files"][0]).read_bytes().startswith(b"<svg")
