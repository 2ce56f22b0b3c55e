"""The view state in the URL: a round trip restores the same view (and the same figures), anything a link names
that the run lacks is dropped and said, the run picker and the registry only open runs of the store."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
from dash import no_update

from analysis.demo.synthetic_run import write_synthetic_study
from analysis.runs.reader import open_run
from app import callbacks, ids, page, state, views
from app.layout import permutation_counts
from app.registry import RunRegistry


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return open_run(write_synthetic_study(tmp_path_factory.mktemp("state") / "study", 240, seed=3))


@pytest.fixture(scope="module")
def registry(run):
    return RunRegistry(run)


@pytest.fixture(scope="module")
def ex(registry):
    return registry.first


def _restore(ex, fragment):
    return state.restore(ex, fragment, callbacks.default_state(ex), permutation_counts(ex.refresh_permutations()))


def _changed_state(ex) -> dict:
    """A view state unlike the default in every field the URL carries."""
    default = callbacks.default_state(ex)
    other = next(c for c in ex.run.cohorts if c != default["cohort"])
    roi = next(iter(ex.run.roi_labels))
    return {**default, "tab": "sweep", "cohort": other, "units": [[0, 1], [2, 3]], "scores": "raw",
            "correction": "bh", "alpha": "0.1", "q": "0.2", "permutations": "1000", "voxel": [1, 2, 3],
            "plane": "coronal", "roi": roi, "pair": [roi, ex.run.behaviour.columns[0]],
            "subject": ex.run.subjects.index[5]}


def test_a_url_round_trip_restores_every_field(ex):
    target = _changed_state(ex)
    fragment = state.encode(target)
    assert fragment.startswith("#tab=sweep&cohort=")
    restored, problems = _restore(ex, fragment)
    assert problems == []
    assert restored == target


def test_a_sweep_grid_survives_the_round_trip(ex):
    target = {**callbacks.default_state(ex), "grid": {"rows": 5, "cols": 6, "topology": "rectangular"},
              "units": [[4, 5]]}
    restored, problems = _restore(ex, state.encode(target))
    assert problems == [] and restored["grid"] == target["grid"] and restored["units"] == [[4, 5]]
    # a unit of the 5 x 6 map is checked against that map, not the run's 7 x 9 one
    restored, problems = _restore(ex, "#grid=5x6r&units=6.8")
    assert restored["units"] != [[6, 8]] and problems and problems[0].startswith("units")


def test_the_restored_page_draws_the_same_figures_as_the_live_callbacks(ex, registry):
    """A link opens the page the sender saw: the page built from the decoded URL equals the figures the callbacks
    draw for that state."""
    target = _changed_state(ex)
    restored, _ = _restore(ex, state.encode(target))
    first = page.initial(ex, registry, restored)
    selection = {"cohort": target["cohort"], "units": target["units"], "grid": None}
    crosshair = {"voxel": target["voxel"], "roi": target["roi"], "plane": target["plane"], "moved": []}
    rois, _, regions, _ = callbacks.update_regions(ex, selection, "bh", "0.1", "10", "raw", crosshair,
                                                   target["subject"])
    assert first["rois"].to_plotly_json() == rois.to_plotly_json()
    assert first["regions"] == regions
    slices = callbacks.draw_slices(ex, None, selection, crosshair,
                                   callbacks.SliceControls(2.0, 0.85, False, "auto", 3), target["subject"])
    for drawn, restored_slice in zip(slices[:3], first["slices"], strict=True):
        assert np.array_equal(np.asarray(drawn.data[1].z, dtype=float), np.asarray(restored_slice.data[1].z,
                                                                                     dtype=float), equal_nan=True)


def test_a_link_naming_unknown_things_keeps_the_defaults_and_says_so(ex):
    default = callbacks.default_state(ex)
    restored, problems = _restore(ex, "#cohort=../../etc&units=99.99&alpha=0.5&voxel=1.2&subject=nobody&tab=x"
                                      "&pair=a~b&roi=Nowhere&grid=100x3")
    assert {p.split(" ")[0] for p in problems} == {"cohort", "units", "alpha", "voxel", "subject", "tab", "pair",
                                                   "roi", "grid"}
    assert restored == default


def test_sync_and_render_do_not_loop(ex, registry):
    """The page's own fragment update redraws nothing; a Back to another state redraws the page."""
    default = callbacks.default_state(ex)
    selection = {"cohort": default["cohort"], "units": default["units"], "grid": None}
    crosshair = {"voxel": default["voxel"], "roi": None, "plane": "axial", "moved": []}
    fragment, shown = callbacks.sync_url(ex, selection, crosshair, default["scores"], "bonferroni", "0.05", "0.1",
                                         default["permutations"], "explore", None, None)
    assert shown == default
    built = []
    out = callbacks.render(registry, "", fragment, shown, ex.run.run_id, lambda e, s: built.append(s) or ["page"])
    assert out[:3] == (no_update, no_update, no_update) and not built
    out = callbacks.render(registry, "", "", shown, ex.run.run_id, lambda e, s: ["page"])
    assert out[:3] == (no_update, no_update, no_update)  # the plain address is the default view
    other = _changed_state(ex)
    out = callbacks.render(registry, "", state.encode(other), shown, ex.run.run_id, lambda e, s: ["page", s])
    assert out[0] == ["page", other] and out[2] == other and out[3] is False


def test_render_refuses_a_run_the_store_lacks(registry, ex):
    out = callbacks.render(registry, "?run=../../x", "", None, ex.run.run_id, lambda e, s: ["page"])
    assert out[:3] == (no_update, no_update, no_update) and out[3] is True and "not a published run" in out[4]
    assert registry.explorer("20990101T000000Z-deadbeef") is None
    assert registry.explorer(["not", "a", "string"]) is None


def test_another_run_of_the_store_opens_from_the_picker(run, tmp_path):
    """A second run published into the store is listed newest first, opens by id, and the newer-run notice
    names it."""
    root = tmp_path / "runs"
    shutil.copytree(run.run_dir.parent, root, symlinks=True)
    first = open_run(run.study.manifest.path)
    first = type(first)(**{**first.__dict__, "run_dir": root / run.run_id})
    newer = "20991231T235959Z-0123abcd"
    shutil.copytree(root / run.run_id, root / newer)
    (root / "latest").write_text(newer + "\n")
    registry = RunRegistry(first)
    assert registry.run_ids()[0] == newer and registry.latest_id() == newer
    other = registry.explorer(newer)
    assert other is not None and other.run.run_id == newer and other.run.run_dir == root / newer
    assert callbacks.pick_run(registry, newer, run.run_id, "autism") == (f"?run={newer}", "#tab=explore&cohort=autism")
    assert callbacks.pick_run(registry, "20000101T000000Z-00000000", run.run_id, "autism") == (no_update, no_update)
    is_open, children = callbacks.newer_run(registry, 1, run.run_id)
    assert is_open is True and newer in children[0].children and children[1].href == f"?run={newer}"
    assert callbacks.newer_run(registry, 1, newer) == (False, no_update)


def test_a_sweep_cell_shows_that_grids_map_with_its_prototype(ex):
    current = {"cohort": callbacks.default_state(ex)["cohort"], "units": [[0, 0]], "grid": None}
    click = {"points": [{"customdata": [5, 6], "z": 3}]}
    chosen = callbacks.choose_selection(ex, ids.SWEEP_GRAPH, current["cohort"], None, current, click)
    assert chosen["grid"] == {"rows": 5, "cols": 6, "topology": "rectangular"}
    fitted = ex.map((5, 6, "rectangular"))
    assert chosen["units"] == [fitted.som.prototypes[current["cohort"]]["unit"]]
    inside, _ = views.cohort_members(ex, current["cohort"], chosen["units"], (5, 6, "rectangular"))
    assert sorted(inside) == sorted(fitted.som.prototypes[current["cohort"]]["members"])
    figure = callbacks.draw_som(ex, chosen, "u_matrix")
    assert "5 × 6" in figure.layout.title.text
    back = callbacks.choose_selection(ex, ids.RUN_MAP, current["cohort"], None, chosen)
    assert back["grid"] is None and back["units"] == views.prototype_units(ex, current["cohort"])
    assert callbacks.choose_selection(ex, ids.SWEEP_GRAPH, None, None, current,
                                      {"points": [{"customdata": [1, 99]}]}) is no_update


def test_a_browsers_click_on_a_sweep_cell_names_its_grid_by_position(run, tmp_path):
    """Dash's Graph sends a heatmap click without its customdata (only x, y, z): the cell's positions on the sweep's
    lattice name the grid, as :func:`app.figures.sweep.sweep_figure` lays it out (sizes sorted, gaps closed)."""
    from analysis.exploration.sweep import SweepGrids, grid_stability_sweep
    from analysis.runs import layout as run_layout
    from analysis.runs.store import write_table
    from app.views import Explorer

    shutil.copytree(run.run_dir, tmp_path / run.run_id, symlinks=True)
    copy = dataclasses.replace(run, run_dir=tmp_path / run.run_id)
    ex = Explorer(copy)
    cohort = callbacks.default_state(ex)["cohort"]
    current = {"cohort": cohort, "units": [[0, 0]], "grid": None}
    click = {"points": [{"curveNumber": 0, "x": 1, "y": 0, "z": 9}]}  # as the browser sends it
    assert callbacks.choose_selection(ex, ids.SWEEP_GRAPH, cohort, None, current, click) is no_update  # no sweep
    labels = copy.subjects["cohort"].to_numpy()
    table = grid_stability_sweep(copy.score_norms.to_numpy(dtype=float), labels, cohort,
                                 reference=labels == copy.reference_cohort, grids=SweepGrids(rows=[4, 6], cols=[3, 5]),
                                 n_jobs=1, progress=False)
    table["members"] = [[str(copy.subjects.index[i]) for i in m] for m in table["members"]]
    write_table(copy.run_dir / run_layout.sweep_file(cohort), table)
    chosen = callbacks.choose_selection(ex, ids.SWEEP_GRAPH, cohort, None, current, click)
    assert chosen["grid"] == {"rows": 4, "cols": 5, "topology": "rectangular"}  # position (0, 1): 4 rows, 5 columns
    assert chosen["units"] == views.prototype_units(ex, cohort, (4, 5, "rectangular"))
    figure = views.sweep_view(ex, cohort, (4, 5, "rectangular"))
    cell = figure.data[0].customdata[click["points"][0]["y"]][click["points"][0]["x"]]
    assert list(cell[:2]) == [4, 5]  # what the hover shows for that cell
    for point in ({"x": 2, "y": 0}, {"x": -1, "y": 0}, {"x": 0.5, "y": 0}, {"x": True, "y": 0}, {"y": 1}, "4,5"):
        assert callbacks.choose_selection(ex, ids.SWEEP_GRAPH, cohort, None, current, {"points": [point]}) is no_update


def test_a_found_subject_is_marked_in_the_map_the_box_plots_and_the_scatter(ex):
    default = callbacks.default_state(ex)
    cohort = default["cohort"]
    selection = {"cohort": cohort, "units": default["units"], "grid": None}
    sid = ex.run.som.prototypes[cohort]["members"][0]
    som = callbacks.draw_som(ex, selection, "u_matrix", sid)
    ring = next(t for t in som.data if t.name == f"subject {sid}")
    r, c = ex.run.subjects.loc[sid, ["bmu_row", "bmu_col"]].astype(int)
    assert list(ring.customdata[0]) == [r, c]
    rois, _, regions, _ = callbacks.update_regions(ex, selection, "bonferroni", "0.05", "10", default["scores"],
                                                   None, sid)
    star = next(t for t in rois.data if t.name == f"subject {sid}")
    table = ex.roi_table(default["scores"])
    assert np.allclose(np.asarray(star.x, dtype=float), table.loc[sid, list(star.y)].to_numpy(dtype=float))
    assert callbacks.draw_som(ex, selection, "u_matrix", "../../etc/passwd").data[-1].name != "subject ../../etc/passwd"
    header, profile, chart, grid = callbacks.subject_room(ex, sid, default["scores"])
    assert sid in header and cohort in header
    assert profile.layout.title.text.startswith(sid) and sid in chart.layout.title.text
    assert grid[1].rowData and grid[1].rowData[0]["rank"] == 1
    empty = callbacks.subject_room(ex, None, default["scores"])
    assert "Find a subject" in empty[0] and "No subject chosen." in empty[3][0].children


def test_the_export_button_renders_the_selection_in_the_background_and_hands_over_one_zip(ex, monkeypatch):
    """The browser's export: a job per click, progress in the notice, the zip once; a second click on the same
    selection while it runs is refused; a sweep grid's selection is exported on that grid's map."""
    import io
    import threading
    import zipfile

    import app.export as export
    from app.jobs import ExportJobs

    gate = threading.Event()
    grids = []

    def fake_zip(run, cohort, units, settings, on_figure=None, grid=None):
        grids.append(grid)
        on_figure(1, 2, "som")
        gate.wait(10)
        on_figure(2, 2, "slices")
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("x/export.json", "{}")
        return buffer.getvalue()

    monkeypatch.setattr(export, "export_zip", fake_zip)
    default = callbacks.default_state(ex)
    selection = {"cohort": default["cohort"], "units": default["units"], "grid": None}
    crosshair = {"voxel": default["voxel"], "roi": None, "plane": "axial", "moved": []}
    exports = ExportJobs()
    values = (1, selection, "bonferroni", "0.05", "0.1", default["scores"], default["permutations"], crosshair)
    job, poll_off, is_open, text = callbacks.start_export(ex, exports, *values)
    assert poll_off is False and is_open is True and "exporting" in text
    refused = callbacks.start_export(ex, exports, *values)
    assert refused[0] is no_update and "already" in refused[3]
    running = callbacks.poll_export(ex, exports, 1, job)
    assert running[0] is no_update and running[1] is False and "1 of 2 figures" in running[3]
    gate.set()
    exports._jobs[job["job"]].thread.join(10)
    done, poll_off, _, text = callbacks.poll_export(ex, exports, 2, job)
    assert poll_off is True and done == job["job"] and "2 figures" in text
    download = callbacks.send_export(ex, exports, done)
    assert download["filename"].endswith(".zip") and download["base64"] is True
    assert callbacks.send_export(ex, exports, done) is no_update  # handed over once
    on_grid = {**selection, "grid": {"rows": 5, "cols": 6, "topology": "rectangular"}, "units": [[0, 0]]}
    job, poll_off, is_open, text = callbacks.start_export(ex, exports, 1, on_grid, *values[2:])
    assert poll_off is False and is_open is True and "exporting" in text and "5 × 6 rectangular map" in text
    exports._jobs[job["job"]].thread.join(10)
    assert grids == [None, (5, 6, "rectangular", "msma")]  # the run's map, then the grid's
    assert exports.status(job["job"])["name"].endswith("_5x6.zip")
