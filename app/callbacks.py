"""The explorer's callbacks: plain functions of (explorer, inputs) -> outputs, and :func:`register`, which wires them
to the Dash app.

Each callback parses its inputs, asks :mod:`app.views` (and through it :mod:`analysis`) for the numbers and
figures, and returns; it returns ``no_update`` early when an input names nothing new, or anything the layout does
not offer (every value comes from a browser, so each is checked against the run and the controls' options).
Per-browser state lives in ``dcc.Store`` components (:mod:`app.ids`): the selected SOM units, the live region step's
significant ROIs and the crosshair; volumes never leave the server. The only thing kept between requests is the
explorer's memo of per-cohort permutation tables (:meth:`app.views.Explorer.behaviour_table`), the same for every
browser.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from dash import Input, Output, Patch, State, ctx, no_update

from analysis.exploration.cohort_analysis import CORRECTIONS
from app import ids, views
from app.figures.slices import colorbar_figure, crosshair_shapes, slice_figure, slice_updates
from app.layout import ALPHAS, FDR_LEVELS, ROI_COUNTS, permutation_counts, summary_panel
from app.views import Explorer

# --- what the browser sends -----------------------------------------------------------------------------------------


def _number(value, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _selection(ex: Explorer, value) -> dict | None:
    """A selection store's value, if it names a cohort of the run and units on its map."""
    if not isinstance(value, dict) or value.get("cohort") not in ex.run.cohorts:
        return None
    units = value.get("units")
    points = [{"customdata": u} for u in units] if isinstance(units, list) else None
    checked = views.units_from_points(ex, points)
    return {"cohort": value["cohort"], "units": checked} if points is not None and len(checked) == len(units) else None


def _crosshair(ex: Explorer, value) -> dict | None:
    """A crosshair store's value, if its voxel lies on the grid and it names a known ROI and plane."""
    if not isinstance(value, dict):
        return None
    voxel = value.get("voxel")
    if not (isinstance(voxel, list) and len(voxel) == 3
            and all(isinstance(v, int) and 0 <= v < n for v, n in zip(voxel, ex.geometry.shape, strict=True))):
        return None
    roi = value.get("roi") if value.get("roi") in ex.run.roi_labels else None
    plane = value.get("plane") if value.get("plane") in ids.SLICE_GRAPHS else "axial"
    moved = [p for p in value.get("moved") or [] if p in ids.SLICE_GRAPHS]
    return {"voxel": voxel, "roi": roi, "plane": plane, "moved": moved}


def _regions(ex: Explorer, value) -> dict | None:
    """A region-step store's value, if it names a cohort of the run and ROIs of its atlas."""
    if not isinstance(value, dict) or value.get("cohort") not in ex.run.cohorts:
        return None
    significant, shown = value.get("significant"), value.get("shown") or []
    if not isinstance(significant, list) or not all(r in ex.run.roi_labels for r in [*significant, *shown]):
        return None
    scores = value.get("scores", "raw")
    if not isinstance(scores, str) or scores not in ex.run.roi_tables:
        return None
    return {**value, "significant": significant, "shown": shown, "scores": scores}


def _permutations(ex: Explorer, value) -> int | None:
    count = int(_number(value, -1))
    return count if count in permutation_counts(ex.refresh_permutations()) else None



# --- selection ------------------------------------------------------------------------------------------------------


def choose_selection(ex: Explorer, trigger: str | None, cohort: str, selected_data: dict | None,
                     current: dict | None) -> dict:
    """A new cohort selects its maximal prototype; a click, shift-click or box/lasso selection on the SOM selects
    the units it names (an empty one keeps the last selection)."""
    if trigger == ids.SOM_GRAPH:
        current = _selection(ex, current)
        units = views.units_from_points(ex, (selected_data or {}).get("points"))
        if not units or current is None:
            return no_update
        return {"cohort": current["cohort"], "units": units}
    if cohort not in ex.run.cohorts:
        return no_update
    return {"cohort": cohort, "units": views.prototype_units(ex, cohort)}


def draw_som(ex: Explorer, selection: dict, layer: str):
    selection = _selection(ex, selection)
    if selection is None:
        return no_update
    return views.som_view(ex, selection["cohort"], "hits" if layer == "hits" else "u_matrix", selection["units"])


# --- region step ----------------------------------------------------------------------------------------------------


def update_regions(ex: Explorer, selection: dict, correction: str, alpha, shown: str, scores: str,
                   crosshair: dict | None):
    """The live region step of the selection on the chosen ROI scores (adjusted or raw): ROI box plots, the step's
    result for the correlations, the summary."""
    selection = _selection(ex, selection)
    if (selection is None or correction not in CORRECTIONS or str(alpha) not in ALPHAS
            or not isinstance(scores, str) or scores not in ex.run.roi_tables):
        return no_update, no_update, no_update, no_update
    alpha = float(alpha)
    cohort, units = selection["cohort"], selection["units"]
    step = views.regions(ex, cohort, units, correction, alpha, scores)
    count = ROI_COUNTS.get(str(shown), ROI_COUNTS["10"])
    highlighted = (_crosshair(ex, crosshair) or {}).get("roi")
    figure = views.roi_view(ex, cohort, units, step, count, highlighted, scores)
    store = {"cohort": cohort, "units": units, "significant": step.significant_rois,
             "shown": step.significant_rois[:count], "kept": len(step.kept_rois), "correction": correction,
             "alpha": alpha, "scores": scores}
    height = views.roi_height(len(store["shown"]))
    return figure, {"height": f"{height}px"}, store, summary_panel(views.summary(ex, cohort, units), ex.styles)


def highlight_roi(ex: Explorer, crosshair: dict | None, regions: dict | None):
    """Move the highlight band of the box plots to the outlined ROI (a partial update of one shape)."""
    roi = (_crosshair(ex, crosshair) or {}).get("roi")
    order = list(reversed((_regions(ex, regions) or {}).get("shown") or []))
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
    regions, n_permutations = _regions(ex, regions), _permutations(ex, n_permutations)
    if regions is None or n_permutations is None or str(q) not in FDR_LEVELS:
        return no_update, no_update, no_update
    q = float(q)
    cohort, rois = regions["cohort"], regions["significant"]
    result = views.correlations(ex, cohort, rois, n_permutations, regions["scores"])
    figure = views.correlation_view(ex, cohort, rois, result, q, mode == "significant")
    note = f"smallest attainable permutation p = 1/(P+1) = {1.0 / (n_permutations + 1):.2g}"
    if result is not None:
        tested = int(result.table["testable"].sum())
        note += (f"; BH over {tested} pairs: a pair standing alone needs p ≤ q/{tested} = {q / max(tested, 1):.2g}, "
                 f"and nothing passes when 1/(P+1) > q")
    return figure, {"height": f"{figure.layout.height or 404}px"}, note


def open_scatter(ex: Explorer, trigger: str | None, click: dict | None, view: str, selection: dict, regions: dict,
                 n_permutations, is_open: bool):
    """A click on a correlation cell opens its scatter (raw values or ranks, points by selection membership)."""
    selection, regions, n_permutations = (_selection(ex, selection), _regions(ex, regions),
                                          _permutations(ex, n_permutations))
    if (trigger == ids.SCATTER_VIEW and not is_open) or None in (selection, regions, n_permutations):
        return no_update, no_update
    points = (click or {}).get("points") or []
    if not points or not isinstance(points[0], dict) or points[0].get("z") is None:
        return no_update, no_update
    roi, behaviour = str(points[0].get("y")), str(points[0].get("x"))
    if roi not in regions["significant"] or ex.run.behaviour is None or behaviour not in ex.run.behaviour:
        return no_update, no_update
    # The pair's BH p-value depends on every pair of the heatmap: read them from the cohort's permutation table.
    result = views.correlations(ex, regions["cohort"], regions["significant"], n_permutations, regions["scores"])
    row = result.table[(result.table["roi"] == roi) & (result.table["behaviour"] == behaviour)].iloc[0]
    stats = {"rho": float(row["rho"]), "p_bh": float(row["p_bh"])}
    return True, views.scatter_view(ex, selection["cohort"], selection["units"], roi, behaviour,
                                    "rank" if view == "rank" else "raw", stats, regions["scores"])


# --- crosshair and slices -------------------------------------------------------------------------------------------


def move_crosshair(ex: Explorer, trigger: str | None, slice_clicks: dict, roi_click: dict | None, keys: dict | None,
                   crosshair: dict, selection: dict) -> dict:
    """Where the slices cut: a click on one view, a click on an ROI's boxes (its centre, outlined), the peak
    button (the selection's strongest voxel) or a key (one slice along the last view's normal)."""
    g = ex.geometry
    crosshair, selection = _crosshair(ex, crosshair), _selection(ex, selection)
    if crosshair is None or selection is None:
        return no_update
    voxel, roi, plane = list(crosshair["voxel"]), crosshair["roi"], crosshair["plane"]
    if trigger in ids.SLICE_GRAPHS.values():
        plane = next(p for p, i in ids.SLICE_GRAPHS.items() if i == trigger)
        points = (slice_clicks.get(plane) or {}).get("points") or []
        if not points or not isinstance(points[0], dict):
            return no_update
        h, v = _number(points[0].get("x"), math.nan), _number(points[0].get("y"), math.nan)
        if math.isnan(h) or math.isnan(v):
            return no_update
        voxel = g.voxel_from_click(plane, h, v, voxel)
    elif trigger == ids.ROI_GRAPH:
        points = (roi_click or {}).get("points") or []
        name = str(points[0].get("y")) if points else None
        centre = views.roi_centre(ex, name) if name else None
        if centre is None:
            return no_update
        voxel, roi = centre, name
    elif trigger == ids.PEAK:
        peak = views.selection_peak(ex, selection["cohort"], selection["units"])
        if peak is None:
            return no_update
        voxel = peak
    elif trigger == ids.KEYS:
        keys = keys if isinstance(keys, dict) else {}
        step = keys.get("step") if keys.get("step") in (-1, 1) else 0
        plane = keys.get("plane") or plane
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


@dataclass(frozen=True)
class SliceControls:
    """The slice views' display controls as the browser sends them; each is checked where it is read."""

    threshold: object
    """Smallest |value| drawn, in the heatmap's unit (default 0)."""
    opacity: object
    """Of the overlay, clipped to [0, 1] (default 0.85)."""
    radiological: object
    """Truthy: mirror left and right."""
    range_mode: str
    """How the colour range is chosen (:func:`app.views.colour_range`)."""
    range_max: object
    """The fixed range's upper end, or None."""


def draw_slices(ex: Explorer, trigger: str | None, selection: dict, crosshair: dict, controls: SliceControls):
    """The three views of the selection's mean heatmap. A crosshair move patches only what changed: the slices
    of the planes it crossed and the crosshair lines of all three."""
    selection, crosshair = _selection(ex, selection), _crosshair(ex, crosshair)
    if selection is None or crosshair is None:
        return no_update, no_update, no_update, no_update, no_update
    inside, _ = views.cohort_members(ex, selection["cohort"], selection["units"])
    rows = views.slice_rows(ex, inside)
    voxel, roi = crosshair["voxel"], crosshair.get("roi")
    threshold = _number(controls.threshold, 0.0)
    if trigger == ids.CROSSHAIR:
        patches = []
        for plane in ids.PLANES:
            patch = Patch()
            h_axis, v_axis, _ = views.PLANES[plane]
            g = ex.geometry
            patch["layout"]["shapes"] = crosshair_shapes(
                g.coordinates(h_axis), g.coordinates(v_axis),
                (g.position(h_axis, int(voxel[h_axis])), g.position(v_axis, int(voxel[v_axis]))),
            )
            if plane in crosshair.get("moved", []):
                data = views.slice_data(ex, plane, voxel, rows, roi)
                for k, update in enumerate(slice_updates(data, threshold, ex.unit)):
                    for key, value in update.items():
                        patch["data"][k][key] = value
                patch["layout"]["title"]["text"] = views.slice_title(data)
            patches.append(patch)
        return (*patches, no_update, no_update)
    data = {p: views.slice_data(ex, p, voxel, rows, roi) for p in ids.PLANES}
    fixed = _number(controls.range_max, math.nan)
    zrange = views.colour_range(views.mean_volume(ex, inside), controls.range_mode,
                                None if math.isnan(fixed) else fixed)
    drawn = [
        slice_figure(data[p], zrange, threshold, min(max(_number(controls.opacity, 0.85), 0.0), 1.0), ex.unit,
                     bool(controls.radiological), ex.background_range, views.slice_title(data[p]))
        for p in ids.PLANES
    ]
    colorbar = colorbar_figure(zrange, f"mean heatmap ({ex.unit})")
    if inside:
        note = (f"Mean heatmap of the {len(inside)} {selection['cohort']} subjects in the selection; "
                f"|value| ≥ {threshold:g} {ex.unit} shown.")
    else:
        note = f"No {selection['cohort']} subject in the selection: nothing to average."
    return (*drawn, colorbar, note)


# --- wiring ---------------------------------------------------------------------------------------------------------


def _crosshair_inputs(ex: Explorer, trigger: str | None, *values):
    """:func:`move_crosshair` from the callback's inputs: one click per plane, then the rest (the peak button's
    click count only triggers)."""
    *clicks, roi_click, _peak, keys, crosshair, selection = values
    return move_crosshair(ex, trigger, dict(zip(ids.PLANES, clicks, strict=True)), roi_click, keys, crosshair,
                          selection)


def _slice_inputs(ex: Explorer, trigger: str | None, selection, crosshair, *controls):
    """:func:`draw_slices` from the callback's inputs, the display controls last."""
    return draw_slices(ex, trigger, selection, crosshair, SliceControls(*controls))


@dataclass(frozen=True)
class _Wire:
    """One callback: its handler, whether the handler takes the triggering id, and its outputs, inputs and states
    in the order the handler takes them."""

    handler: Callable
    triggered: bool
    dependencies: tuple


_WIRES = (
    _Wire(choose_selection, True, (
        Output(ids.SELECTION, "data"), Input(ids.COHORT, "value"), Input(ids.SOM_GRAPH, "selectedData"),
        State(ids.SELECTION, "data"))),
    _Wire(draw_som, False, (
        Output(ids.SOM_GRAPH, "figure"), Input(ids.SELECTION, "data"), Input(ids.SOM_LAYER, "value"))),
    _Wire(update_regions, False, (
        Output(ids.ROI_GRAPH, "figure"), Output(ids.ROI_GRAPH, "style"), Output(ids.REGIONS, "data"),
        Output(ids.SUMMARY, "children"), Input(ids.SELECTION, "data"), Input(ids.CORRECTION, "value"),
        Input(ids.ALPHA, "value"), Input(ids.ROI_COUNT, "value"), Input(ids.ROI_SCORES, "value"),
        State(ids.CROSSHAIR, "data"))),
    _Wire(highlight_roi, False, (
        Output(ids.ROI_GRAPH, "figure", allow_duplicate=True), Input(ids.CROSSHAIR, "data"),
        State(ids.REGIONS, "data"))),
    _Wire(update_correlations, False, (
        Output(ids.CORRELATION_GRAPH, "figure"), Output(ids.CORRELATION_GRAPH, "style"),
        Output(ids.P_FLOOR, "children"), Input(ids.REGIONS, "data"), Input(ids.FDR, "value"),
        Input(ids.PERMUTATIONS, "value"), Input(ids.CORRELATION_MODE, "value"))),
    _Wire(open_scatter, True, (
        Output(ids.SCATTER_MODAL, "is_open"), Output(ids.SCATTER_GRAPH, "figure"),
        Input(ids.CORRELATION_GRAPH, "clickData"), Input(ids.SCATTER_VIEW, "value"), State(ids.SELECTION, "data"),
        State(ids.REGIONS, "data"), State(ids.PERMUTATIONS, "value"), State(ids.SCATTER_MODAL, "is_open"))),
    _Wire(_crosshair_inputs, True, (
        Output(ids.CROSSHAIR, "data"), *(Input(ids.SLICE_GRAPHS[p], "clickData") for p in ids.PLANES),
        Input(ids.ROI_GRAPH, "clickData"), Input(ids.PEAK, "n_clicks"), Input(ids.KEYS, "data"),
        State(ids.CROSSHAIR, "data"), State(ids.SELECTION, "data"))),
    _Wire(_slice_inputs, True, (
        *(Output(ids.SLICE_GRAPHS[p], "figure") for p in ids.PLANES), Output(ids.SLICE_COLORBAR, "figure"),
        Output(ids.SLICE_NOTE, "children"), Input(ids.SELECTION, "data"), Input(ids.CROSSHAIR, "data"),
        Input(ids.THRESHOLD, "value"), Input(ids.OPACITY, "value"), Input(ids.RADIOLOGICAL, "value"),
        Input(ids.RANGE_MODE, "value"), Input(ids.RANGE_MAX, "value"))),
)
"""Every callback of the explorer; none runs on page load (the layout carries the first state)."""


def _bind(ex: Explorer, wire: _Wire) -> Callable:
    """The handler as Dash calls it: the browser's values in, ``ex`` (and the triggering id) added."""
    if wire.triggered:
        def callback(*values):
            return wire.handler(ex, ctx.triggered_id, *values)
    else:
        def callback(*values):
            return wire.handler(ex, *values)
    callback.__name__ = wire.handler.__name__
    return callback


def register(app, ex: Explorer) -> None:
    """Attach every callback of :data:`_WIRES` to ``app``; each closes over the read-only explorer ``ex``."""
    for wire in _WIRES:
        app.callback(*wire.dependencies, prevent_initial_call=True)(_bind(ex, wire))
