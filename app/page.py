"""One run's page in one view state, with every figure computed before it is sent: the first page of
:func:`app.create_app`, and the page a link, a Back or the run picker asks for."""

from __future__ import annotations

from app import callbacks, figures, ids, layout, views


def initial(ex, registry, state: dict) -> dict:
    """Every figure and store of the page of ``state`` (a view state of :mod:`app.state`, already checked)."""
    selection = {"cohort": state["cohort"], "units": state["units"], "grid": state["grid"]}
    crosshair = {"voxel": state["voxel"], "roi": state["roi"], "plane": state["plane"], "moved": []}
    subject = state.get("subject")
    permutations = ex.refresh_permutations()
    rois, roi_style, regions, summary = callbacks.update_regions(
        ex, selection, state["correction"], state["alpha"], "10", state["scores"], crosshair, subject)
    correlations, correlation_style, floor = callbacks.update_correlations(ex, regions, state["q"],
                                                                             state["permutations"], "full")
    controls = callbacks.SliceControls(layout.DEFAULT_THRESHOLD, 0.85, False, "auto", 3)
    *slices, colorbar, note = callbacks.draw_slices(ex, None, selection, crosshair, controls, subject, False)
    som, _, _, stability, stability_title = callbacks.draw_maps(ex, selection, "u_matrix", subject)
    scatter, scatter_open = figures.empty_figure("ROI × behaviour", "Click a cell of the correlation heatmap."), False
    if state.get("pair") and state["pair"][0] in regions["significant"]:
        roi, behaviour = state["pair"]
        click = {"points": [{"y": roi, "x": behaviour, "z": 0.0}]}
        opened = callbacks.open_scatter(ex, ids.CORRELATION_GRAPH, click, "raw", {**selection, "subject": subject},
                                        regions, state["permutations"], False)
        if opened[0] is True:
            scatter_open, scatter = opened
    header, profile, centiles, top = callbacks.subject_room(ex, subject, state["scores"])
    return {
        "selection": selection, "regions": regions, "crosshair": crosshair, "permutations": permutations,
        "som": som, "stability": stability, "stability_title": stability_title, "rois": rois,
        "roi_style": roi_style, "summary": summary,
        "correlations": correlations, "correlation_style": correlation_style, "p_floor": floor, "slices": slices,
        "colorbar": colorbar, "slice_note": note, "scatter": scatter, "scatter_open": scatter_open,
        "subject_heatmap": False,
        "sweep": views.sweep_view(ex, state["cohort"], views.check_grid(state["grid"])),
        "sweep_status": views.sweep_status(ex, state["cohort"]), "sweep_reading": views.SWEEP_READING,
        "subject_header": header, "subject_profile": profile, "subject_centiles": centiles, "subject_rois": top,
        "provenance": layout.provenance_panel(views.provenance(ex), registry.run_ids(), registry.latest_id()),
    }


def build(ex, registry, state: dict) -> list:
    """The children of the page container for ``state``."""
    return layout.page(ex, registry, state, initial(ex, registry, state))
