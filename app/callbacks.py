"""The explorer's callbacks: plain functions of (explorer, inputs) -> outputs, and :func:`register`, which wires them
to the Dash app.

Each callback parses its inputs, asks :mod:`app.views` (and through it :mod:`analysis`) for the numbers and
figures, and returns; it returns ``no_update`` early when an input names nothing new. Per-browser state lives in
``dcc.Store`` components (:mod:`app.ids`): the selected SOM units, the live region step's significant ROIs and the
crosshair; volumes never leave the server, and nothing is kept between requests.
"""

from __future__ import annotations

from dash import Input, Output, Patch, State, ctx, no_update

from analysis.slices import peak_voxel
from app import figures, ids, views
from app.layout import summary_panel
from app.views import Explorer

ROIS_SHOWN = {"10": 10, "20": 20, "all": 10_000}


# --- selection ------------------------------------------------------------------------------------------------------


def choose_selection(ex: Explorer, trigger: str | None, cohort: str, selected_data: dict | None,
                     current: dict | None) -> dict:
    """A new cohort selects its maximal prototype; a click, shift-click or box/lasso selection on the SOM selects
    the units it names (an empty one keeps the last selection)."""
    if trigger == ids.SOM_GRAPH:
        units = views.units_from_points((selected_data or {}).get("points"))
        if not units or current is None:
            return no_update
        return {"cohort": current["cohort"], "units": units}
    if cohort not in ex.run.cohorts:
        return no_update
    return {"cohort": cohort, "units": views.prototype_units(ex, cohort)}


def draw_som(ex: Explorer, selection: dict, layer: str):
    return views.som_view(ex, selection["cohort"], layer, selection["units"])


# --- region step ----------------------------------------------------------------------------------------------------


def update_regions(ex: Explorer, selection: dict, correction: str, alpha, shown: str, crosshair: dict | None):
    """The live region step of the selection: ROI box plots, the step's result for the correlations, the summary."""
    try:
        alpha = float(alpha)
    except (TypeError, ValueError):
        return no_update, no_update, no_update, no_update
    cohort, units = selection["cohort"], selection["units"]
    step = views.regions(ex, cohort, units, correction, alpha)
    count = ROIS_SHOWN.get(str(shown), 10)
    highlighted = (crosshair or {}).get("roi")
    figure = views.roi_view(ex, cohort, units, step, count, highlighted)
    store = {"cohort": cohort, "units": units, "significant": step.significant_rois,
             "shown": step.significant_rois[:count], "kept": len(step.kept_rois), "correction": correction,
             "alpha": alpha}
    height = views.roi_height(len(store["shown"]))
    return figure, {"height": f"{height}px"}, store, summary_panel(views.summary(ex, cohort, units), ex.styles)


def highlight_roi(ex: Explorer, crosshair: dict | None, regions: dict | None):
    """Move the highlight band of the box plots to the outlined ROI (a partial update of one shape)."""
    roi = (crosshair or {}).get("roi")
    order = list(reversed((regions or {}).get("shown") or []))
    if roi not in order:
        return no_update
    k = order.index(roi)
    patch = Patch()
    patch["layout"]["shapes"][0]["y0"] = k - 0.5
    patch["layout"]["shapes"][0]["y1"] = k + 0.5
    patch["layout"]["shapes"][0]["visible"] = True
    return patch


# --- correlations ---------------------------------------------------------------------------------------------------


def update_correlations(ex: Explorer, regions: dict, q, n_permutations, mode: str):
    try:
        q, n_permutations = float(q), int(n_permutations)
    except (TypeError, ValueError):
        return no_update, no_update, no_update
    cohort, rois = regions["cohort"], regions["significant"]
    result = views.correlations(ex, cohort, rois, n_permutations)
    figure = views.correlation_view(ex, cohort, rois, result, q, mode == "significant")
    floor = 1.0 / (n_permutations + 1)
    note = f"smallest attainable permutation p = 1/(P+1) = {floor:.2g}"
    if result is not None:
        tested = int(result.table["testable"].sum())
        note += f"; BH over {tested} pairs rejects none unless some p ≤ q/{tested} = {q / max(tested, 1):.2g}"
    return figure, {"height": f"{figure.layout.height or 404}px"}, note


def open_scatter(ex: Explorer, trigger: str | None, click: dict | None, view: str, selection: dict, regions: dict,
                 n_permutations, is_open: bool):
    """A click on a correlation cell opens its scatter (raw values or ranks, points by selection membership)."""
    if trigger == ids.SCATTER_VIEW and not is_open:
        return no_update, no_update
    points = (click or {}).get("points") or []
    if not points or points[0].get("z") is None:
        return no_update, no_update
    roi, behaviour = str(points[0]["y"]), str(points[0]["x"])
    if roi not in regions.get("significant", []) or ex.run.behaviour is None or behaviour not in ex.run.behaviour:
        return no_update, no_update
    # The pair's BH p-value depends on every pair: rerun the (seeded, so identical) correlations of the heatmap.
    result = views.correlations(ex, regions["cohort"], regions["significant"], int(n_permutations))
    row = result.table[(result.table["roi"] == roi) & (result.table["behaviour"] == behaviour)].iloc[0]
    stats = {"rho": float(row["rho"]), "p_bh": float(row["p_bh"])}
    return True, views.scatter_view(ex, selection["cohort"], selection["units"], roi, behaviour, view, stats)


# --- crosshair and slices -------------------------------------------------------------------------------------------


def move_crosshair(ex: Explorer, trigger: str | None, slice_clicks: dict, roi_click: dict | None, keys: dict | None,
                   crosshair: dict, selection: dict) -> dict:
    """Where the slices cut: a click on one view, a click on an ROI's boxes (its centre, outlined), the peak
    button (the selection's strongest voxel) or a key (one slice along the last view's normal)."""
    g = ex.geometry
    voxel, roi, plane = list(crosshair["voxel"]), crosshair.get("roi"), crosshair.get("plane", "axial")
    if trigger in ids.SLICE_GRAPHS.values():
        plane = next(p for p, i in ids.SLICE_GRAPHS.items() if i == trigger)
        points = (slice_clicks.get(plane) or {}).get("points") or []
        if not points:
            return no_update
        voxel = g.voxel_from_click(plane, float(points[0]["x"]), float(points[0]["y"]), voxel)
    elif trigger == ids.ROI_GRAPH:
        points = (roi_click or {}).get("points") or []
        name = str(points[0].get("y")) if points else None
        centre = views.roi_centre(ex, name) if name else None
        if centre is None:
            return no_update
        voxel, roi = centre, name
    elif trigger == ids.PEAK:
        inside, _ = views.cohort_members(ex, selection["cohort"], selection["units"])
        volume = views.mean_volume(ex, inside)
        peak = None if volume is None else peak_voxel(volume)
        if peak is None:
            return no_update
        voxel = peak
    elif trigger == ids.KEYS:
        step = int((keys or {}).get("step", 0))
        plane = (keys or {}).get("plane") or plane
        if not step or plane not in ids.SLICE_GRAPHS:
            return no_update
        voxel = g.step(voxel, plane, step)
    else:
        return no_update
    old = crosshair["voxel"]
    moved = [p for p in ids.PLANES if voxel[views.PLANES[p][2]] != old[views.PLANES[p][2]]]
    if roi != crosshair.get("roi"):
        moved = list(ids.PLANES)
    return {"voxel": [int(v) for v in voxel], "roi": roi, "plane": plane, "moved": moved}


def draw_slices(ex: Explorer, trigger: str | None, selection: dict, crosshair: dict, threshold, opacity,
                radiological: bool, range_mode: str, range_max):
    """The three views of the selection's mean heatmap. A crosshair move patches only what changed: the slices
    of the planes it crossed and the crosshair lines of all three."""
    inside, _ = views.cohort_members(ex, selection["cohort"], selection["units"])
    rows = views.slice_rows(ex, inside)
    voxel, roi = crosshair["voxel"], crosshair.get("roi")
    data = {p: views.slice_data(ex, p, voxel, rows, roi) for p in ids.PLANES}
    if trigger == ids.CROSSHAIR:
        patches = []
        for plane in ids.PLANES:
            patch = Patch()
            patch["layout"]["shapes"] = figures.crosshair_shapes(data[plane])
            if plane in crosshair.get("moved", []):
                for k, update in enumerate(figures.slice_updates(data[plane], float(threshold or 0), ex.unit)):
                    for key, value in update.items():
                        patch["data"][k][key] = value
                patch["layout"]["title"]["text"] = views.slice_title(data[plane])
            patches.append(patch)
        return (*patches, no_update, no_update)
    try:
        fixed = float(range_max) if range_max not in (None, "") else None
    except (TypeError, ValueError):
        fixed = None
    zrange = views.colour_range(views.mean_volume(ex, inside), range_mode, fixed)
    drawn = [
        figures.slice_figure(data[p], zrange, float(threshold or 0), float(opacity), ex.unit, bool(radiological),
                             ex.background_range, views.slice_title(data[p]))
        for p in ids.PLANES
    ]
    colorbar = figures.colorbar_figure(zrange, f"mean heatmap ({ex.unit})")
    if inside:
        note = (f"Mean heatmap of the {len(inside)} {selection['cohort']} subjects in the selection; "
                f"|value| ≥ {float(threshold or 0):g} {ex.unit} shown.")
    else:
        note = f"No {selection['cohort']} subject in the selection: nothing to average."
    return (*drawn, colorbar, note)


# --- wiring ---------------------------------------------------------------------------------------------------------


def register(app, ex: Explorer) -> None:
    """Attach every callback to ``app``; each closes over the read-only explorer ``ex``."""

    @app.callback(
        Output(ids.SELECTION, "data"),
        Input(ids.COHORT, "value"),
        Input(ids.SOM_GRAPH, "selectedData"),
        State(ids.SELECTION, "data"),
        prevent_initial_call=True,
    )
    def _selection(cohort, selected_data, current):
        return choose_selection(ex, ctx.triggered_id, cohort, selected_data, current)

    @app.callback(
        Output(ids.SOM_GRAPH, "figure"),
        Input(ids.SELECTION, "data"),
        Input(ids.SOM_LAYER, "value"),
        prevent_initial_call=True,
    )
    def _som(selection, layer):
        return draw_som(ex, selection, layer)

    @app.callback(
        Output(ids.ROI_GRAPH, "figure"),
        Output(ids.ROI_GRAPH, "style"),
        Output(ids.REGIONS, "data"),
        Output(ids.SUMMARY, "children"),
        Input(ids.SELECTION, "data"),
        Input(ids.CORRECTION, "value"),
        Input(ids.ALPHA, "value"),
        Input(ids.ROI_COUNT, "value"),
        State(ids.CROSSHAIR, "data"),
        prevent_initial_call=True,
    )
    def _regions(selection, correction, alpha, shown, crosshair):
        return update_regions(ex, selection, correction, alpha, shown, crosshair)

    @app.callback(
        Output(ids.ROI_GRAPH, "figure", allow_duplicate=True),
        Input(ids.CROSSHAIR, "data"),
        State(ids.REGIONS, "data"),
        prevent_initial_call=True,
    )
    def _highlight(crosshair, regions):
        return highlight_roi(ex, crosshair, regions)

    @app.callback(
        Output(ids.CORRELATION_GRAPH, "figure"),
        Output(ids.CORRELATION_GRAPH, "style"),
        Output(ids.P_FLOOR, "children"),
        Input(ids.REGIONS, "data"),
        Input(ids.FDR, "value"),
        Input(ids.PERMUTATIONS, "value"),
        Input(ids.CORRELATION_MODE, "value"),
        prevent_initial_call=True,
    )
    def _correlations(regions, q, n_permutations, mode):
        return update_correlations(ex, regions, q, n_permutations, mode)

    @app.callback(
        Output(ids.SCATTER_MODAL, "is_open"),
        Output(ids.SCATTER_GRAPH, "figure"),
        Input(ids.CORRELATION_GRAPH, "clickData"),
        Input(ids.SCATTER_VIEW, "value"),
        State(ids.SELECTION, "data"),
        State(ids.REGIONS, "data"),
        State(ids.PERMUTATIONS, "value"),
        State(ids.SCATTER_MODAL, "is_open"),
        prevent_initial_call=True,
    )
    def _scatter(click, view, selection, regions, n_permutations, is_open):
        return open_scatter(ex, ctx.triggered_id, click, view, selection, regions, n_permutations, is_open)

    @app.callback(
        Output(ids.CROSSHAIR, "data"),
        *(Input(ids.SLICE_GRAPHS[p], "clickData") for p in ids.PLANES),
        Input(ids.ROI_GRAPH, "clickData"),
        Input(ids.PEAK, "n_clicks"),
        Input(ids.KEYS, "data"),
        State(ids.CROSSHAIR, "data"),
        State(ids.SELECTION, "data"),
        prevent_initial_call=True,
    )
    def _crosshair(axial, coronal, sagittal, roi_click, _peak, keys, crosshair, selection):
        clicks = {"axial": axial, "coronal": coronal, "sagittal": sagittal}
        return move_crosshair(ex, ctx.triggered_id, clicks, roi_click, keys, crosshair, selection)

    @app.callback(
        *(Output(ids.SLICE_GRAPHS[p], "figure") for p in ids.PLANES),
        Output(ids.SLICE_COLORBAR, "figure"),
        Output(ids.SLICE_NOTE, "children"),
        Input(ids.SELECTION, "data"),
        Input(ids.CROSSHAIR, "data"),
        Input(ids.THRESHOLD, "value"),
        Input(ids.OPACITY, "value"),
        Input(ids.RADIOLOGICAL, "value"),
        Input(ids.RANGE_MODE, "value"),
        Input(ids.RANGE_MAX, "value"),
        prevent_initial_call=True,
    )
    def _slices(selection, crosshair, threshold, opacity, radiological, range_mode, range_max):
        return draw_slices(ex, ctx.triggered_id, selection, crosshair, threshold, opacity, radiological, range_mode,
                           range_max)
