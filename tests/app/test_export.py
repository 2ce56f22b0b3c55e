"""The export of a selection's figures (app.export) and the sweep figure (app.figures.sweep), on a small synthetic
published run with a grid-stability sweep.

Most tests replace the browser by a stub renderer (the CSV, JSON, file names and folder handling do not depend on
it), so they run everywhere; the images are checked (PNG size, SVG as XML, PDF pages) on one real export through
Kaleido and Chromium, skipped, saying why, without Chromium (failed instead with ``MSMA_REQUIRE_BROWSER=1``).
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from analysis.demo.synthetic_run import write_synthetic_study
from analysis.exploration.cohort_analysis import behaviour_table
from analysis.exploration.sweep import SweepGrids, grid_stability_sweep
from analysis.runs import layout as run_layout
from analysis.runs.reader import open_run
from analysis.runs.store import write_table
from app import export, views
from app.export import ExportError, ExportSettings, RenderError
from app.figures.sweep import STABLE, sweep_data, sweep_figure
from app.views import Explorer

COHORT = "down_syndrome"
SIZES = {"typical": 100, "down_syndrome": 40, "autism": 8, "atypical": 6, "high_risk_typical": 8, "typical_lesion": 8}
SETTINGS = ExportSettings(n_permutations=200, scores="raw")
REQUIRED = os.environ.get("MSMA_REQUIRE_BROWSER") == "1"


def _fake_images(figures, formats=export.FORMATS, on_figure=None, tabs=1):
    """The renderer's contract without a browser: one small placeholder per figure and format."""
    for k, item in enumerate(figures, start=1):
        if on_figure is not None:
            on_figure(k, len(figures), item.name)
    return {(item.name, fmt): f"{item.name}.{fmt}".encode() for item in figures for fmt in formats}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    manifest = write_synthetic_study(tmp_path_factory.mktemp("export") / "study", sizes=SIZES, n_scores=5,
                                     planted_regions=3, seed=0)
    run = open_run(manifest)
    labels = run.subjects["cohort"].to_numpy()
    table = grid_stability_sweep(run.score_norms.to_numpy(dtype=float), labels, COHORT,
                                 reference=labels == run.reference_cohort,
                                 grids=SweepGrids(rows=[3, 4], cols=[3, 4, 5]), n_jobs=1, progress=False)
    table["members"] = [[str(run.subjects.index[i]) for i in m] for m in table["members"]]
    write_table(run.run_dir / run_layout.sweep_file(COHORT), table)
    return run


@pytest.fixture(scope="module")
def ex(run):
    return Explorer(run)


@pytest.fixture(scope="module")
def units(ex):
    return views.prototype_units(ex, COHORT)


@pytest.fixture(scope="module")
def built(ex, units):
    figures, settings = export.selection_figures(ex, COHORT, units, SETTINGS)
    return {f.name: f for f in figures}, settings


@pytest.fixture(scope="module")
def stub_export(ex, units, tmp_path_factory):
    out = tmp_path_factory.mktemp("stub") / "export"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export, "render_images", _fake_images)
        paths = export.export_selection(ex, COHORT, units, out, SETTINGS)
    return out, paths


@pytest.fixture(scope="module")
def real_export(ex, units, tmp_path_factory):
    if export.chromium_path() is None:
        reason = "no Chromium (chromium on PATH or BROWSER_PATH)"
        if REQUIRED:
            pytest.fail(f"{reason} (MSMA_REQUIRE_BROWSER=1: browser tests must run here)", pytrace=False)
        pytest.skip(f"{reason}: image export needs Debian's chromium (apt-get install chromium)")
    out = tmp_path_factory.mktemp("real") / "export"
    return out, export.export_selection(ex, COHORT, units, out, SETTINGS)


def _csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path)


def _no_nan(constant: str):
    raise AssertionError(f"{constant} in a JSON record: strict JSON has no NaN or Infinity")


def _stem(paths, name: str) -> str:
    return next(p.stem for p in paths if p.suffix == ".json" and p.stem.endswith(name))


# --- the sweep figure -----------------------------------------------------------------------------------------------


def _toy_sweep() -> pd.DataFrame:
    rows = []
    for r in (3, 4, 5):
        for c in (3, 4, 6):  # a gap: the figure keeps square cells on positions 0..n-1
            rows.append({"rows": r, "cols": c, "unit_row": r - 3, "unit_col": 1, "size": 10 * r + c,
                         "cohort_size": 100, "members": [], "quantization_error": 1.0, "topographic_error": 0.1,
                         "jaccard_next_row": np.nan, "jaccard_next_col": np.nan,
                         "jaccard_neighbours": 0.9 if r == c else 0.3 + 0.01 * c})
    return pd.DataFrame(rows).sample(frac=1, random_state=0)  # any row order


def test_sweep_figure_draws_size_and_stability_on_the_grid_lattice_with_the_stable_band_outlined():
    table = _toy_sweep()
    fig = sweep_figure(table, "ds", shown=(4, 4))
    size, stability = fig.data[0], fig.data[1]
    expected = table.pivot(index="rows", columns="cols", values="size").sort_index().sort_index(axis=1)
    np.testing.assert_array_equal(np.asarray(size.z), expected.to_numpy())
    np.testing.assert_allclose(np.asarray(stability.z),
                               table.pivot(index="rows", columns="cols", values="jaccard_neighbours")
                               .sort_index().sort_index(axis=1).to_numpy())
    assert (stability.zmin, stability.zmax) == (0, 1)
    assert size.colorscale != stability.colorscale  # cividis and viridis, both sequential
    assert size.colorbar.title.text == "members" and "Jaccard" in stability.colorbar.title.text
    assert isinstance(size.customdata, tuple | list)  # plain JSON arrays: what Dash hands to a click callback
    assert list(size.customdata[1][2][:2]) == [4, 6] and all(isinstance(v, int) for v in size.customdata[1][2][:2])
    custom = np.asarray(size.customdata, dtype=float)
    np.testing.assert_allclose(custom[..., 2], expected.to_numpy() / 100 * 100)  # share of the cohort, %
    layout = fig.layout
    assert layout.xaxis.title.text == layout.xaxis2.title.text == "SOM columns"
    assert layout.yaxis.title.text == "SOM rows" and list(layout.xaxis.ticktext) == [3, 4, 6]
    stable = [(r, c) for r, c, j in zip(table["rows"], table["cols"], table["jaccard_neighbours"], strict=True)
              if j >= STABLE]
    black = [s for s in layout.shapes if s.line.color == "black"]
    assert len(black) == 2 * len(stable)  # both heatmaps
    shown = [s for s in layout.shapes if s.line.color == "#D55E00"]
    assert len(shown) == 2 and {(s.x0 + 0.5, s.y0 + 0.5) for s in shown} == {(1, 1)}  # (4, 4) at position (1, 1)


def test_sweep_data_is_what_the_heatmaps_draw():
    table = _toy_sweep()
    data = sweep_data(table, shown=(4, 4))
    fig = sweep_figure(table, "ds", shown=(4, 4))
    assert data[["rows", "cols"]].values.tolist() == sorted(table[["rows", "cols"]].values.tolist())
    np.testing.assert_array_equal(data["size"].to_numpy(), np.asarray(fig.data[0].z).ravel())
    np.testing.assert_allclose(data["jaccard_neighbours"].to_numpy(), np.asarray(fig.data[1].z).ravel())
    np.testing.assert_allclose(data["share"], data["size"] / 100)
    assert data["stable"].sum() == (table["jaccard_neighbours"] >= STABLE).sum()
    assert data.loc[data["shown"], ["rows", "cols"]].values.tolist() == [[4, 4]]


def test_without_a_sweep_the_figure_says_how_to_make_one():
    for table in (None, _toy_sweep().iloc[:0]):
        fig = sweep_figure(table, "autism")
        assert not fig.data and "msma sweep --cohort autism" in fig.layout.annotations[0].text
        assert sweep_data(table).empty


# --- the figures and the numbers behind them ----------------------------------------------------------------------


def test_a_selection_exports_every_view_of_the_explorer(built, run):
    figures, settings = built
    names = list(figures)
    assert names[:4] == ["som_map", "sweep", "roi_boxes", "correlations"]
    assert names[-3:] == ["slice_axial", "slice_coronal", "slice_sagittal"]
    scatters = [n for n in names if n.startswith("scatter_")]
    assert scatters, "the planted subgroup's behaviour score correlates at q = 0.1"
    assert settings.scores == "raw" and settings.n_permutations == 200 and len(settings.crosshair) == 3
    for item in figures.values():
        layout = item.figure.layout
        assert layout.width in (export.ONE_COLUMN_PX, export.TWO_COLUMN_PX) and layout.height > 0
        assert layout.paper_bgcolor == "white" and layout.font.size >= export.MIN_FONT
        assert layout.title.text


def test_the_box_plot_csv_holds_each_groups_roi_scores_and_the_reference_percentile(built, ex, run, units):
    figures, _ = built
    data = figures["roi_boxes"].data
    boxes = [t for t in figures["roi_boxes"].figure.data if t.type == "box"]
    for trace in boxes:
        drawn = data[data["group"] == trace.name]
        np.testing.assert_allclose(drawn["score"], np.asarray(trace.x, dtype=float))
        assert drawn["roi"].tolist() == list(trace.y) and drawn["subject_id"].tolist() == list(trace.customdata)
    inside, _ = views.cohort_members(ex, COHORT, units)
    selection = data[data["group"].str.startswith("selection")]
    for roi, rows in selection.groupby("roi"):
        lookup = run.roi_scores.loc[rows["subject_id"], roi].to_numpy()
        np.testing.assert_allclose(rows["score"], lookup)
        assert set(rows["subject_id"]) == set(inside)
    p90 = run.roi_scores.loc[run.reference_ids].quantile(0.9)
    np.testing.assert_allclose(data["reference_p90"], p90[data["roi"]].to_numpy())


def test_the_correlation_csv_is_the_heatmaps_cells_and_the_permutation_table(built, run, ex):
    figures, settings = built
    item = figures["correlations"]
    heatmap, rings = item.figure.data[0], item.figure.data[1]
    data = item.data
    np.testing.assert_allclose(data["rho"], np.asarray(heatmap.z, dtype=float).ravel())
    rois = item.details["rois"]
    expected = behaviour_table(run.roi_scores, run.behaviour, run.cohort_ids(COHORT), rois,
                               n_permutations=200, random_state=ex.seed).result(rois).table
    merged = data.merge(expected, on=["roi", "behaviour"], suffixes=("", "_expected"))
    assert len(merged) == len(data) == len(rois) * run.behaviour.shape[1]
    np.testing.assert_allclose(merged["rho"], merged["rho_expected"])
    np.testing.assert_allclose(merged["p_bh"], merged["p_bh_expected"])
    ringed = set(zip(rings.y, rings.x, strict=True))
    assert set(zip(data.loc[data["ringed"], "roi"], data.loc[data["ringed"], "behaviour"], strict=True)) == ringed
    hits = expected[expected["testable"] & (expected["p_bh"] < settings.q)]
    assert {f"scatter_{r}__{b}" for r, b in zip(hits["roi"], hits["behaviour"], strict=True)} == {
        n for n in figures if n.startswith("scatter_")}


def test_a_scatter_csv_is_its_points_and_line(built, run):
    figures, _ = built
    item = next(f for n, f in figures.items() if n.startswith("scatter_"))
    roi, behaviour = item.details["pair"]["roi"], item.details["pair"]["behaviour"]
    for trace in item.figure.data:
        rows = item.data[item.data["series"] == trace.name]
        np.testing.assert_allclose(rows["x"], np.asarray(trace.x, dtype=float))
        np.testing.assert_allclose(rows["y"], np.asarray(trace.y, dtype=float))
    points = item.data[item.data["subject_id"] != ""]
    np.testing.assert_allclose(points["x"], run.roi_scores.loc[points["subject_id"], roi].to_numpy())
    np.testing.assert_allclose(points["y"], run.behaviour.loc[points["subject_id"], behaviour].to_numpy())


def test_a_slice_csv_is_its_pixels_and_the_selections_mean_heatmap(built, ex, run, units):
    figures, settings = built
    i, j, k = settings.crosshair
    inside, _ = views.cohort_members(ex, COHORT, units)
    mean = np.asarray(run.heatmaps[sorted(run.row_of[s] for s in inside)], dtype=np.float64).mean(axis=0)
    axial = figures["slice_axial"]
    np.testing.assert_allclose(axial.data["heatmap"].to_numpy().reshape(np.asarray(axial.figure.data[1].z).shape),
                               np.asarray(axial.figure.data[1].z, dtype=float))
    np.testing.assert_allclose(axial.data["heatmap"].to_numpy(), mean[:, :, k].T.ravel(), rtol=1e-5, atol=1e-6)
    sagittal = figures["slice_sagittal"].data
    np.testing.assert_allclose(sagittal["heatmap"].to_numpy(), mean[i, :, :].T.ravel(), rtol=1e-5, atol=1e-6)
    assert list(sagittal.columns) == ["y", "z", "template", "heatmap", "outlined"]
    assert figures["slice_axial"].details["crosshair_voxel"] == [i, j, k]


def test_the_som_csv_and_the_sweep_csv_are_what_their_figures_draw(built, run, units):
    figures, _ = built
    som = figures["som_map"].data
    assert len(som) == run.som.n_rows * run.som.n_cols
    np.testing.assert_allclose(som["u_matrix"], run.som.u_matrix[som["row"], som["col"]])
    assert som.loc[som["selected"], ["row", "col"]].values.tolist() == sorted(units)
    r, c = run.som.prototypes[COHORT]["unit"]
    assert COHORT in som.loc[(som["row"] == r) & (som["col"] == c), "maximal_prototype_of"].iloc[0]
    sweep = figures["sweep"].data
    table = pd.read_parquet(run.run_dir / run_layout.sweep_file(COHORT)).sort_values(["rows", "cols"])
    np.testing.assert_array_equal(sweep["size"], table["size"])
    np.testing.assert_array_equal(sweep["size"], np.asarray(figures["sweep"].figure.data[0].z).ravel())


def test_paper_style_keeps_the_data_and_wraps_a_long_title():
    fig = go.Figure(go.Heatmap(z=np.arange(6.0).reshape(2, 3)),
                    layout={"title": {"text": "a long title " * 12}, "xaxis": {"tickfont": {"size": 7}},
                            "legend": {"yref": "container", "y": 0.9}, "height": 300, "uirevision": "keep"})
    paper = export.for_paper(fig, export.ONE_COLUMN_PX, 300)
    np.testing.assert_array_equal(np.asarray(paper.data[0].z), np.arange(6.0).reshape(2, 3))
    assert paper.layout.title.text.count("<br>") >= 2 and paper.layout.height > 300
    assert paper.layout.xaxis.tickfont.size == export.MIN_FONT and paper.layout.uirevision is None
    assert paper.layout.legend.y < 0.9  # moved down with the added title lines


# --- a selection on a sweep grid's map ------------------------------------------------------------------------------

GRID = (4, 5, "rectangular")
"""A grid of the fixture's sweep (rows 3-4 x columns 3-5), not the run's own."""


@pytest.fixture(scope="module")
def on_grid(ex, run):
    assert (run.som.n_rows, run.som.n_cols) != GRID[:2]
    units = views.prototype_units(ex, COHORT, GRID)
    grid = {"rows": GRID[0], "cols": GRID[1], "topology": GRID[2]}  # as the browser's selection carries it
    figures, settings = export.selection_figures(ex, COHORT, units, SETTINGS, grid=grid)
    return units, {f.name: f for f in figures}, settings


def _grid_members(ex, run, units) -> list[str]:
    """The cohort's members in ``units`` of :data:`GRID`'s map, read from :meth:`Explorer.map` directly."""
    view = ex.map(GRID)
    flat = [r * view.som.n_cols + c for r, c in units]
    on_units = set(run.subjects.index[np.isin(view.bmu_flat, flat)])
    return [i for i in run.cohort_ids(COHORT) if i in on_units]


def test_a_sweep_grid_selection_exports_that_grids_map_and_its_members(ex, run, on_grid):
    units, figures, settings = on_grid
    view = ex.map(GRID)
    members = _grid_members(ex, run, units)
    assert members and set(members) != set(views.cohort_members(ex, COHORT, views.prototype_units(ex, COHORT))[0])
    som = figures["som_map"]
    assert len(som.data) == GRID[0] * GRID[1] and som.details["grid"] == list(GRID[:2])
    assert som.details["topology"] == GRID[2] and som.details["map"].startswith("refitted")
    np.testing.assert_allclose(som.data["u_matrix"], view.som.u_matrix[som.data["row"], som.data["col"]])
    assert som.data.loc[som.data["selected"], ["row", "col"]].values.tolist() == sorted(units)
    assert f"{GRID[0]} × {GRID[1]}" in som.figure.layout.title.text
    assert figures["sweep"].details["grid_shown"] == list(GRID[:2])
    assert figures["sweep"].data.loc[figures["sweep"].data["shown"], ["rows", "cols"]].values.tolist() == [
        list(GRID[:2])]
    boxes = figures["roi_boxes"].data
    assert not boxes.empty and any(n.startswith("scatter_") for n in figures)
    assert set(boxes.loc[boxes["group"].str.startswith("selection"), "subject_id"]) == set(members)
    step = views.regions(ex, COHORT, units, settings.correction, settings.alpha, settings.scores, GRID)
    assert figures["roi_boxes"].details["significant_rois"] == step.significant_rois
    for name, item in figures.items():
        if name.startswith("scatter_"):
            roi, behaviour = item.details["pair"]["roi"], item.details["pair"]["behaviour"]
            drawn = [i for i in members if i in run.behaviour.index and np.isfinite(run.behaviour.at[i, behaviour])
                     and np.isfinite(run.roi_scores.at[i, roi])]
            chosen = item.data[item.data["series"].str.contains("in the selection")]
            assert sorted(chosen["subject_id"]) == sorted(drawn)
    assert settings.crosshair == tuple(views.selection_peak(ex, COHORT, units, GRID))
    i, j, k = settings.crosshair
    mean = np.asarray(run.heatmaps[sorted(run.row_of[s] for s in members)], dtype=np.float64).mean(axis=0)
    axial = figures["slice_axial"]
    assert axial.details["averaged_subjects"] == len(members)
    np.testing.assert_allclose(axial.data["heatmap"].to_numpy(), mean[:, :, k].T.ravel(), rtol=1e-5, atol=1e-6)


def test_the_json_of_a_sweep_grid_export_records_the_grid_and_its_members(ex, run, on_grid, monkeypatch):
    units, figures, _ = on_grid
    monkeypatch.setattr(export, "render_images", _fake_images)
    files = export.export_files(ex, COHORT, units, SETTINGS, grid=GRID)
    index = json.loads(files["export.json"], parse_constant=_no_nan)
    selection = index["selection"]
    assert selection["grid"]["rows"] == GRID[0] and selection["grid"]["cols"] == GRID[1]
    assert selection["grid"]["topology"] == GRID[2] and selection["grid"]["map"].startswith("refitted")
    assert selection["som_grid"] == list(GRID[:2]) and selection["units"] == units
    assert selection["members"] == _grid_members(ex, run, units)
    som_json = json.loads(files[next(n for n in files if n.endswith("som_map.json"))])
    assert som_json["selection"] == selection and som_json["figure"]["grid"] == list(GRID[:2])
    own = json.loads(export.export_files(ex, COHORT, views.prototype_units(ex, COHORT), SETTINGS)["export.json"])
    assert own["selection"]["grid"]["map"] == "the run's" and own["selection"]["som_grid"] == [
        run.som.n_rows, run.som.n_cols]
    archive = zipfile.ZipFile(io.BytesIO(export.export_zip(ex, COHORT, units, SETTINGS, grid=list(GRID))))
    assert all(name.startswith(f"msma-export_{run.run_id}_{COHORT}_4x5/") for name in archive.namelist())


def test_the_run_maps_own_grid_is_the_run_map(ex, run):
    own = (run.som.n_rows, run.som.n_cols, run.som.topology)
    assert export.check_grid(ex, own) is None and export.check_grid(ex, None) is None
    assert export.check_grid(ex, (4, 5)) == (4, 5, run.som.topology, "msma")
    hexagonal = {"rows": np.int64(4), "cols": 5, "topology": "hexagonal"}
    assert export.check_grid(ex, hexagonal) == (4, 5, "hexagonal", "msma")


@pytest.mark.parametrize("grid", [
    {"rows": 1, "cols": 5}, (4, 40), (4,), "4x5", {"rows": 4, "cols": 5, "topology": "triangular"}, (True, 5),
    {"rows": "4", "cols": 5}, [4.0, 5],
])
def test_a_bad_grid_is_refused_naming_it(ex, units, grid, tmp_path):
    with pytest.raises(ExportError) as caught:
        export.export_selection(ex, COHORT, units, tmp_path / "out", SETTINGS, grid=grid)
    assert caught.value.argument == "grid" and str(caught.value).startswith("grid: expected ")
    assert list(tmp_path.iterdir()) == []


def test_units_off_the_grids_map_are_refused(ex, run):
    off = [[GRID[0], 0]]  # a row past the 4 x 5 map
    with pytest.raises(ExportError) as caught:
        export.selection_figures(ex, COHORT, off, SETTINGS, grid=GRID)
    assert caught.value.argument == "units" and "4 x 5 rectangular map refitted" in str(caught.value)


BADGE_CHARS = 75
"""Longest stability badge that fits on its one line under the map at 1600 px (about 86 characters are shown)."""


def test_the_stability_badge_is_short_and_its_tooltip_says_it_in_full(ex, run):
    selection = {"cohort": COHORT, "units": views.prototype_units(ex, COHORT, GRID),
                 "grid": {"rows": GRID[0], "cols": GRID[1], "topology": GRID[2]}}
    inside, _ = views.cohort_members(ex, COHORT, selection["units"], GRID)
    table = pd.read_parquet(run.run_dir / run_layout.sweep_file(COHORT))
    near = table[~((table["rows"] == GRID[0]) & (table["cols"] == GRID[1]))]  # all within 3 rows and columns
    kept = sum(len(set(inside) & set(m)) / len(set(inside) | set(m)) >= 0.8 for m in near["members"])
    badge, sentence = views.stability_note(ex, selection)
    assert len(badge) <= BADGE_CHARS
    assert badge == f"Stability: same {len(inside)} members (Jaccard ≥ 0.8) in {kept}/{len(near)} grids ±3 rows/cols"
    assert sentence == (f"Stability: these {len(inside)} members of {COHORT} are the cohort's maximal prototype "
                        f"(Jaccard overlap ≥ 0.8) in {kept} of the {len(near)} swept grids within ±3 rows and columns "
                        f"of this 4 × 5 map.")
    for other in ({**selection, "units": [[r, c] for r in range(4) for c in range(5)
                                          if not set(views.selected_ids(ex, [[r, c]], GRID)) & set(inside)][:1]},
                  {"cohort": "autism", "units": [[0, 0]], "grid": None},
                  {**selection, "grid": {"rows": 20, "cols": 20, "topology": "rectangular"}, "units": [[0, 0]]}):
        badge, sentence = views.stability_note(ex, other)
        assert badge.startswith("Stability: ") and len(badge) <= BADGE_CHARS and len(sentence) > len(badge)


# --- settings and names --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("settings", "argument"), [
    (ExportSettings(correction="holm"), "correction"),
    (ExportSettings(alpha=0), "alpha"),
    (ExportSettings(q=float("nan")), "q"),
    (ExportSettings(scores="z"), "scores"),
    (ExportSettings(n_permutations=0), "n_permutations"),
    (ExportSettings(crosshair=(0, 0, 10_000)), "crosshair"),
    (ExportSettings(outline_roi="../../etc"), "outline_roi"),
    (ExportSettings(formats=("png", "gif")), "formats"),
    (ExportSettings(som_layer="weights"), "som_layer"),
])
def test_a_bad_setting_is_refused_naming_it(ex, units, settings, argument):
    with pytest.raises(ExportError) as caught:
        export.selection_figures(ex, COHORT, units, settings)
    assert caught.value.argument == argument and str(caught.value).startswith(f"{argument}: expected ")


@pytest.mark.parametrize(("cohort", "units", "argument"), [
    ("../../x", [[0, 0]], "cohort"), (COHORT, [], "units"), (COHORT, [[99, 0]], "units"),
    (COHORT, [["0", "1"]], "units"), (COHORT, [[0, 1, 2]], "units"), (COHORT, "0,1", "units"),
])
def test_a_bad_selection_is_refused_naming_it(ex, cohort, units, argument, tmp_path):
    with pytest.raises(ExportError) as caught:
        export.export_selection(ex, cohort, units, tmp_path / "out", SETTINGS)
    assert caught.value.argument == argument
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("text", "name"), [
    ("../../x", "_x"), ("/etc/passwd", "_etc_passwd"), ("..", "_"), (".hidden", "hidden"), ("", "figure"),
    ("-rf", "rf"), ("Frontal_Inf_Orb_L", "Frontal_Inf_Orb_L"), ("a b/c\\d", "a_b_c_d"), ("x" * 300, "x" * 80),
])
def test_safe_names_are_plain_file_names(text, name):
    safe = export.safe_name(text)
    assert safe == name and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]*", safe) and ".." not in safe


def test_a_name_that_would_leave_the_folder_is_refused(tmp_path):
    for name in ("../x", "a/b", "..", ".x", ""):
        with pytest.raises(ExportError):
            export.inside(tmp_path, name)
    assert export.inside(tmp_path, "01_som_map.png") == tmp_path.resolve() / "01_som_map.png"


def _renamed(run, cohort: str, roi: str, new_cohort: str, new_roi: str):
    """The run with a cohort and an ROI renamed (as a study whose tables carry path-like names would have them)."""
    subjects = run.subjects.assign(cohort=run.subjects["cohort"].replace({cohort: new_cohort}))
    prototypes = {new_cohort if k == cohort else k: v for k, v in run.som.prototypes.items()}
    rename = {roi: new_roi}
    return dataclasses.replace(
        run, subjects=subjects, som=dataclasses.replace(run.som, prototypes=prototypes),
        roi_scores=run.roi_scores.rename(columns=rename), roi_percentiles=run.roi_percentiles.rename(columns=rename),
        roi_adjusted=None if run.roi_adjusted is None else run.roi_adjusted.rename(columns=rename),
        roi_labels={new_roi if k == roi else k: v for k, v in run.roi_labels.items()},
    )


def test_path_like_cohort_and_roi_names_cannot_write_outside_the_export(run, built, tmp_path, monkeypatch):
    figures, _ = built
    roi = next(f.details["pair"]["roi"] for n, f in figures.items() if n.startswith("scatter_"))
    evil = _renamed(run, COHORT, roi, "../../cohort", "../../../" + roi)
    ex = Explorer(evil)
    monkeypatch.setattr(export, "render_images", _fake_images)
    root = tmp_path / "a" / "b"
    root.mkdir(parents=True)
    out = root / "export"
    paths = export.export_selection(ex, "../../cohort", views.prototype_units(ex, "../../cohort"), out, SETTINGS)
    every = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    assert every == sorted(paths) and all(p.parent == out for p in paths)
    assert any("scatter" in p.name and roi in p.name for p in paths)
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+", p.name) and ".." not in p.name for p in paths)
    archive = zipfile.ZipFile(io.BytesIO(export.export_zip(ex, "../../cohort", [[0, 0]], SETTINGS)))
    folder = export.zip_name(ex, "../../cohort").removesuffix(".zip")
    assert "/" not in folder.strip("/") and ".." not in folder
    for name in archive.namelist():
        parts = name.split("/")
        assert len(parts) == 2 and parts[0] == folder and ".." not in name and not name.startswith("/")


# --- folders and files ----------------------------------------------------------------------------------------------


def test_each_figure_gets_its_images_csv_and_json(stub_export, built):
    out, paths = stub_export
    figures, _ = built
    assert sorted(paths) == sorted(out.iterdir())
    stems = {p.stem for p in paths if p.suffix == ".csv"}
    assert len(stems) == len(figures)
    for stem in stems:
        assert {p.suffix for p in paths if p.stem == stem} == {".png", ".svg", ".pdf", ".csv", ".json"}
    probe = out.parent / "probe"
    probe.mkdir()
    assert out.stat().st_mode & 0o777 == probe.stat().st_mode & 0o777  # an ordinary folder, not a private one


def test_each_csv_is_the_figures_data_and_each_json_names_the_run(stub_export, built, run, units):
    out, paths = stub_export
    figures, settings = built
    for name, item in figures.items():
        stem = _stem(paths, name)
        written = _csv(out / f"{stem}.csv")
        expected = item.data.reset_index(drop=True)
        assert list(written.columns) == list(expected.columns)
        for column in expected.columns:
            if pd.api.types.is_numeric_dtype(expected[column]) and not pd.api.types.is_bool_dtype(expected[column]):
                np.testing.assert_allclose(written[column].to_numpy(dtype=float),
                                           expected[column].to_numpy(dtype=float), rtol=0, atol=0)
            else:
                assert written[column].fillna("").astype(str).tolist() == \
                    expected[column].fillna("").astype(str).tolist()
        record = json.loads((out / f"{stem}.json").read_text(), parse_constant=_no_nan)  # strict JSON
        assert record["run_id"] == run.run_id and record["figure"]["name"] == name
        assert record["selection"]["cohort"] == COHORT and record["selection"]["units"] == units
        assert record["settings"]["correction"] == "bonferroni" and record["settings"]["alpha"] == 0.05
        assert record["settings"]["q"] == 0.1 and record["settings"]["roi_scores"] == "raw"
        assert record["settings"]["n_permutations"] == 200
        assert record["settings"]["crosshair"]["voxel"] == list(settings.crosshair)
        assert set(record["versions"]) == set(export.VERSIONED) and record["versions"]["plotly"]
        assert record["files"] == [f"{stem}.{s}" for s in ("png", "svg", "pdf", "csv", "json")]
        assert all((out / f).is_file() for f in record["files"])
    index = json.loads((out / "export.json").read_text())
    assert sorted(index["files"]) == sorted(p.name for p in paths) and index["run_id"] == run.run_id


def test_an_export_goes_to_a_new_folder_only(ex, units, stub_export, tmp_path):
    out, _ = stub_export
    with pytest.raises(ExportError) as caught:
        export.export_selection(ex, COHORT, units, out, SETTINGS)
    assert caught.value.argument == "out_dir"


def test_a_failed_export_leaves_nothing_behind(ex, units, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RenderError("roi_boxes.pdf: Kaleido could not render it")

    monkeypatch.setattr(export, "render_images", broken)
    with pytest.raises(RenderError):
        export.export_selection(ex, COHORT, units, tmp_path / "out", SETTINGS)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(export, "render_images", _fake_images)
    written = []
    real_inside = export.inside

    def fail_on_the_fifth(root, name):
        written.append(name)
        if len(written) == 5:
            raise OSError(28, "No space left on device")
        return real_inside(root, name)

    monkeypatch.setattr(export, "inside", fail_on_the_fifth)
    (tmp_path / "out").mkdir()  # an empty folder may be the target; it stays as it was
    with pytest.raises(OSError):
        export.export_selection(ex, COHORT, units, tmp_path / "out", SETTINGS)
    assert [p.name for p in tmp_path.iterdir()] == ["out"] and not any((tmp_path / "out").iterdir())


def test_the_zip_holds_the_same_files_in_one_folder(ex, units, stub_export, monkeypatch):
    out, paths = stub_export
    monkeypatch.setattr(export, "render_images", _fake_images)
    archive = zipfile.ZipFile(io.BytesIO(export.export_zip(ex, COHORT, units, SETTINGS)))
    folder = export.zip_name(ex, COHORT).removesuffix(".zip")
    assert sorted(archive.namelist()) == sorted(f"{folder}/{p.name}" for p in paths)
    stem = _stem(paths, "roi_boxes")
    assert archive.read(f"{folder}/{stem}.csv") == (out / f"{stem}.csv").read_bytes()


# --- real images (Chromium) -----------------------------------------------------------------------------------------


def test_the_images_open_at_the_figures_size(real_export, built):
    out, paths = real_export
    figures, _ = built
    for name, item in figures.items():
        stem = _stem(paths, name)
        width, height = item.figure.layout.width, item.figure.layout.height
        png = (out / f"{stem}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR"
        assert (int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")) == (
            width * export.PNG_SCALE, height * export.PNG_SCALE)
        svg = ET.parse(out / f"{stem}.svg").getroot()
        assert svg.tag == "{http://www.w3.org/2000/svg}svg"
        assert (float(svg.get("width")), float(svg.get("height"))) == (width, height)
        pdf = (out / f"{stem}.pdf").read_bytes()
        assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page(?![a-zA-Z])", pdf)) == 1
        box = [float(v) for v in re.search(rb"/MediaBox\s*\[([^\]]*)\]", pdf).group(1).split()]
        # 1 CSS px = 0.75 pt: a page for each figure's own size (pages are not left over from another figure)
        assert box[2] - box[0] == pytest.approx(0.75 * width, abs=1) and box[3] - box[1] == pytest.approx(
            0.75 * height, abs=1)
