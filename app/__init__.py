"""msma-explorer's browser app: linked SOM, brain-slice, ROI box-plot and behaviour-correlation views of one
published run. It only reads runs (through :mod:`analysis.runs.reader`) and starts without importing torch;
``tests/test_layering.py`` guards that rule.

:func:`create_app` builds the Dash app of a run; :mod:`app.server` serves it.
"""

from __future__ import annotations

from pathlib import Path

from analysis.runs.reader import PublishedRun

ASSETS = Path(__file__).resolve().parent / "assets"


def default_cohort(run: PublishedRun) -> str:
    """The cohort the explorer opens on: the non-reference cohort whose maximal prototype holds the largest share
    of it (the most concentrated subgroup; the Down-syndrome-like cohort in the demo), the reference one if alone."""
    others = [c for c in run.cohorts if c != run.reference_cohort and c in run.som.prototypes]
    if not others:
        return run.reference_cohort
    share = {c: run.som.prototypes[c]["size"] / max(1, run.som.prototypes[c]["cohort_size"]) for c in others}
    return max(others, key=lambda c: (share[c], run.som.prototypes[c]["size"]))


def create_app(run: PublishedRun, *, cohort: str | None = None):
    """The explorer of ``run``, opened on ``cohort`` (default :func:`default_cohort`) with its maximal prototype
    selected. Every figure of the first page is computed here, once, so the first page needs one request."""
    import dash
    import dash_bootstrap_components as dbc  # noqa: F401  (registers the components before the layout is built)

    from app import callbacks, figures, ids, layout
    from app.views import Explorer, start_voxel

    ex = Explorer(run)
    cohort = cohort or default_cohort(run)
    if cohort not in run.cohorts:
        raise ValueError(f"cohort {cohort!r} is not a cohort of run {run.run_id}; expected one of {run.cohorts}")
    selection = callbacks.choose_selection(ex, ids.COHORT, cohort, None, None)
    crosshair = {"voxel": start_voxel(ex, cohort), "roi": None, "plane": "axial", "moved": []}
    permutations = ex.refresh_permutations()
    rois, roi_style, regions, summary = callbacks.update_regions(ex, selection, "bonferroni", "0.05", "10",
                                                              run.default_roi_scores, crosshair)
    correlations, correlation_style, floor = callbacks.update_correlations(ex, regions, "0.1", permutations,
                                                                             "full")
    controls = callbacks.SliceControls(layout.DEFAULT_THRESHOLD, 0.85, False, "auto", 3)
    *slices, colorbar, note = callbacks.draw_slices(ex, None, selection, crosshair, controls)
    initial = {
        "selection": selection, "regions": regions, "crosshair": crosshair, "permutations": permutations,
        "som": callbacks.draw_som(ex, selection, "u_matrix"), "rois": rois, "roi_style": roi_style, "summary": summary,
        "correlations": correlations, "correlation_style": correlation_style,
        "p_floor": floor, "slices": slices, "colorbar": colorbar, "slice_note": note,
        "scatter": figures.empty_figure("ROI × behaviour", "Click a cell of the correlation heatmap."),
    }
    app = dash.Dash(
        __name__,
        title=f"msma-explorer · {run.study_name}",
        assets_folder=str(ASSETS),
        update_title=None,
        serve_locally=True,
    )
    app.layout = layout.page(ex, initial)
    callbacks.register(app, ex)
    return app
