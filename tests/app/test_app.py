"""The explorer without a browser: figure builders through ``fig.to_dict()`` against the run's own numbers, and the
callbacks called as plain functions (a synthetic published run on a toy grid)."""

from __future__ import annotations

import base64

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from dash import Patch, no_update
from scipy.stats import rankdata

from analysis.demo.synthetic_run import write_synthetic_study
from analysis.exploration.cohort_analysis import behaviour_table, region_step
from analysis.exploration.power import detectable_effect
from analysis.exploration.slices import PLANES
from analysis.exploration.som import unit_positions
from analysis.runs.reader import open_run
from app import callbacks, create_app, default_cohort, ids, views
from app.callbacks import SliceControls
from app.figures.som import MapLayer, PrototypeMarker, som_figure
from app.style import cohort_styles
from app.views import Explorer


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return open_run(write_synthetic_study(tmp_path_factory.mktemp("app") / "study", 240, seed=1))


@pytest.fixture(scope="module")
def ex(run):
    return Explorer(run)


@pytest.fixture(scope="module")
def cohort(run):
    return default_cohort(run)


@pytest.fixture
def selection(ex, cohort):
    return callbacks.choose_selection(ex, ids.COHORT, cohort, None, None)


def _array(value) -> np.ndarray:
    """A figure array as the browser receives it: plotly serialises numpy arrays as base64 typed arrays."""
    if isinstance(value, dict) and "bdata" in value:
        shape = [int(n) for n in str(value.get("shape", "-1")).split(",")]
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"])).reshape(shape)
    return np.asarray(value)


def _crosshair(ex, voxel=None, roi=None):
    return {"voxel": voxel or [s // 2 for s in ex.geometry.shape], "roi": roi, "plane": "axial", "moved": []}


def test_the_explorer_opens_on_the_most_concentrated_prototype(run, cohort):
    shares = {c: p["size"] / p["cohort_size"] for c, p in run.som.prototypes.items() if c != run.reference_cohort}
    assert cohort == max(shares, key=shares.get) == "down_syndrome"


# --- figures -------------------------------------------------------------------------------------------------------


def test_som_figure_draws_the_runs_u_matrix_and_prototypes_sized_by_member_count(ex, run, selection):
    fig = callbacks.draw_som(ex, selection, "u_matrix").to_dict()
    heatmap = next(t for t in fig["data"] if t["type"] == "heatmap")
    np.testing.assert_array_equal(_array(heatmap["z"]), run.som.u_matrix)
    markers = {t["legendgroup"]: t for t in fig["data"] if t.get("legendgroup")}
    assert set(markers) == set(run.som.prototypes)
    styles = cohort_styles(run.cohorts)
    for name, prototype in run.som.prototypes.items():
        assert list(markers[name]["marker"]["size"]) == [prototype["size"]]
        assert markers[name]["marker"]["color"] == styles[name].color
        assert markers[name]["marker"]["symbol"] == styles[name].symbol
        assert markers[name]["customdata"] == [list(prototype["unit"])]
    units = next(t for t in fig["data"] if t.get("name") == "units")
    assert len(units["customdata"]) == run.som.n_rows * run.som.n_cols and isinstance(units["customdata"], list)
    outlined = [s for s in fig["layout"]["shapes"] if s["type"] == "rect"]
    r, c = selection["units"][0]
    assert {(s["x0"] + 0.5, s["y0"] + 0.5) for s in outlined} == {(c, r)}


def test_hit_map_counts_the_chosen_cohorts_members_per_unit(ex, run, selection, cohort):
    fig = callbacks.draw_som(ex, selection, "hits").to_dict()
    z = _array(next(t for t in fig["data"] if t["type"] == "heatmap")["z"])
    members = run.subjects[run.subjects["cohort"] == cohort]
    expected = np.zeros_like(z)
    np.add.at(expected, (members["bmu_row"].to_numpy(), members["bmu_col"].to_numpy()), 1)
    np.testing.assert_array_equal(z, expected)
    assert z.sum() == len(members)


def test_a_hexagonal_map_is_drawn_as_minisom_places_its_units():
    values = np.arange(12, dtype=float).reshape(3, 4)
    positions = unit_positions(3, 4, "hexagonal")
    style = cohort_styles(["a"])["a"]
    fig = som_figure(MapLayer(values, "U", "Greys"), positions, "hexagonal",
                     [PrototypeMarker("a", (1, 2), 5, 9, style)], np.full((3, 4), "t"), [(1, 2)], "title").to_dict()
    cells = [s for s in fig["layout"]["shapes"] if s.get("fillcolor")]
    assert len(cells) == 12
    units = next(t for t in fig["data"] if t.get("name") == "units")
    np.testing.assert_allclose(_array(units["x"]), positions[0].ravel())
    np.testing.assert_allclose(_array(units["y"]), positions[1].ravel())
    np.testing.assert_array_equal(_array(units["marker"]["color"]), values.ravel())  # the colour bar's scale
    outline = [s for s in fig["layout"]["shapes"] if not s.get("fillcolor")]
    assert len(outline) == 2 and all(s["type"] == "path" for s in outline)


def test_the_three_slices_share_one_colour_range_and_show_the_selections_mean(ex, run, selection, cohort):
    voxel = [10, 12, 9]
    out = callbacks.draw_slices(ex, None, selection, _crosshair(ex, voxel),
                                SliceControls(0.0, 0.8, False, "auto", None))
    slices, colorbar, note = out[:3], out[3], out[4]
    overlays = [fig.to_dict()["data"][1] for fig in slices]
    ranges = {(o["zmin"], o["zmax"]) for o in overlays}
    assert len(ranges) == 1
    lo, hi = ranges.pop()
    assert lo == -hi and hi > 0
    bar = colorbar.to_dict()["data"][0]
    assert (bar["zmin"], bar["zmax"]) == (lo, hi)
    inside, _ = views.cohort_members(ex, cohort, selection["units"])
    mean = np.asarray(run.heatmaps[sorted(run.row_of[i] for i in inside)], dtype=np.float64).mean(axis=0)
    np.testing.assert_allclose(_array(overlays[0]["z"]), mean[:, :, voxel[2]].T, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(_array(overlays[2]["z"]), mean[voxel[0], :, :].T, rtol=1e-5, atol=1e-6)
    assert f"{len(inside)} {cohort}" in note
    fixed = callbacks.draw_slices(ex, None, selection, _crosshair(ex, voxel),
                                  SliceControls(1.5, 0.8, False, "fixed", 4))
    overlay = fixed[0].to_dict()["data"][1]
    assert (overlay["zmin"], overlay["zmax"]) == (-4.0, 4.0)
    z = _array(overlay["z"])
    assert np.isfinite(z).any() and np.all(np.isnan(z) | (np.abs(z) >= 1.5))


@pytest.mark.parametrize("radiological", [False, True], ids=["neurological", "radiological"])
def test_orientation_letters_and_axes_in_both_conventions(ex, selection, radiological):
    slices = callbacks.draw_slices(ex, None, selection, _crosshair(ex),
                                   SliceControls(0.0, 0.8, radiological, "auto", None))[:3]
    for plane, fig in zip(ids.PLANES, slices, strict=True):
        layout = fig.to_dict()["layout"]
        letters = {(a["x"], a["y"]): a["text"] for a in layout["annotations"]}
        left, right = letters[(0.0, 0.5)], letters[(1.0, 0.5)]
        if plane == "sagittal":
            assert (left, right) == ("P", "A") and layout["xaxis"]["autorange"] is True
        elif radiological:
            assert (left, right) == ("R", "L") and layout["xaxis"]["autorange"] == "reversed"
        else:
            assert (left, right) == ("L", "R") and layout["xaxis"]["autorange"] is True
        # world x still ascends along the data: a click's coordinate names the same voxel in both conventions
        assert np.all(np.diff(_array(fig.to_dict()["data"][0]["x"])) > 0)
    x_mm = float(ex.geometry.coordinates(0)[3])
    clicked = callbacks.move_crosshair(ex, ids.SLICE_GRAPHS["axial"], {"axial": {"points": [{"x": x_mm, "y": 0.0}]}},
                                       None, None, _crosshair(ex), selection)
    assert clicked["voxel"][0] == 3 and ex.geometry.world(clicked["voxel"])[0] == pytest.approx(x_mm)


def test_box_plot_points_are_the_selections_roi_scores_with_the_reference_percentile(ex, run, selection, cohort):
    figure, style, store, _ = callbacks.update_regions(ex, selection, "bonferroni", "0.05", "10", "raw", None)
    fig = figure.to_dict()
    assert store["significant"], "the planted regions differ"
    inside, rest = views.cohort_members(ex, cohort, selection["units"])
    boxes = [t for t in fig["data"] if t["type"] == "box"]
    assert [b["boxpoints"] for b in boxes] == ["all", "all", "outliers"]
    for trace, members in ((boxes[0], inside), (boxes[1], rest), (boxes[2], run.reference_ids)):
        for roi in store["shown"]:
            drawn = np.sort(_array(trace["x"])[np.asarray(trace["y"]) == roi])
            np.testing.assert_allclose(drawn, np.sort(run.roi_scores.loc[members, roi].to_numpy()))
    p90 = run.roi_scores.loc[run.reference_ids].quantile(0.9)
    lines = [s for s in fig["layout"]["shapes"] if s["type"] == "line"]
    order = store["shown"][::-1]
    for line in lines:
        roi = order[round((line["y0"] + line["y1"]) / 2)]
        assert line["x0"] == pytest.approx(p90[roi]) and line["line"]["dash"] == "dash"
    assert len(lines) == len(store["shown"]) and style == {"height": f"{views.roi_height(len(store['shown']))}px"}


def test_adjusted_scores_covariate_balance_and_power_beside_the_regions(ex, run, selection, cohort):
    figure, _, store, summary = callbacks.update_regions(ex, selection, "bonferroni", "0.05", "10", "adjusted",
                                                         None)
    assert store["scores"] == "adjusted"
    members, rest = views.cohort_members(ex, cohort, selection["units"])
    step = region_step(run.roi_adjusted, run.reference_ids, run.cohort_ids(cohort), members)
    assert store["significant"] == step.significant_rois
    if step.significant_rois:
        roi = store["shown"][0]
        trace = next(t for t in figure.data if t.name.startswith("selection"))
        drawn = np.sort(np.asarray(trace.x)[np.asarray(trace.y) == roi])
        np.testing.assert_allclose(drawn, np.sort(run.roi_adjusted.loc[members, roi].to_numpy()))
        assert "z vs normative prediction" in figure.layout.xaxis.title.text
    expected = detectable_effect(len(members), len(rest), len(step.kept_rois)).sentence
    shown = [figure.layout.title.subtitle.text or "", *(a.text for a in figure.layout.annotations)]
    assert expected in " ".join(text.replace("<br>", " ") for text in shown)
    text = str(summary)
    assert "age: Mann-Whitney U p = " in text and "sex: Fisher exact p = " in text


def test_correlation_heatmap_equals_the_correlation_table(ex, run, selection, cohort):
    _, _, regions, _ = callbacks.update_regions(ex, selection, "bonferroni", "0.05", "10", "raw", None)
    fig, style, note = callbacks.update_correlations(ex, regions, "0.1", "1000", "full")
    expected = behaviour_table(run.roi_scores, run.behaviour, run.cohort_ids(cohort), regions["significant"],
                               n_permutations=1000, random_state=ex.seed).result().table
    heatmap = fig.to_dict()["data"][0]
    rho = expected.pivot(index="roi", columns="behaviour", values="rho").loc[heatmap["y"], heatmap["x"]]
    np.testing.assert_allclose(_array(heatmap["z"]), rho.to_numpy())
    assert heatmap["zmid"] == 0 and (heatmap["zmin"], heatmap["zmax"]) == (-1, 1)
    ringed = fig.to_dict()["data"][1]
    hits = expected[expected["testable"] & (expected["p_bh"] < 0.1)]
    assert sorted(zip(ringed["x"], ringed["y"], strict=True)) == sorted(zip(hits["behaviour"], hits["roi"],
                                                                            strict=True))
    assert "1/(P+1) = 0.001" in note
    assert callbacks.update_correlations(ex, regions, "0.1", "2000", "full") == (no_update,) * 3  # not offered
    only, _, _ = callbacks.update_correlations(ex, regions, "0.1", "1000", "significant")
    if len(hits):
        z = _array(only.to_dict()["data"][0]["z"])
        assert np.isfinite(z).sum() == len(hits)


def test_a_cells_scatter_has_the_pairs_values_coloured_by_membership(ex, run, selection, cohort):
    _, _, regions, _ = callbacks.update_regions(ex, selection, "bonferroni", "0.05", "10", "raw", None)
    roi, behaviour = regions["significant"][0], run.behaviour.columns[0]
    click = {"points": [{"x": behaviour, "y": roi, "z": 0.3, "curveNumber": 0}]}
    is_open, fig = callbacks.open_scatter(ex, ids.CORRELATION_GRAPH, click, "raw", selection, regions, 1000, False)
    assert is_open
    data = fig.to_dict()["data"]
    members = [i for i in run.cohort_ids(cohort) if i in run.behaviour.index]
    both = run.roi_scores.loc[members, roi].notna() & run.behaviour.loc[members, behaviour].notna()
    inside = set(views.selected_ids(ex, selection["units"]))
    chosen = [i for i in both.index[both] if i in inside]
    assert sorted(data[0]["customdata"]) == sorted(chosen)
    np.testing.assert_allclose(np.sort(_array(data[0]["x"])), np.sort(run.roi_scores.loc[chosen, roi]))
    assert data[2]["mode"] == "lines"
    _, ranked = callbacks.open_scatter(ex, ids.SCATTER_VIEW, click, "rank", selection, regions, 1000, True)
    xs = np.concatenate([_array(ranked.to_dict()["data"][k]["x"]) for k in (0, 1)])
    np.testing.assert_allclose(np.sort(xs), np.sort(rankdata(run.roi_scores.loc[both.index[both], roi])))


# --- callbacks ------------------------------------------------------------------------------------------------------


def _layout_ids(component) -> set[str]:
    found = set()
    stack = [component]
    while stack:
        node = stack.pop()
        if isinstance(node, list | tuple):
            stack.extend(node)
            continue
        if getattr(node, "id", None):
            found.add(node.id)
        for attribute in ("children",):
            child = getattr(node, attribute, None)
            if child is not None and not isinstance(child, str | int | float):
                stack.append(child)
        for prop in getattr(node, "_prop_names", []):
            value = getattr(node, prop, None)
            if prop != "children" and hasattr(value, "_prop_names"):
                stack.append(value)
    return found


def test_every_callback_input_and_output_id_exists_in_the_layout(run):
    app = create_app(run)
    present = _layout_ids(app.layout)
    used = set()
    for key, spec in app.callback_map.items():
        used |= {item["id"] for item in spec["inputs"] + spec["state"]}
        used |= {part.split(".")[0] for part in key.strip(".").split("...")}
    assert used and used <= present, sorted(used - present)


def test_selecting_the_chains_prototype_reproduces_the_runs_roi_tests(ex, run, cohort, selection):
    """The explorer starts from the units of the prototype the refresh's chain tested (the enriched patch, which
    holds the maximal prototype's unit when that one is enriched), and its live chain gives the stored tests."""
    subgroup = run.som.prototypes[cohort]["subgroup"]
    assert subgroup["definition"] == "enriched"
    assert selection == {"cohort": cohort, "units": subgroup["units"], "grid": None}
    inside, _ = views.cohort_members(ex, cohort, selection["units"])
    assert sorted(inside) == sorted(subgroup["members"])
    assert run.default_roi_scores == "adjusted"  # the synthetic study has the default covariates, age and sex
    step = views.regions(ex, cohort, selection["units"], "bonferroni", 0.05, run.default_roi_scores)
    stored = run.roi_tests[run.roi_tests["cohort"] == cohort].reset_index(drop=True)
    pd.testing.assert_frame_equal(step.tests.reset_index(drop=True), stored[step.tests.columns], check_dtype=False)
    assert step.significant_rois == run.record["hypotheses"][cohort]["significant_rois"]


def test_choosing_a_cohort_or_units(ex, run, selection):
    other = next(c for c in run.cohorts if c != selection["cohort"])
    assert callbacks.choose_selection(ex, ids.COHORT, other, None, selection) == {
        "cohort": other, "units": (run.som.prototypes[other].get("subgroup") or {}).get(
            "units", [list(run.som.prototypes[other]["unit"])]), "grid": None}
    picked = {"points": [{"curveNumber": 1, "customdata": [0, 1]}, {"curveNumber": 1, "customdata": [2, 3]},
                         {"curveNumber": 4, "customdata": [0, 1]}]}
    assert callbacks.choose_selection(ex, ids.SOM_GRAPH, other, picked, selection) == {
        "cohort": selection["cohort"], "units": [[0, 1], [2, 3]], "grid": None}
    assert callbacks.choose_selection(ex, ids.SOM_GRAPH, other, {"points": []}, selection) is no_update
    assert callbacks.choose_selection(ex, ids.COHORT, "no such cohort", None, selection) is no_update


def test_the_crosshair_follows_clicks_rois_the_peak_and_keys(ex, run, selection):
    start = _crosshair(ex, [5, 6, 7])
    roi = run.roi_scores.columns[0]
    moved = callbacks.move_crosshair(ex, ids.ROI_GRAPH, {}, {"points": [{"y": roi, "x": 1.0}]}, None, start,
                                     selection)
    assert moved["roi"] == roi and run.study.atlas_labels[tuple(moved["voxel"])] == run.roi_labels[roi]
    assert moved["moved"] == list(ids.PLANES)
    inside, _ = views.cohort_members(ex, selection["cohort"], selection["units"])
    mean = views.mean_volume(ex, inside)
    peak = callbacks.move_crosshair(ex, ids.PEAK, {}, None, None, start, selection)
    assert mean[tuple(peak["voxel"])] == np.nanmax(mean)
    key = callbacks.move_crosshair(ex, ids.KEYS, {}, None, {"step": 1, "plane": "coronal", "count": 1}, start,
                                   selection)
    assert key["voxel"] == [5, 7, 7] and key["moved"] == ["coronal"] and key["plane"] == "coronal"
    assert callbacks.move_crosshair(ex, ids.SLICE_GRAPHS["axial"], {"axial": None}, None, None, start,
                                    selection) is no_update


def test_a_crosshair_move_patches_the_slices_instead_of_redrawing_them(ex, selection):
    crosshair = {"voxel": [5, 7, 7], "roi": None, "plane": "coronal", "moved": ["coronal"]}
    out = callbacks.draw_slices(ex, ids.CROSSHAIR, selection, crosshair, SliceControls(1.0, 0.8, False, "auto", None))
    assert all(isinstance(p, Patch) for p in out[:3]) and out[3] is no_update and out[4] is no_update
    coronal = out[1].to_plotly_json()["operations"]
    axial = out[0].to_plotly_json()["operations"]
    assert any(op["location"][:2] == ["data", 0] for op in coronal)  # the coronal cut moved: its data are new
    assert all(op["location"][0] == "layout" for op in axial)  # the axial one only moves its crosshair lines


def test_honest_empty_states(ex, run, cohort):
    empty_units = [[r, c] for r in range(run.som.n_rows) for c in range(run.som.n_cols)
                   if not views.cohort_members(ex, cohort, [[r, c]])[0]][:1]
    selection = {"cohort": cohort, "units": empty_units}
    figure, _, store, summary = callbacks.update_regions(ex, selection, "bonferroni", "0.05", "10", "raw", None)
    text = figure.to_dict()["layout"]["annotations"][0]["text"]
    assert f"No member of {cohort} in the selection" in text and store["significant"] == []
    fig, _, _ = callbacks.update_correlations(ex, store, "0.1", "1000", "full")
    assert "No significant ROI" in fig.to_dict()["layout"]["annotations"][0]["text"]
    note = callbacks.draw_slices(ex, None, selection, _crosshair(ex), SliceControls(1.0, 0.8, False, "auto", None))[4]
    assert note.startswith(f"No {cohort} subject in the selection")
    assert isinstance(figure, go.Figure)


def test_the_live_chain_is_the_analysis_modules_own(ex, run, selection, cohort):
    """The region step of any selection is :func:`analysis.exploration.cohort_analysis.region_step` on the selection's
    ids."""
    units = selection["units"] + [[0, 0], [run.som.n_rows - 1, run.som.n_cols - 1]]
    step = views.regions(ex, cohort, units, "bh", 0.1)
    direct = region_step(run.roi_scores, run.reference_ids, run.cohort_ids(cohort), views.selected_ids(ex, units),
                         alpha=0.1, correction="bh")
    pd.testing.assert_frame_equal(step.tests, direct.tests)
    flat = [r * run.som.n_cols + c for r, c in units]
    expected = run.subjects.index[np.isin(run.subjects["bmu_row"] * run.som.n_cols + run.subjects["bmu_col"],
                                          flat)]
    assert views.selected_ids(ex, units) == expected.tolist()
    assert PLANES["axial"][2] == 2


def test_values_the_layout_does_not_offer_are_ignored(ex, run, selection):
    crosshair = _crosshair(ex)
    assert callbacks.update_regions(ex, selection, "holm", "0.05", "10", "raw", None) == (no_update,) * 4
    assert callbacks.update_regions(ex, selection, "bonferroni", "0.5", "10", "raw", None) == (no_update,) * 4
    assert callbacks.update_regions(ex, {"cohort": "nobody", "units": []}, "bonferroni", "0.05", "10",
                                    "raw", None) == (no_update,) * 4
    assert callbacks.update_regions(ex, selection, "bonferroni", "0.05", "10", "../etc", None) == (no_update,) * 4
    off_map = {"cohort": selection["cohort"], "units": [[0, run.som.n_cols]]}
    assert callbacks.draw_som(ex, off_map, "u_matrix") is no_update
    picked = {"points": [{"customdata": [0, run.som.n_cols]}, {"customdata": [-1, 0]}, {"customdata": "x"}, 7]}
    assert callbacks.choose_selection(ex, ids.SOM_GRAPH, selection["cohort"], picked, selection) is no_update
    outside = {**crosshair, "voxel": [999, 0, 0]}
    assert callbacks.move_crosshair(ex, ids.PEAK, {}, None, None, outside, selection) is no_update
    assert callbacks.move_crosshair(ex, ids.KEYS, {}, None, {"step": 40, "plane": "axial"}, crosshair,
                                    selection) is no_update
    assert callbacks.draw_slices(ex, None, selection, outside,
                                 SliceControls(1, 0.8, False, "auto", 3)) == (no_update,) * 5
    assert callbacks.update_correlations(ex, {"cohort": selection["cohort"], "significant": ["not an ROI"]}, "0.1",
                                         "1000", "full") == (no_update,) * 3
    assert callbacks.open_scatter(ex, ids.CORRELATION_GRAPH, {"points": [{"x": 1, "y": 2, "z": 3}]}, "raw",
                                  selection, {"cohort": selection["cohort"], "significant": []}, None,
                                  False) == (no_update, no_update)
