"""The explorer on a run with GNSM norms (a manifest's gnsm: block): the map fitted on the score and GNSM norms,
its place in the URL, its export, and the GNSM score in the selection summary."""

from __future__ import annotations

import numpy as np
import pytest
from dash import html, no_update
from scipy.stats import mannwhitneyu

from analysis.demo.synthetic_run import add_gnsm_norms, write_synthetic_study
from analysis.exploration.sweep import fit_grid
from analysis.runs import layout as run_layout
from analysis.runs.reader import RunUnreadable, open_run
from app import callbacks, export, ids, state, views
from app.layout import permutation_counts, summary_panel
from app.registry import RunRegistry

N_GNSM_SCALES = 12


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    path = write_synthetic_study(tmp_path_factory.mktemp("gnsm") / "study", 240, seed=5)
    add_gnsm_norms(path, N_GNSM_SCALES)
    return path


@pytest.fixture(scope="module")
def ex(manifest):
    return RunRegistry(open_run(manifest)).first


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    """A run without GNSM norms."""
    return RunRegistry(open_run(write_synthetic_study(tmp_path_factory.mktemp("plain") / "study", 240,
                                                      seed=6))).first


def _cohort(ex) -> str:
    return callbacks.default_state(ex)["cohort"]


def test_the_reader_finds_the_gnsm_norms_and_requires_them_when_the_record_names_them(ex, manifest, tmp_path):
    assert ex.run.gnsm_norms.shape == (len(ex.run.subjects), N_GNSM_SCALES)
    assert list(ex.run.gnsm_norms.index) == list(ex.run.score_norms.index)
    assert ex.som_inputs == ["msma", "gnsm"]
    run_dir = ex.run.run_dir
    (run_dir / run_layout.GNSM_NORMS.name).rename(tmp_path / "moved.parquet")
    try:
        with pytest.raises(RunUnreadable, match="GNSM score norms"):
            open_run(manifest)
    finally:
        (tmp_path / "moved.parquet").rename(run_dir / run_layout.GNSM_NORMS.name)


def test_the_gnsm_map_is_fitted_on_both_norm_sets_as_the_sweep_fits_a_grid(ex):
    som = ex.run.som
    grid = views.MapGrid(som.n_rows, som.n_cols, som.topology, "gnsm")
    view = ex.map(grid)
    assert view is not ex.run_map and view.norms == "gnsm"
    labels = ex.run.subjects["cohort"].to_numpy()
    both = np.hstack([ex.run.score_norms.to_numpy(float), ex.run.gnsm_norms.to_numpy(float)])
    reference = fit_grid(both, labels, _cohort(ex), labels == ex.run.reference_cohort, som.n_rows, som.n_cols,
                         som.topology)
    np.testing.assert_array_equal(view.som.weights, reference.som.weights_)
    assert view.som.weights.shape[-1] == ex.run.score_norms.shape[1] + N_GNSM_SCALES
    members = view.som.prototypes[_cohort(ex)]["members"]
    assert sorted(members) == sorted(ex.run.subjects.index[reference.prototype.members])
    title = views.som_view(ex, _cohort(ex), "u_matrix", [[0, 0]], grid).layout.title.text
    assert "of the score + GNSM norms" in title.replace("<br>", " ")
    # the score norms at the run's grid are the run's own map
    assert ex.map(views.MapGrid(som.n_rows, som.n_cols, som.topology, "msma")) is ex.run_map


def test_the_input_control_switches_the_map_and_back(ex):
    cohort = _cohort(ex)
    current = {"cohort": cohort, "units": views.prototype_units(ex, cohort), "grid": None}
    chosen, shown = callbacks._selection_inputs(ex, ids.SOM_INPUT, cohort, None, None, None, None, "gnsm", current)
    som = ex.run.som
    assert chosen["grid"] == {"rows": som.n_rows, "cols": som.n_cols, "topology": som.topology, "norms": "gnsm"}
    assert shown == "gnsm"
    gnsm_map = ex.map(views.check_grid(chosen["grid"]))
    assert chosen["units"] == [gnsm_map.som.prototypes[cohort]["unit"]]
    badge, sentence = views.stability_note(ex, chosen)
    assert "score-norm maps" in badge and "GNSM" in sentence
    back, shown = callbacks._selection_inputs(ex, ids.SOM_INPUT, cohort, None, None, None, None, "msma", chosen)
    assert back["grid"] is None and shown == "msma" and back["units"] == views.prototype_units(ex, cohort)
    # the run's-map button goes back from the GNSM map too, and the control follows
    back, shown = callbacks._selection_inputs(ex, ids.RUN_MAP, cohort, None, None, None, 1, "gnsm", chosen)
    assert back["grid"] is None and shown == "msma"
    # choosing the input the map already has changes nothing
    assert callbacks._selection_inputs(ex, ids.SOM_INPUT, cohort, None, None, None, None, "gnsm", chosen) == \
        (no_update, no_update)


def test_a_run_without_gnsm_norms_offers_no_gnsm_map(plain):
    cohort = _cohort(plain)
    assert plain.som_inputs == ["msma"]
    current = {"cohort": cohort, "units": views.prototype_units(plain, cohort), "grid": None}
    assert callbacks.switch_som_input(plain, "gnsm", current) is no_update
    som = plain.run.som
    with pytest.raises(ValueError, match="no gnsm norms"):
        plain.map(views.MapGrid(som.n_rows, som.n_cols, som.topology, "gnsm"))
    forged = {**current, "grid": {"rows": som.n_rows, "cols": som.n_cols, "topology": som.topology, "norms": "gnsm"}}
    assert callbacks._selection(plain, forged) is None
    restored, problems = state.restore(plain, f"#grid={som.n_rows}x{som.n_cols}r~gnsm", callbacks.default_state(plain),
                                       permutation_counts(plain.refresh_permutations()))
    assert restored["grid"] is None and problems == ["grid (this run has no gnsm norms to fit a map on)"]
    with pytest.raises(export.ExportError, match="no gnsm norms"):
        export.check_grid(plain, (som.n_rows, som.n_cols, som.topology, "gnsm"))


def test_a_gnsm_map_survives_the_url_round_trip(ex):
    som = ex.run.som
    grid = {"rows": 5, "cols": 6, "topology": "rectangular", "norms": "gnsm"}
    target = {**callbacks.default_state(ex), "grid": grid, "units": [[4, 5]]}
    fragment = state.encode(target)
    assert "grid=5x6r~gnsm" in fragment
    restored, problems = state.restore(ex, fragment, callbacks.default_state(ex),
                                       permutation_counts(ex.refresh_permutations()))
    assert problems == [] and restored["grid"] == grid and restored["units"] == [[4, 5]]
    restored, problems = state.restore(ex, f"#grid={som.n_rows}x{som.n_cols}r~other", callbacks.default_state(ex),
                                       permutation_counts(ex.refresh_permutations()))
    assert restored["grid"] is None and problems and problems[0].startswith("grid")


def test_the_export_of_a_gnsm_map_says_what_the_map_was_fitted_on(ex):
    som = ex.run.som
    grid = export.check_grid(ex, {"rows": som.n_rows, "cols": som.n_cols, "norms": "gnsm"})
    assert grid == (som.n_rows, som.n_cols, som.topology, "gnsm")
    assert export.grid_record(ex, grid)["norms"] == "gnsm"
    assert "GNSM" in export.grid_record(ex, grid)["map"]
    assert export.zip_name(ex, _cohort(ex), grid).endswith("_gnsm.zip")
    assert export.check_grid(ex, (som.n_rows, som.n_cols, som.topology, "msma")) is None


def test_the_selection_summary_compares_the_anomaly_scores_with_scipy(ex):
    cohort = _cohort(ex)
    units = views.prototype_units(ex, cohort)
    summary = views.summary(ex, cohort, units)
    inside, rest = views.cohort_members(ex, cohort, units)
    rows = {row["name"]: row for row in summary["anomaly"]}
    assert list(rows) == ["MSMA", "GNSM"]
    for name, column in (("MSMA", "msma_gmm"), ("GNSM", "gnsm_gmm")):
        scores = ex.run.detector_scores[column]
        expected = mannwhitneyu(scores[inside], scores[rest], alternative="two-sided").pvalue
        assert rows[name]["p"] == pytest.approx(expected, rel=1e-12)
        assert rows[name]["selection"]["mean"] == pytest.approx(scores[inside].mean())
        assert rows[name]["rest"]["sd"] == pytest.approx(scores[rest].std(ddof=1))
        assert rows[name]["selection"]["median"] == pytest.approx(np.median(scores[inside]))
    panel = summary_panel(summary, ex.styles)
    grid_rows = panel[2].rowData
    assert [r["what"] for r in grid_rows][-2:] == ["MSMA", "GNSM"]
    assert grid_rows[-1]["selection"] == f"{np.median(ex.run.detector_scores['gnsm_gmm'][inside]):.3g}"
    assert "median GMM anomaly score, Mann-Whitney MSMA p = " in panel[3].children


def test_without_gnsm_the_summary_shows_the_msma_score_only(plain):
    cohort = _cohort(plain)
    summary = views.summary(plain, cohort, views.prototype_units(plain, cohort))
    assert [row["name"] for row in summary["anomaly"]] == ["MSMA"]


def test_the_subject_room_names_the_gnsm_score_beside_the_msma_score(ex, plain):
    subject = ex.run.subjects.index[3]
    header = views.subject_view(ex, subject, "raw")[0]
    assert "MSMA GMM" in header and f"GNSM GMM {ex.run.detector_scores.at[subject, 'gnsm_gmm']:.4g}" in header
    assert "GNSM" not in views.subject_view(plain, plain.run.subjects.index[3], "raw")[0]


def _find(component, component_id):
    if getattr(component, "id", None) == component_id:
        return component
    children = getattr(component, "children", None)
    for child in children if isinstance(children, list) else [children]:
        if child is not None and not isinstance(child, str | int | float):
            found = _find(child, component_id)
            if found is not None:
                return found
    return None


def test_the_page_offers_the_input_control_only_for_a_run_with_gnsm_norms(ex, plain):
    som = ex.run.som
    on_gnsm = {**callbacks.default_state(ex), "units": [[0, 0]],
               "grid": {"rows": som.n_rows, "cols": som.n_cols, "topology": som.topology, "norms": "gnsm"}}
    control = _find(html_root(ex, on_gnsm), ids.SOM_INPUT)
    assert control.value == "gnsm" and [o["value"] for o in control.options] == ["msma", "gnsm"]
    plain_control = _find(html_root(plain, callbacks.default_state(plain)), ids.SOM_INPUT)
    assert [o["value"] for o in plain_control.options] == ["msma"]


def html_root(ex, view_state):
    from app import page

    registry = RunRegistry(ex.run)
    return html.Div(page.build(registry.first, registry, view_state))


def test_the_run_room_says_what_gnsm_modelled(ex, plain):
    section = {"columns": {"sex": "categorical", "age": "numeric"}, "with_score_norms": True,
               "continuous": ["age", "norm_00", "norm_01"], "n_scales": 20, "steps": 1200,
               "stopped": "early_stopping", "best_val_loss": 11.5634, "seconds": 21.54, "reused": False}
    assert views.gnsm_provenance(section) == ("sex, age + 2 score norms; 20 scales; 1200 steps (early_stopping), "
                                              "best validation loss 11.56, 21.5 s")
    assert views.gnsm_provenance(None) is None and views.provenance(plain)["gnsm"] is None
    assert views.provenance(ex)["gnsm"].startswith("sex, age; 12 scales")
