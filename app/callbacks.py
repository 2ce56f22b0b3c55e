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

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

from dash import Input, Output, Patch, State, ctx, no_update

from analysis.exploration.cohort_analysis import CORRECTIONS
from app import ids, state, views
from app.figures.slices import colorbar_figure, crosshair_shapes, slice_figure, slice_updates
from app.layout import ROI_COUNTS, permutation_counts, summary_panel
from app.state import ALPHAS, FDR_LEVELS
from app.views import Explorer

# --- what the browser sends -----------------------------------------------------------------------------------------


def _number(value, default: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return default
    return number if math.isfinite(number) else default


def _selection(ex: Explorer, value) -> dict | None:
    """A selection store's value, if it names a cohort of the run and units on its map (the run's, or the map of
    the sweep grid it names)."""
    if not isinstance(value, dict) or value.get("cohort") not in ex.run.cohorts:
        return None
    grid = value.get("grid")
    checked_grid = views.check_grid(grid) if grid is not None else None
    if grid is not None and (checked_grid is None or checked_grid.norms not in ex.som_inputs):
        return None
    units = value.get("units")
    points = [{"customdata": u} for u in units] if isinstance(units, list) else None
    checked = views.units_from_points(ex, points, checked_grid)
    if points is None or len(checked) != len(units):
        return None
    return {"cohort": value["cohort"], "units": checked, "grid": _grid_value(checked_grid)}


_grid_value = views.grid_value


def _subject(ex: Explorer, value) -> str | None:
    """The found subject, if the value names one of the run's subjects."""
    return value if isinstance(value, str) and value in ex.run.row_of else None


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
                     current: dict | None, sweep_click: dict | None = None, sweep_map_data: dict | None = None,
                     topology: str | None = None) -> dict:
    """A new cohort selects its prototype on the map shown; a click, shift-click or box/lasso selection on the SOM
    (or on the sweep room's map) selects the units it names (an empty one keeps the last selection); a click on a
    sweep cell shows that grid's map with the cohort's maximal prototype selected; the run's-map button goes back
    to the run's own map."""
    current = _selection(ex, current)
    grid = views.check_grid((current or {}).get("grid"))
    if trigger in (ids.SOM_GRAPH, ids.SWEEP_MAP):
        data = selected_data if trigger == ids.SOM_GRAPH else sweep_map_data
        units = views.units_from_points(ex, (data or {}).get("points"), grid) if current else []
        if not units:
            return no_update
        return {"cohort": current["cohort"], "units": units, "grid": current["grid"]}
    if trigger == ids.SWEEP_GRAPH:
        points = (sweep_click or {}).get("points") or []
        cell = views.sweep_cell(ex, current["cohort"], points[0]) if points and current else None
        if cell is None:
            return no_update
        grid = views.check_grid({"rows": cell[0], "cols": cell[1], "topology": topology or "rectangular"})
        if grid is None:
            return no_update
        return {"cohort": current["cohort"], "units": views.prototype_units(ex, current["cohort"], grid),
                "grid": _grid_value(grid)}
    if trigger == ids.RUN_MAP:
        if current is None or not current["grid"]:
            return no_update
        return {"cohort": current["cohort"], "units": views.prototype_units(ex, current["cohort"]), "grid": None}
    if cohort not in ex.run.cohorts:
        return no_update
    return {"cohort": cohort, "units": views.prototype_units(ex, cohort, grid), "grid": _grid_value(grid)}


def switch_som_input(ex: Explorer, norms, current: dict | None) -> dict:
    """The SOM-input control: the map of the same grid fitted on the chosen norms (the score norms, or the score and
    GNSM norms), with the cohort's prototype selected; the score norms at the run's grid are the run's own map."""
    current = _selection(ex, current)
    if current is None or norms not in ex.som_inputs:
        return no_update
    grid = views.check_grid(current["grid"]) or ex.run_grid
    chosen = ex.shown_grid(grid._replace(norms=norms))
    if views.grid_value(chosen) == current["grid"]:
        return no_update
    return {"cohort": current["cohort"], "units": views.prototype_units(ex, current["cohort"], chosen),
            "grid": views.grid_value(chosen)}


def draw_som(ex: Explorer, selection: dict, layer: str, subject=None):
    selection = _selection(ex, selection)
    if selection is None:
        return no_update
    return views.som_view(ex, selection["cohort"], "hits" if layer == "hits" else "u_matrix", selection["units"],
                          views.check_grid(selection["grid"]), _subject(ex, subject))


def draw_maps(ex: Explorer, selection: dict, layer: str, subject=None):
    """The map view, the sweep room's copy of it, the run's-map button (shown on a sweep grid's map) and the
    stability badge with its full sentence as the tooltip."""
    figure = draw_som(ex, selection, layer, subject)
    if figure is no_update:
        return no_update, no_update, no_update, no_update, no_update
    selection = _selection(ex, selection)
    button = {} if selection["grid"] else {"display": "none"}
    return figure, figure, button, *views.stability_note(ex, selection)


# --- region step ----------------------------------------------------------------------------------------------------


def update_regions(ex: Explorer, selection: dict, correction: str, alpha, shown: str, scores: str,
                   crosshair: dict | None, subject=None):
    """The live region step of the selection on the chosen ROI scores (adjusted or raw): ROI box plots, the step's
    result for the correlations, the summary."""
    selection = _selection(ex, selection)
    if (selection is None or correction not in CORRECTIONS or str(alpha) not in ALPHAS
            or not isinstance(scores, str) or scores not in ex.run.roi_tables):
        return no_update, no_update, no_update, no_update
    alpha = float(alpha)
    cohort, units, grid = selection["cohort"], selection["units"], views.check_grid(selection["grid"])
    step = views.regions(ex, cohort, units, correction, alpha, scores, grid)
    count = ROI_COUNTS.get(str(shown), ROI_COUNTS["10"])
    highlighted = (_crosshair(ex, crosshair) or {}).get("roi")
    figure = views.roi_view(ex, cohort, units, step, count, highlighted, scores,
                            views.ViewContext(grid, _subject(ex, subject)))
    store = {"cohort": cohort, "units": units, "significant": step.significant_rois,
             "shown": step.significant_rois[:count], "kept": len(step.kept_rois), "correction": correction,
             "alpha": alpha, "scores": scores}
    height = views.roi_height(len(store["shown"]))
    return figure, {"height": f"{height}px"}, store, summary_panel(views.summary(ex, cohort, units, grid), ex.styles)


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
    """A click on a correlation cell opens its scatter (raw values or ranks, points by selection membership, the
    found subject, named by the selection's ``subject`` key when the page passes one, ringed)."""
    subject = _subject(ex, selection.get("subject")) if isinstance(selection, dict) else None
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
    return True, views.scatter_view(ex, selection["cohort"], selection["units"], (roi, behaviour),
                                    "rank" if view == "rank" else "raw", stats, regions["scores"],
                                    views.ViewContext(views.check_grid(selection["grid"]), subject))


def current_pair(ex: Explorer, is_open, figure) -> list:
    """The pair of the open scatter (kept in the URL), or [] when the scatter is closed."""
    pair = ((figure or {}).get("layout") or {}).get("meta") if isinstance(figure, dict) else None
    if not is_open or not isinstance(pair, dict) or not isinstance(pair.get("pair"), list):
        return []
    roi, behaviour = (pair["pair"] + [None, None])[:2]
    known = ex.run.behaviour is not None and behaviour in ex.run.behaviour.columns
    return [roi, behaviour] if roi in ex.run.roi_labels and known else []


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
        peak = views.selection_peak(ex, selection["cohort"], selection["units"], views.check_grid(selection["grid"]))
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


def draw_slices(ex: Explorer, trigger: str | None, selection: dict, crosshair: dict, controls: SliceControls,
                subject=None, own_heatmap=False):
    """The three views of the selection's mean heatmap (or, with ``own_heatmap``, of the found subject's own). A
    crosshair move patches only what changed: the slices of the planes it crossed and the crosshair lines of all
    three."""
    selection, crosshair, subject = _selection(ex, selection), _crosshair(ex, crosshair), _subject(ex, subject)
    if selection is None or crosshair is None:
        return no_update, no_update, no_update, no_update, no_update
    if own_heatmap and subject is not None:
        inside = [subject]
    else:
        inside, _ = views.cohort_members(ex, selection["cohort"], selection["units"],
                                         views.check_grid(selection["grid"]))
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
    if own_heatmap and subject is not None:
        note = (f"Heatmap of subject {subject} ({ex.run.subjects.at[subject, 'cohort']}); "
                f"|value| ≥ {threshold:g} {ex.unit} shown.")
    elif inside:
        note = (f"Mean heatmap of the {len(inside)} {selection['cohort']} subjects in the selection; "
                f"|value| ≥ {threshold:g} {ex.unit} shown.")
    else:
        note = f"No {selection['cohort']} subject in the selection: nothing to average."
    return (*drawn, colorbar, note)


# --- the view state in the URL, the run picker, newer runs -------------------------------------------------------


def view_state(ex: Explorer, *values) -> dict | None:
    """The view state the controls and stores show now (:mod:`app.state`), or None if a part of it is unusable.
    ``values``: selection, crosshair, ROI scores, correction, alpha, q, permutations, room, subject, open pair (the
    order of the URL callback's inputs)."""
    selection, crosshair, scores, correction, alpha, q, n_permutations, tab, subject, pair = values
    selection, crosshair = _selection(ex, selection), _crosshair(ex, crosshair)
    if selection is None or crosshair is None:
        return None
    return {
        "run": ex.run.run_id, "tab": tab if tab in state.TABS else "explore", "cohort": selection["cohort"],
        "units": selection["units"], "grid": selection["grid"],
        "scores": scores if scores in ex.run.roi_tables else ex.run.default_roi_scores,
        "correction": correction if correction in state.CORRECTIONS else "bonferroni",
        "alpha": str(alpha) if str(alpha) in ALPHAS else "0.05", "q": str(q) if str(q) in FDR_LEVELS else "0.1",
        "permutations": str(_permutations(ex, n_permutations) or ex.refresh_permutations()),
        "voxel": crosshair["voxel"], "plane": crosshair["plane"], "roi": crosshair["roi"],
        "pair": pair if isinstance(pair, list) and len(pair) == 2 else None, "subject": _subject(ex, subject),
    }


def sync_url(ex: Explorer, *values):
    """Write the view state into the URL fragment (and the view-state store, so the page knows the fragment is
    its own)."""
    current = view_state(ex, *values)
    if current is None:
        return no_update, no_update
    return state.encode(current), current


def default_state(ex: Explorer, cohort: str | None = None) -> dict:
    """The view a run opens on: :func:`app.default_cohort`'s prototype, the refresh's settings, the crosshair on
    the prototype's strongest voxel."""
    from app import default_cohort

    cohort = cohort if cohort in ex.run.cohorts else default_cohort(ex.run)
    return {
        "run": ex.run.run_id, "tab": "explore", "cohort": cohort, "units": views.prototype_units(ex, cohort),
        "grid": None, "scores": ex.run.default_roi_scores, "correction": "bonferroni", "alpha": "0.05", "q": "0.1",
        "permutations": str(ex.refresh_permutations()), "voxel": [int(v) for v in views.start_voxel(ex, cohort)],
        "plane": "axial", "roi": None, "pair": None, "subject": None,
    }


def _run_of(search) -> str | None:
    from urllib.parse import parse_qs

    values = parse_qs(str(search or "").lstrip("?")).get("run") or [None]
    return values[0]


def render(registry, search, fragment, shown_state, shown_run, build_page):
    """The page a URL names: the run of its query (default: the run the explorer started on) in the state of its
    fragment. Nothing is redrawn when the URL shows the page's own state (its own fragment update, or a first
    load of the plain address); a Back, a pasted link or the run picker redraws. Returns (page, run id, view
    state, notice open, notice text)."""
    run_id = _run_of(search) or registry.first_id
    ex = registry.explorer(run_id)
    if ex is None:
        return (no_update, no_update, no_update, True,
                f"run {run_id!r} is not a published run of this study; showing run {shown_run}.")
    target, problems = state.restore(ex, fragment, default_state(ex), permutation_counts(ex.refresh_permutations()))
    target["run"] = ex.run.run_id
    notice = (True, "Not understood, left at the defaults: " + "; ".join(problems) + ".") if problems else (False, "")
    if target == shown_state and ex.run.run_id == shown_run:
        return (no_update, no_update, no_update, *notice)
    return (build_page(ex, target), ex.run.run_id, target, *notice)


def pick_run(registry, run_id, shown_run, cohort):
    """The run picker: point the URL at the chosen run (keeping the cohort when it has one); the page follows."""
    if run_id == shown_run or run_id not in registry.run_ids():
        return no_update, no_update
    return f"?run={run_id}", f"#tab=explore&cohort={cohort}" if isinstance(cohort, str) else ""


def newer_run(registry, _tick, shown_run):
    """A notice when the store publishes a run newer than the one shown, with a link that opens it."""
    from dash import html

    latest = registry.latest_id()
    if latest == shown_run or latest < str(shown_run):
        return False, no_update
    return True, [html.Div(f"Run {latest} was published after the one shown ({shown_run})."),
                  html.A("open it", href=f"?run={latest}", className="fw-semibold")]


# --- sweeps started from the browser --------------------------------------------------------------------------------


def start_sweep(ex: Explorer, jobs, trigger, *values):
    """Start a sweep of the selection's cohort (or cancel the running one). ``values``: the start and cancel
    buttons' clicks (they only trigger), the selection, the row and column ranges, the topology, the job store.
    Returns (job store, poll disabled, status text, cancel disabled)."""
    from analysis.exploration.sweep import parse_range

    start, cancel, selection, rows, cols, topology, job = values
    selection = _selection(ex, selection)
    # Dash also calls this when a link rebuilds the page (no click then): only a click starts or cancels
    clicked = {ids.SWEEP_START: start, ids.SWEEP_CANCEL: cancel}.get(trigger)
    if selection is None or not clicked:
        return no_update, no_update, no_update, no_update
    if trigger == ids.SWEEP_CANCEL:
        stopped = jobs.cancel((job or {}).get("job"))
        return no_update, no_update, "cancelling: the sweep stops after the grids in progress" if stopped else \
            "no sweep is running", no_update
    try:
        row_range, col_range = parse_range(str(rows), "rows"), parse_range(str(cols), "columns")
    except ValueError as exc:
        return no_update, no_update, str(exc), no_update
    if row_range[-1] > 30 or col_range[-1] > 30:
        return no_update, no_update, "rows and columns: at most 30", no_update
    if topology not in ("rectangular", "hexagonal"):
        return no_update, no_update, "topology: rectangular or hexagonal", no_update
    job_id, message = jobs.start(ex.run.run_dir, ex.run.reference_cohort, selection["cohort"], row_range, col_range,
                                 topology)
    if job_id is None:
        return no_update, no_update, message, no_update
    return {"job": job_id, "cohort": selection["cohort"]}, False, message, False


def poll_sweep(ex: Explorer, jobs, _tick, job):
    """The running sweep's progress bar; when it ends, its status and the job id in the done store (which
    redraws the sweep heatmap and the badge in their own callback, so this answer stays fast: a slow answer
    would be overtaken by the next poll's). Returns (progress value, progress max, progress label, poll
    disabled, status, cancel disabled, done store)."""
    job_id = (job or {}).get("job")
    status = jobs.status(job_id)
    if status is None:
        return no_update, no_update, no_update, True, no_update, True, no_update
    done, total = status["done"], status["total"]
    label = f"{done} of {total} grids"
    if status["state"] == "running":
        return done, total, label, False, f"sweeping {status['cohort']}: {label}, {status['seconds']:.0f} s", \
            False, no_update
    text = f"{status['cohort']}: {status['message']} ({status['seconds']:.0f} s)"
    return done, total, label, True, text, True, job_id if status["state"] == "finished" else no_update


def draw_sweep(ex: Explorer, selection, _done=None):
    """The sweep heatmap of the selection's cohort with the grid shown marked, and the stability badge and its
    tooltip (after a new selection, or a sweep finishing)."""
    selection = _selection(ex, selection)
    if selection is None:
        return no_update, no_update, no_update
    return (views.sweep_view(ex, selection["cohort"], views.check_grid(selection["grid"])),
            *views.stability_note(ex, selection))


# --- export from the browser ---------------------------------------------------------------------------------


def start_export(ex: Explorer, exports, *values):
    """Start exporting every figure of the selection, on the map it is on (the run's, or a sweep grid's), with the
    page's settings (:mod:`app.export`). ``values``: the button's clicks (they only trigger), the selection,
    correction, alpha, q, ROI scores, permutations and crosshair. Returns (job store, poll disabled, notice open,
    notice text)."""
    from app.export import ExportSettings

    clicks, selection, correction, alpha, q, scores, n_permutations, crosshair = values
    selection, crosshair = _selection(ex, selection), _crosshair(ex, crosshair)
    if not clicks or selection is None or correction not in state.CORRECTIONS or str(alpha) not in ALPHAS \
            or str(q) not in FDR_LEVELS or scores not in ex.run.roi_tables:
        return no_update, no_update, no_update, no_update
    settings = ExportSettings(correction=correction, alpha=float(alpha), q=float(q), scores=scores,
                              n_permutations=_permutations(ex, n_permutations) or ex.refresh_permutations(),
                              crosshair=tuple(crosshair["voxel"]) if crosshair else None)
    job_id, message = exports.start(ex, selection["cohort"], selection["units"], settings,
                                    views.check_grid(selection["grid"]))
    if job_id is None:
        return no_update, no_update, True, message
    return {"job": job_id}, False, True, f"{message}: preparing the figures ..."


def poll_export(ex: Explorer, exports, _tick, job):
    """The running export's progress in the notice; when it ends, the job id in the done store, which fetches the
    zip (:func:`send_export`). Returns (done store, poll disabled, notice open, notice text)."""
    job_id = (job or {}).get("job")
    status = exports.status(job_id)
    if status is None:
        return no_update, True, no_update, no_update
    if status["state"] == "running":
        where = f"{status['done']} of {status['total']} figures rendered" if status["total"] else "building figures"
        return no_update, False, True, f"Exporting: {where} ({status['seconds']:.0f} s) ..."
    if status["state"] == "failed":
        return no_update, True, True, f"The export failed: {status['message']}"
    return job_id, True, True, f"{status['name']}: {status['message']} ({status['seconds']:.0f} s)."


def send_export(ex: Explorer, exports, job_id):
    """The finished export's zip, as a download (handed over once)."""
    from dash import dcc

    taken = exports.take(job_id)
    if taken is None:
        return no_update
    name, data = taken
    return dcc.send_bytes(data, name)


# --- the subject room ----------------------------------------------------------------------------------------------


def subject_room(ex: Explorer, subject, scores):
    """The found subject's story: header, norm profile, centile chart, top ROIs."""
    from app.layout import subject_rois

    header, profile, chart, story = views.subject_view(
        ex, _subject(ex, subject), scores if scores in ex.run.roi_tables else ex.run.default_roi_scores)
    return header, profile, chart, subject_rois(story)


def show_subject_heatmap(ex: Explorer, clicks, subject):
    """The subject room's button: the slice views show the subject's own heatmap, in the explore room."""
    if not clicks or _subject(ex, subject) is None:
        return no_update, no_update
    return True, "explore"


# --- wiring ---------------------------------------------------------------------------------------------------------


def _selection_inputs(ex: Explorer, trigger: str | None, *values):
    """:func:`choose_selection` (or :func:`switch_som_input`) from the callback's inputs (the run's-map button's
    click count only triggers), and the SOM-input control's value for the selection's map."""
    cohort, som_data, sweep_click, sweep_map_data, _run_map, som_input, current = values
    if trigger == ids.SOM_INPUT:
        selection = switch_som_input(ex, som_input, current)
    else:
        selection = choose_selection(ex, trigger, cohort, som_data, current, sweep_click, sweep_map_data,
                                     views.sweep_topology(ex, (current or {}).get("cohort")))
    if selection is no_update:
        return no_update, no_update
    return selection, (selection["grid"] or {}).get("norms", "msma")


def _scatter_inputs(ex: Explorer, trigger: str | None, *values):
    """:func:`open_scatter` from the callback's inputs, the found subject (last) passed in the selection."""
    *values, subject = values
    click, view, selection, *rest = values
    selection = {**selection, "subject": subject} if isinstance(selection, dict) else selection
    return open_scatter(ex, trigger, click, view, selection, *rest)


def _crosshair_inputs(ex: Explorer, trigger: str | None, *values):
    """:func:`move_crosshair` from the callback's inputs: one click per plane, then the rest (the peak button's
    click count only triggers)."""
    *clicks, roi_click, peak, keys, crosshair, selection = values
    if trigger == ids.PEAK and not peak:  # a rebuilt page's new button, not a click
        return no_update
    return move_crosshair(ex, trigger, dict(zip(ids.PLANES, clicks, strict=True)), roi_click, keys, crosshair,
                          selection)


def _slice_inputs(ex: Explorer, trigger: str | None, selection, crosshair, *controls):
    """:func:`draw_slices` from the callback's inputs: the display controls, then the subject and the switch."""
    *controls, subject, own = controls
    return draw_slices(ex, trigger, selection, crosshair, SliceControls(*controls), subject, bool(own))


@dataclass(frozen=True)
class _Wire:
    """One callback: its handler, whether the handler takes the triggering id, and its outputs, inputs and states
    in the order the handler takes them."""

    handler: Callable
    triggered: bool
    dependencies: tuple


_STATE_INPUTS = (
    Input(ids.SELECTION, "data"), Input(ids.CROSSHAIR, "data"), Input(ids.ROI_SCORES, "value"),
    Input(ids.CORRECTION, "value"), Input(ids.ALPHA, "value"), Input(ids.FDR, "value"),
    Input(ids.PERMUTATIONS, "value"), Input(ids.ROOM, "value"), Input(ids.SUBJECT, "value"), Input(ids.PAIR, "data"),
)

_WIRES = (
    _Wire(_selection_inputs, True, (
        Output(ids.SELECTION, "data"), Output(ids.SOM_INPUT, "value"), Input(ids.COHORT, "value"),
        Input(ids.SOM_GRAPH, "selectedData"), Input(ids.SWEEP_GRAPH, "clickData"), Input(ids.SWEEP_MAP, "selectedData"),
        Input(ids.RUN_MAP, "n_clicks"), Input(ids.SOM_INPUT, "value"), State(ids.SELECTION, "data"))),
    _Wire(draw_maps, False, (
        Output(ids.SOM_GRAPH, "figure"), Output(ids.SWEEP_MAP, "figure"), Output(ids.RUN_MAP, "style"),
        Output(ids.STABILITY, "children"), Output(ids.STABILITY, "title"), Input(ids.SELECTION, "data"),
        Input(ids.SOM_LAYER, "value"),
        Input(ids.SUBJECT, "value"))),
    _Wire(update_regions, False, (
        Output(ids.ROI_GRAPH, "figure"), Output(ids.ROI_GRAPH, "style"), Output(ids.REGIONS, "data"),
        Output(ids.SUMMARY, "children"), Input(ids.SELECTION, "data"), Input(ids.CORRECTION, "value"),
        Input(ids.ALPHA, "value"), Input(ids.ROI_COUNT, "value"), Input(ids.ROI_SCORES, "value"),
        State(ids.CROSSHAIR, "data"), Input(ids.SUBJECT, "value"))),
    _Wire(highlight_roi, False, (
        Output(ids.ROI_GRAPH, "figure", allow_duplicate=True), Input(ids.CROSSHAIR, "data"),
        State(ids.REGIONS, "data"))),
    _Wire(update_correlations, False, (
        Output(ids.CORRELATION_GRAPH, "figure"), Output(ids.CORRELATION_GRAPH, "style"),
        Output(ids.P_FLOOR, "children"), Input(ids.REGIONS, "data"), Input(ids.FDR, "value"),
        Input(ids.PERMUTATIONS, "value"), Input(ids.CORRELATION_MODE, "value"))),
    _Wire(_scatter_inputs, True, (
        Output(ids.SCATTER_MODAL, "is_open"), Output(ids.SCATTER_GRAPH, "figure"),
        Input(ids.CORRELATION_GRAPH, "clickData"), Input(ids.SCATTER_VIEW, "value"), State(ids.SELECTION, "data"),
        State(ids.REGIONS, "data"), State(ids.PERMUTATIONS, "value"), State(ids.SCATTER_MODAL, "is_open"),
        State(ids.SUBJECT, "value"))),
    _Wire(current_pair, False, (
        Output(ids.PAIR, "data"), Input(ids.SCATTER_MODAL, "is_open"), Input(ids.SCATTER_GRAPH, "figure"))),
    _Wire(_crosshair_inputs, True, (
        Output(ids.CROSSHAIR, "data"), *(Input(ids.SLICE_GRAPHS[p], "clickData") for p in ids.PLANES),
        Input(ids.ROI_GRAPH, "clickData"), Input(ids.PEAK, "n_clicks"), Input(ids.KEYS, "data"),
        State(ids.CROSSHAIR, "data"), State(ids.SELECTION, "data"))),
    _Wire(_slice_inputs, True, (
        *(Output(ids.SLICE_GRAPHS[p], "figure") for p in ids.PLANES), Output(ids.SLICE_COLORBAR, "figure"),
        Output(ids.SLICE_NOTE, "children"), Input(ids.SELECTION, "data"), Input(ids.CROSSHAIR, "data"),
        Input(ids.THRESHOLD, "value"), Input(ids.OPACITY, "value"), Input(ids.RADIOLOGICAL, "value"),
        Input(ids.RANGE_MODE, "value"), Input(ids.RANGE_MAX, "value"), Input(ids.SUBJECT, "value"),
        Input(ids.SUBJECT_HEATMAP, "value"))),
    _Wire(sync_url, False, (Output(ids.URL, "hash"), Output(ids.VIEW_STATE, "data"), *_STATE_INPUTS)),
    _Wire(draw_sweep, False, (
        Output(ids.SWEEP_GRAPH, "figure"), Output(ids.STABILITY, "children", allow_duplicate=True),
        Output(ids.STABILITY, "title", allow_duplicate=True), Input(ids.SELECTION, "data"),
        Input(ids.SWEEP_DONE, "data"))),
    _Wire(subject_room, False, (
        Output(ids.SUBJECT_HEADER, "children"), Output(ids.SUBJECT_PROFILE, "figure"),
        Output(ids.SUBJECT_CENTILES, "figure"), Output(ids.SUBJECT_ROIS, "children"), Input(ids.SUBJECT, "value"),
        Input(ids.ROI_SCORES, "value"))),
    _Wire(show_subject_heatmap, False, (
        Output(ids.SUBJECT_HEATMAP, "value"), Output(ids.ROOM, "value"), Input(ids.SUBJECT_SHOW, "n_clicks"),
        State(ids.SUBJECT, "value"))),
)
"""Every callback of one run's page; none runs on page load (the page carries its first state). Each also
takes the run store, last, to find its run."""

_SWEEP_WIRES = (
    _Wire(start_sweep, True, (
        Output(ids.SWEEP_JOB, "data"), Output(ids.SWEEP_POLL, "disabled"), Output(ids.SWEEP_STATUS, "children"),
        Output(ids.SWEEP_CANCEL, "disabled"), Input(ids.SWEEP_START, "n_clicks"), Input(ids.SWEEP_CANCEL, "n_clicks"),
        State(ids.SELECTION, "data"), State(ids.SWEEP_ROWS, "value"), State(ids.SWEEP_COLS, "value"),
        State(ids.SWEEP_TOPOLOGY, "value"), State(ids.SWEEP_JOB, "data"))),
    _Wire(poll_sweep, False, (
        Output(ids.SWEEP_PROGRESS, "value"), Output(ids.SWEEP_PROGRESS, "max"), Output(ids.SWEEP_PROGRESS, "label"),
        Output(ids.SWEEP_POLL, "disabled", allow_duplicate=True),
        Output(ids.SWEEP_STATUS, "children", allow_duplicate=True),
        Output(ids.SWEEP_CANCEL, "disabled", allow_duplicate=True), Output(ids.SWEEP_DONE, "data"),
        Input(ids.SWEEP_POLL, "n_intervals"), State(ids.SWEEP_JOB, "data"))),
)
"""The sweep job's callbacks: their handlers also take the explorer's :class:`app.jobs.SweepJobs`."""

_EXPORT_WIRES = (
    _Wire(start_export, False, (
        Output(ids.EXPORT_JOB, "data"), Output(ids.EXPORT_POLL, "disabled"), Output(ids.EXPORT_NOTE, "is_open"),
        Output(ids.EXPORT_NOTE, "children"), Input(ids.EXPORT, "n_clicks"), State(ids.SELECTION, "data"),
        State(ids.CORRECTION, "value"), State(ids.ALPHA, "value"), State(ids.FDR, "value"),
        State(ids.ROI_SCORES, "value"), State(ids.PERMUTATIONS, "value"), State(ids.CROSSHAIR, "data"))),
    _Wire(poll_export, False, (
        Output(ids.EXPORT_DONE, "data"), Output(ids.EXPORT_POLL, "disabled", allow_duplicate=True),
        Output(ids.EXPORT_NOTE, "is_open", allow_duplicate=True),
        Output(ids.EXPORT_NOTE, "children", allow_duplicate=True), Input(ids.EXPORT_POLL, "n_intervals"),
        State(ids.EXPORT_JOB, "data"))),
    _Wire(send_export, False, (Output(ids.EXPORT_DOWNLOAD, "data"), Input(ids.EXPORT_DONE, "data"))),
)
"""The browser export's callbacks: their handlers also take the explorer's :class:`app.jobs.ExportJobs`."""


def _bind(registry, wire: _Wire, extra: tuple = ()) -> Callable:
    """The handler as Dash calls it: the browser's values in (the run store last), the run's explorer (and the
    triggering id, and ``extra``) added. A run id that names no run of the store changes nothing."""
    from dash.exceptions import PreventUpdate

    def callback(*values):
        *values, run_id = values
        ex = registry.explorer(run_id)
        if ex is None:
            raise PreventUpdate
        if wire.triggered:
            return wire.handler(ex, *extra, ctx.triggered_id, *values)
        return wire.handler(ex, *extra, *values)

    callback.__name__ = wire.handler.__name__
    return callback


ROOMS_JS = (
    "function(room) {\n"
    f"    const rooms = {json.dumps(list(ids.ROOMS))};\n"
    "    return rooms.map(r => (r === room ? {} : {display: 'none'}));\n"
    "}\n"
)

LINK_JS = """
function(n) { return window.location.href; }
"""


def register(app, registry, jobs, build_page, exports=None) -> None:
    """Attach every callback to ``app``: those of a run's page (each finds its run in the registry), the sweep
    jobs', and the page frame's (the URL, the run picker, the newer-run notice, the rooms, the copy-link button)."""
    run = State(ids.RUN, "data")
    for wire in _WIRES:
        app.callback(*wire.dependencies, run, prevent_initial_call=True)(_bind(registry, wire))
    for wire in _SWEEP_WIRES:
        app.callback(*wire.dependencies, run, prevent_initial_call=True)(_bind(registry, wire, (jobs,)))
    for wire in _EXPORT_WIRES:
        app.callback(*wire.dependencies, run, prevent_initial_call=True)(_bind(registry, wire, (exports,)))

    def _render(search, fragment, shown_state, shown_run):
        return render(registry, search, fragment, shown_state, shown_run, build_page)

    app.callback(
        Output(ids.PAGE, "children"), Output(ids.RUN, "data"), Output(ids.VIEW_STATE, "data", allow_duplicate=True),
        Output(ids.LINK_NOTICE, "is_open"), Output(ids.LINK_NOTICE, "children"),
        Input(ids.URL, "search"), Input(ids.URL, "hash"), State(ids.VIEW_STATE, "data"), State(ids.RUN, "data"),
        prevent_initial_call="initial_duplicate",
    )(_render)

    def _pick(run_id, shown_run, cohort):
        return pick_run(registry, run_id, shown_run, cohort)

    app.callback(
        Output(ids.URL, "search"), Output(ids.URL, "hash", allow_duplicate=True), Input(ids.RUN_PICKER, "value"),
        State(ids.RUN, "data"), State(ids.COHORT, "value"), prevent_initial_call=True,
    )(_pick)

    def _newer(tick, shown_run):
        return newer_run(registry, tick, shown_run)

    app.callback(Output(ids.NEWER_RUN, "is_open"), Output(ids.NEWER_RUN, "children"),
                 Input(ids.RUN_POLL, "n_intervals"), State(ids.RUN, "data"), prevent_initial_call=True)(_newer)
    app.clientside_callback(ROOMS_JS, *(Output(ids.ROOMS[r], "style") for r in ids.ROOMS), Input(ids.ROOM, "value"),
                            prevent_initial_call=True)
    app.clientside_callback(LINK_JS, Output(ids.COPY_LINK, "content"), Input(ids.COPY_LINK, "n_clicks"),
                            prevent_initial_call=True)
