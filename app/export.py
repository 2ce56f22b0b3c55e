"""Every figure of one selection of a published run, for a paper: PNG, SVG and PDF, the numbers each draws (CSV) and
where they come from (JSON).

A selection is a cohort and SOM units, on the run's map or on the map of another grid size (a sweep grid, refitted as
:meth:`app.views.Explorer.map` fits it). Its figures are the explorer's own (built by :mod:`app.views`): the SOM map,
the cohort's grid-stability sweep (when the run has one), the box plots of the significant ROIs, their behaviour
correlations, the scatter of every pair at BH p < q, and the three brain slices at a crosshair; then restyled for
print (:func:`for_paper`): a fixed width of one or two journal columns, white background, fonts of at least
:data:`MIN_FONT` px. Beside each figure ``<name>.csv`` holds exactly the numbers it draws, read back from the figure's
own traces, and ``<name>.json`` the run, the selection, the settings, the package versions and the figure's files;
``export.json`` lists everything.

Images come from Kaleido 1.x, which drives the system Chromium: one browser serves every figure of an export, since
starting it is the slow part. :func:`export_selection` writes a folder, atomically (a failure leaves nothing);
:func:`export_zip` returns the same files as one zip for the browser's download.

Nothing a browser sends becomes a path unchecked: the cohort, grid, units and settings are checked against the run
(:class:`ExportError` names the argument, what was expected and what was found), every file name is reduced to
``[A-Za-z0-9_.-]`` and every path is checked to stay inside the export folder once resolved.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import math
import os
import re
import secrets
import shutil
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.exploration.cohort_analysis import CORRECTIONS
from analysis.runs.reader import PublishedRun
from app import views
from app.figures import wrap_text
from app.figures.slices import slice_figure
from app.figures.som import MAP_DOMAIN
from app.figures.sweep import sweep_data, sweep_figure
from app.views import Explorer

FORMATS = ("png", "svg", "pdf")
ONE_COLUMN_PX = 340
TWO_COLUMN_PX = 700
"""Figure widths in CSS pixels (96 per inch): one journal column (89 mm) and two (185 mm). Vector formats keep the
size (1 px = 0.75 pt), so a figure placed at its column width shows its fonts at their nominal size."""
PNG_SCALE = 3
"""PNG pixels per CSS pixel: about 290 dpi at the column width."""
MIN_FONT = 9
"""Smallest font in px (6.75 pt in print): the explorer's 8-9 px tick labels are raised to it."""
TITLE_FONT = 12
TITLE_TOP_PX = 8
"""Space between the top of a figure and its title."""
PAPER_FONT = {"family": "Arial, Helvetica, Liberation Sans, DejaVu Sans, sans-serif", "size": 10, "color": "#000000"}
SLICE_ORDER = ("axial", "coronal", "sagittal")
VERSIONED = ("msma-explorer", "plotly", "dash", "kaleido", "numpy", "pandas", "scipy", "statsmodels")
MAX_PERMUTATIONS = 100_000
RENDER_TIMEOUT_S = 90
NAME_LENGTH = 80


class RenderError(RuntimeError):
    """Kaleido or the browser failed on a figure; the message names it."""


class ExportError(ValueError):
    """An export cannot be made; the message names the argument, what was expected and what was found."""

    def __init__(self, argument: str, expected: str, found):
        self.argument, self.expected, self.found = argument, expected, found
        super().__init__(f"{argument}: expected {expected}; got {found!r}")


# --- settings -------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportSettings:
    """How the figures of a selection are computed and drawn; None means the run's own default (filled in by
    :meth:`resolve`)."""

    correction: str = "bonferroni"
    """Of the ROI tests: "bonferroni" or "bh"."""
    alpha: float = 0.05
    """Level of the corrected ROI p-values."""
    q: float = 0.1
    """BH level of the behaviour correlations; pairs below it get a scatter."""
    scores: str | None = None
    """ROI scores: "adjusted" (covariate-adjusted z) or "raw"; None: the run's default."""
    n_permutations: int | None = None
    """Of the correlations' permutation test; None: the refresh's count."""
    crosshair: tuple[int, int, int] | None = None
    """Voxel where the slices cut; None: the peak of the selection's mean heatmap."""
    outline_roi: str | None = None
    """ROI outlined on the slices, or None."""
    rois_shown: int | None = None
    """Box plots of at most this many significant ROIs (the most significant); None: all of them."""
    som_layer: str = "u_matrix"
    """What colours the SOM map: "u_matrix" or "hits" (the cohort's members per unit)."""
    correlation_mode: str = "full"
    """"full": every significant ROI x behaviour cell; "significant": only those with a pair at BH p < q."""
    radiological: bool = False
    threshold: float = 0.0
    """Smallest |heatmap value| drawn on the slices."""
    opacity: float = 0.85
    """Of the heatmap over the template."""
    formats: tuple[str, ...] = FORMATS

    def resolve(self, ex: Explorer) -> ExportSettings:
        """These settings checked against the run, with every None default filled in; raises :class:`ExportError`."""
        run = ex.run
        if self.correction not in CORRECTIONS:
            raise ExportError("correction", f"one of {sorted(CORRECTIONS)}", self.correction)
        alpha, q = _level("alpha", self.alpha), _level("q", self.q)
        scores = run.default_roi_scores if self.scores is None else self.scores
        if scores not in run.roi_tables:
            raise ExportError("scores", f"one of {sorted(run.roi_tables)} (ROI scores of run {run.run_id})", scores)
        permutations = ex.refresh_permutations() if self.n_permutations is None else self.n_permutations
        if not (_is_int(permutations) and 1 <= permutations <= MAX_PERMUTATIONS):
            raise ExportError("n_permutations", f"a whole number from 1 to {MAX_PERMUTATIONS:,}", permutations)
        crosshair = None if self.crosshair is None else _voxel(ex, self.crosshair)
        if self.outline_roi is not None and self.outline_roi not in run.roi_labels:
            raise ExportError("outline_roi", f"an ROI of the run's atlas ({len(run.roi_labels)} regions)",
                              self.outline_roi)
        if self.rois_shown is not None and not (_is_int(self.rois_shown) and self.rois_shown >= 1):
            raise ExportError("rois_shown", "a whole number >= 1, or None for every significant ROI",
                              self.rois_shown)
        if self.som_layer not in ("u_matrix", "hits"):
            raise ExportError("som_layer", "'u_matrix' or 'hits'", self.som_layer)
        if self.correlation_mode not in ("full", "significant"):
            raise ExportError("correlation_mode", "'full' or 'significant'", self.correlation_mode)
        threshold = _finite("threshold", self.threshold, 0.0, math.inf)
        opacity = _finite("opacity", self.opacity, 0.0, 1.0)
        formats = tuple(dict.fromkeys(self.formats)) if isinstance(self.formats, list | tuple) else ()
        if not formats or not set(formats) <= set(FORMATS):
            raise ExportError("formats", f"one or more of {list(FORMATS)}", self.formats)
        return replace(self, alpha=alpha, q=q, scores=scores, n_permutations=int(permutations), crosshair=crosshair,
                       threshold=threshold, opacity=opacity, formats=formats, radiological=bool(self.radiological))


def _is_int(value) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _finite(name: str, value, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        number = math.nan
    if isinstance(value, bool) or not (math.isfinite(number) and low <= number <= high):
        raise ExportError(name, f"a number from {low:g} to {high:g}", value)
    return number


def _level(name: str, value) -> float:
    number = _finite(name, value, 0.0, 1.0)
    if not 0 < number < 1:
        raise ExportError(name, "a level strictly between 0 and 1", value)
    return number


def _voxel(ex: Explorer, value) -> tuple[int, int, int]:
    shape = ex.geometry.shape
    if not (isinstance(value, list | tuple) and len(value) == 3
            and all(_is_int(v) and 0 <= v < n for v, n in zip(value, shape, strict=True))):
        raise ExportError("crosshair", f"a voxel [i, j, k] of the {'x'.join(map(str, shape))} template grid", value)
    return tuple(int(v) for v in value)


def check_grid(ex: Explorer, grid) -> views.MapGrid | None:
    """The grid whose map a selection is on: None (or the run's own grid on the score norms) for the run's map,
    else a :class:`app.views.MapGrid`, given as the browser's selection carries it (``{"rows", "cols", "topology",
    "norms"}``) or as a sequence ``(rows, cols[, topology[, norms]])``; the topology defaults to the run map's, the
    norms to the score norms. Rows and columns from 2 to 30, as the explorer fits them
    (:func:`app.views.check_grid`); GNSM norms only for a run that has them."""
    if grid is None:
        return None
    topology = ex.run.som.topology
    if isinstance(grid, dict):
        value = {"topology": topology, **grid}
    elif isinstance(grid, list | tuple) and len(grid) in (2, 3, 4):
        value = {"rows": grid[0], "cols": grid[1], "topology": grid[2] if len(grid) >= 3 else topology}
        if len(grid) == 4:
            value["norms"] = grid[3]
    else:
        value = None
    if value is not None and _is_int(value.get("rows")) and _is_int(value.get("cols")):
        value = {**value, "rows": int(value["rows"]), "cols": int(value["cols"])}
    checked = views.check_grid(value)
    if checked is None:
        raise ExportError("grid", "ROWS, COLS from 2 to 30, a topology 'rectangular' or 'hexagonal' and norms "
                          f"{' or '.join(repr(k) for k in views.SOM_INPUTS)}", grid)
    if checked.norms not in ex.som_inputs:
        raise ExportError("grid", f"norms {' or '.join(repr(k) for k in ex.som_inputs)} (this run has no "
                          f"{checked.norms} norms)", grid)
    return ex.shown_grid(checked)


def _map_description(grid) -> str:
    """How the map of a checked grid was made, for the JSON and the messages."""
    if grid is None:
        return "the run's"
    if grid.norms == "msma":
        return "refitted on the run's score norms (as msma sweep fits it)"
    return f"refitted on {views.SOM_INPUTS[grid.norms]}"


def grid_record(ex: Explorer, grid) -> dict:
    """The grid of a (checked) selection as the JSON records it: its size and topology, and whether it is the
    run's own map or one refitted on the run's score norms (or on them and the GNSM norms)."""
    som = ex.map(grid).som
    return {"rows": som.n_rows, "cols": som.n_cols, "topology": som.topology, "map": _map_description(grid),
            "norms": "msma" if grid is None else grid.norms}


def check_selection(ex: Explorer, cohort, units, grid=None) -> tuple[str, list[list[int]]]:
    """The cohort and units of a selection, checked against the run: a cohort of the run and one or more distinct
    [row, col] units on its map, or on the map of ``grid`` (checked by :func:`check_grid`)."""
    run = ex.run
    if not isinstance(cohort, str) or cohort not in run.cohorts:
        raise ExportError("cohort", f"one of {run.cohorts} (cohorts of run {run.run_id})", cohort)
    som = ex.map(grid).som
    where = "map" if grid is None else f"{som.topology} map {_map_description(grid)}"
    expected = f"one or more [row, col] units of the {som.n_rows} x {som.n_cols} {where}"
    if not isinstance(units, list | tuple) or not units:
        raise ExportError("units", expected, units)
    checked: list[list[int]] = []
    for unit in units:
        if not (isinstance(unit, list | tuple) and len(unit) == 2 and all(_is_int(v) for v in unit)
                and 0 <= unit[0] < som.n_rows and 0 <= unit[1] < som.n_cols):
            raise ExportError("units", expected, unit)
        if [int(unit[0]), int(unit[1])] not in checked:
            checked.append([int(unit[0]), int(unit[1])])
    return cohort, checked


# --- figures --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportFigure:
    """One figure of an export, styled for print, and exactly the numbers it draws."""

    name: str
    """File stem (made safe and unique when written)."""
    figure: go.Figure
    data: pd.DataFrame
    details: dict = field(default_factory=dict)
    """What the figure's JSON says about it beyond the common record (its pair, plane, test statistics ...)."""


def selection_figures(run: PublishedRun | Explorer, cohort, units, settings: ExportSettings | None = None, *,
                      grid=None) -> tuple[list[ExportFigure], ExportSettings]:
    """Every figure of the selection, built by the explorer's views and styled for print, with the settings as
    resolved (defaults filled in). ``grid``: the selection is on that grid's map (:func:`check_grid`), so the map,
    the members of its units and every figure drawn from them are that map's. Pure apart from reading the run (and
    fitting ``grid``'s map); nothing is rendered or written."""
    ex = run if isinstance(run, Explorer) else Explorer(run)
    grid = check_grid(ex, grid)
    cohort, units = check_selection(ex, cohort, units, grid)
    settings = (settings or ExportSettings()).resolve(ex)
    figures = [_som(ex, cohort, units, settings, grid)]
    sweep = _sweep(ex, cohort, grid)
    if sweep is not None:
        figures.append(sweep)
    step = views.regions(ex, cohort, units, settings.correction, settings.alpha, settings.scores, grid)
    figures.append(_boxes(ex, cohort, units, step, settings, grid))
    figures.extend(_correlations(ex, cohort, units, step.significant_rois, settings, grid))
    voxel = settings.crosshair or tuple(views.selection_peak(ex, cohort, units, grid)
                                        or [s // 2 for s in ex.geometry.shape])
    settings = replace(settings, crosshair=tuple(int(v) for v in voxel))
    figures.extend(_slices(ex, cohort, units, settings, grid))
    return figures, settings


def _som(ex: Explorer, cohort: str, units, settings: ExportSettings, grid) -> ExportFigure:
    som = ex.map(grid).som
    figure = views.som_view(ex, cohort, settings.som_layer, units, grid)
    map_width = MAP_DOMAIN * (TWO_COLUMN_PX - 84)  # the map's domain, inside the margins
    aspect = (som.n_rows - 1) * (math.sqrt(3) / 2 if som.topology == "hexagonal" else 1) + 1
    height = max(320, round(map_width * aspect / som.n_cols) + 118)  # title, margins, axis (the colour bar is beside)
    figure = for_paper(figure, TWO_COLUMN_PX, height)
    return ExportFigure("som_map", figure, som_data(figure, settings.som_layer, units),
                        {"kind": "SOM map", "layer": settings.som_layer, "grid": [som.n_rows, som.n_cols],
                         "topology": som.topology, "map": grid_record(ex, grid)["map"]})


def som_data(figure: go.Figure, layer: str, units) -> pd.DataFrame:
    """Per SOM unit: its row, column and place on the map, the value colouring it (``layer``), whether it is one of
    the selected ``units`` (outlined) and the cohorts whose maximal prototype it holds, with their member counts."""
    cells_trace = next(t for t in figure.data if t.name == "units")
    cells = np.asarray(cells_trace.customdata, dtype=int)
    heatmap = next((t for t in figure.data if t.type == "heatmap"), None)
    if heatmap is not None:
        values = np.asarray(heatmap.z, dtype=float)[cells[:, 0], cells[:, 1]]
    else:  # hexagonal: the cells are shapes, coloured from the units' marker colours
        values = np.asarray(cells_trace.marker.color, dtype=float)
    prototypes: dict[tuple[int, int], list[str]] = {}
    for trace in figure.data:
        if trace.legendgroup:
            unit = tuple(int(v) for v in trace.customdata[0])
            prototypes.setdefault(unit, []).append(f"{trace.legendgroup} ({int(trace.marker.size[0])})")
    frame = pd.DataFrame({"row": cells[:, 0], "col": cells[:, 1], "x": np.asarray(cells_trace.x, dtype=float),
                          "y": np.asarray(cells_trace.y, dtype=float), layer: values})
    chosen = {tuple(u) for u in units}
    frame["selected"] = [(r, c) in chosen for r, c in zip(frame["row"], frame["col"], strict=True)]
    frame["maximal_prototype_of"] = ["; ".join(prototypes.get((r, c), [])) for r, c in zip(frame["row"], frame["col"],
                                                                                           strict=True)]
    return frame


def _sweep(ex: Explorer, cohort: str, grid) -> ExportFigure | None:
    table = views.sweep_table(ex, cohort)
    if table is None or table.empty:
        return None
    view = ex.map(grid)
    shown = (view.som.n_rows, view.som.n_cols) if view.norms == "msma" else None  # as the explorer marks it
    figure = sweep_figure(table, cohort, shown)
    n_rows, n_cols = table["rows"].nunique(), table["cols"].nunique()
    heatmap_width = 0.36 * (TWO_COLUMN_PX - 90)
    figure = for_paper(figure, TWO_COLUMN_PX, max(300, round(heatmap_width * n_rows / n_cols) + 150))
    return ExportFigure("sweep", figure, sweep_data(table, shown),
                        {"kind": "grid-stability sweep", "grids": len(table),
                         "grid_shown": list(shown) if shown else None})


def _boxes(ex: Explorer, cohort: str, units, step, settings: ExportSettings, grid) -> ExportFigure:
    shown = len(step.significant_rois) if settings.rois_shown is None else settings.rois_shown
    figure = views.roi_view(ex, cohort, units, step, shown, None, settings.scores, views.ViewContext(grid))
    rois = step.significant_rois[:shown]
    figure = for_paper(figure, TWO_COLUMN_PX, max(320, 150 + 30 * len(rois)))
    tests = step.tests[step.tests["roi"].isin(rois)] if len(step.tests) else step.tests
    return ExportFigure("roi_boxes", figure, box_data(figure, ex.reference_p90(settings.scores)),
                        {"kind": "ROI box plots", "kept_rois": len(step.kept_rois),
                         "significant_rois": step.significant_rois, "shown_rois": rois,
                         "tests": _records(tests)})


def box_data(figure: go.Figure, reference_p90: pd.Series) -> pd.DataFrame:
    """One row per drawn subject and ROI: its group (box), id, ROI and score, and the ROI's reference 90th
    percentile (the dashed line)."""
    columns = ["group", "subject_id", "roi", "score", "reference_p90"]
    parts = [pd.DataFrame({"group": trace.name, "subject_id": np.asarray(trace.customdata, dtype=str),
                           "roi": np.asarray(trace.y, dtype=str), "score": np.asarray(trace.x, dtype=float)})
             for trace in figure.data if trace.type == "box"]
    if not parts:
        return pd.DataFrame(columns=columns)
    frame = pd.concat(parts, ignore_index=True)
    frame["reference_p90"] = frame["roi"].map(reference_p90).astype(float)
    return frame[columns]


def _correlations(ex: Explorer, cohort: str, units, rois: list[str], settings: ExportSettings,
                  grid) -> list[ExportFigure]:
    result = views.correlations(ex, cohort, rois, settings.n_permutations, settings.scores)
    figure = views.correlation_view(ex, cohort, rois, result, settings.q, settings.correlation_mode == "significant")
    figure = for_paper(figure, TWO_COLUMN_PX, figure.layout.height or 404)
    details = {"kind": "behaviour correlations", "rois": list(rois),
               "n_permutations": None if result is None else result.n_permutations,
               "p_floor": None if result is None else result.p_floor}
    out = [ExportFigure("correlations", figure, correlation_data(figure), details)]
    if result is None:
        return out
    table = result.table
    hits = table[table["testable"].astype(bool) & (table["p_bh"] < settings.q)].sort_values(["p_bh", "roi"])
    for row in hits.itertuples():
        stats = {"rho": float(row.rho), "p_bh": float(row.p_bh)}
        scatter = views.scatter_view(ex, cohort, units, (row.roi, row.behaviour), "raw", stats, settings.scores,
                                     views.ViewContext(grid))
        scatter = for_paper(scatter, ONE_COLUMN_PX, 400)
        pair = {"roi": row.roi, "behaviour": row.behaviour, "n": int(row.n), "rho": float(row.rho),
                "p_perm": float(row.p_perm), "p_bh": float(row.p_bh), "p_maxt": float(row.p_maxt)}
        out.append(ExportFigure(f"scatter_{row.roi}__{row.behaviour}", scatter, scatter_data(scatter),
                                {"kind": "ROI x behaviour scatter", "pair": pair}))
    return out


def correlation_data(figure: go.Figure) -> pd.DataFrame:
    """One row per heatmap cell: ROI, behaviour, the drawn rho (empty where blanked), the cell's complete cases and
    p-values (its hover), and whether it is ringed (BH p < q)."""
    columns = ["roi", "behaviour", "rho", "n", "p_perm", "p_bh", "p_maxt", "ringed"]
    heatmap = next((t for t in figure.data if t.type == "heatmap"), None)
    if heatmap is None:
        return pd.DataFrame(columns=columns)
    rois, behaviours = list(heatmap.y), list(heatmap.x)
    rho = np.asarray(heatmap.z, dtype=float).reshape(len(rois), len(behaviours))
    custom = np.asarray(heatmap.customdata, dtype=float).reshape(len(rois), len(behaviours), 4)
    rings = next((t for t in figure.data if t.type == "scatter"), None)
    ringed = set() if rings is None else set(zip(rings.y, rings.x, strict=True))
    grid = pd.MultiIndex.from_product([rois, behaviours], names=["roi", "behaviour"]).to_frame(index=False)
    frame = grid.assign(rho=rho.ravel(), n=custom[..., 0].ravel(), p_perm=custom[..., 1].ravel(),
                        p_bh=custom[..., 2].ravel(), p_maxt=custom[..., 3].ravel())
    frame["ringed"] = [(r, b) in ringed for r, b in zip(frame["roi"], frame["behaviour"], strict=True)]
    return frame[columns]


def scatter_data(figure: go.Figure) -> pd.DataFrame:
    """One row per drawn point (series, subject id, x, y) and the two ends of the least-squares line."""
    parts = []
    for trace in figure.data:
        x, y = np.asarray(trace.x, dtype=float), np.asarray(trace.y, dtype=float)
        ids = np.asarray(trace.customdata, dtype=str) if trace.customdata is not None else np.full(len(x), "")
        parts.append(pd.DataFrame({"series": trace.name, "subject_id": ids, "x": x, "y": y}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["series", "subject_id", "x", "y"])


def _slices(ex: Explorer, cohort: str, units, settings: ExportSettings, grid) -> list[ExportFigure]:
    inside, _ = views.cohort_members(ex, cohort, units, grid)
    rows = views.slice_rows(ex, inside)
    zrange = views.colour_range(views.mean_volume(ex, inside), "auto", None)
    voxel = list(settings.crosshair)
    out = []
    for plane in SLICE_ORDER:
        data = views.slice_data(ex, plane, voxel, rows, settings.outline_roi)
        figure = slice_figure(data, zrange, settings.threshold, settings.opacity, ex.unit, settings.radiological,
                              ex.background_range, views.slice_title(data))
        figure.update_traces(  # the explorer draws the shared colour bar apart; a printed slice carries its own
            selector={"name": "heatmap"}, showscale=True,
            colorbar={"title": {"text": f"mean heatmap ({ex.unit})", "side": "right"}, "thickness": 10,
                      "len": 0.9, "outlinewidth": 0})
        figure.update_layout(margin={"r": 70})
        width = ONE_COLUMN_PX - 45 - 70
        extent = np.ptp(data.vertical) / max(np.ptp(data.horizontal), 1e-9)
        figure = for_paper(figure, ONE_COLUMN_PX, max(240, round(width * extent) + 80))
        details = {"kind": "brain slice", "plane": plane, "crosshair_voxel": voxel,
                   "crosshair_world": [float(v) for v in ex.geometry.world(voxel)], "depth": data.depth,
                   "colour_range": list(zrange), "averaged_subjects": len(inside), "unit": ex.unit}
        out.append(ExportFigure(f"slice_{plane}", figure, slice_table(figure, data.plane), details))
    return out


def slice_table(figure: go.Figure, plane: str) -> pd.DataFrame:
    """One row per pixel of the view: its two coordinates, the template intensity (grey), the drawn heatmap value
    (empty below the threshold) and whether it lies in the outlined region."""
    template, overlay, contour = figure.data[:3]
    h_name, v_name = {"axial": ("x", "y"), "coronal": ("x", "z"), "sagittal": ("y", "z")}[plane]
    vertical, horizontal = np.meshgrid(np.asarray(template.y, dtype=float), np.asarray(template.x, dtype=float),
                                       indexing="ij")
    return pd.DataFrame({
        h_name: horizontal.ravel(), v_name: vertical.ravel(),
        "template": np.asarray(template.z, dtype=float).ravel(),
        "heatmap": np.asarray(overlay.z, dtype=float).ravel(),
        "outlined": np.asarray(contour.z, dtype=float).ravel() > 0.5,
    })


def _records(frame: pd.DataFrame) -> list[dict]:
    return json.loads(frame.to_json(orient="records")) if len(frame) else []


# --- print style ----------------------------------------------------------------------------------------------------


def _floor_fonts(node, key: str | None = None) -> None:
    if isinstance(node, dict):
        if key in ("font", "tickfont") and isinstance(node.get("size"), int | float) and node["size"] < MIN_FONT:
            node["size"] = MIN_FONT
        for k, v in node.items():
            _floor_fonts(v, k)
    elif isinstance(node, list):
        for v in node:
            _floor_fonts(v, key)


def _rewrap(text: str | None, width_px: int, font_px: float) -> tuple[str | None, int]:
    """``text`` wrapped to ``width_px`` (about 0.55 em per character) and its number of lines."""
    if not text:
        return text, 0
    wrapped = wrap_text(text.replace("<br>", " "), max(20, int(width_px / (0.55 * font_px))))
    return wrapped, wrapped.count("<br>") + 1


def for_paper(figure: go.Figure, width: int, height: int) -> go.Figure:
    """A copy of an explorer figure for print: ``width`` x ``height`` CSS px, white paper, :data:`PAPER_FONT`,
    no font under :data:`MIN_FONT` px, titles wrapped to the width (the top margin, and anything placed a fixed
    distance from the figure's top edge, moved down by the lines a wrap adds), no interactive state."""
    # per part: Figure.to_plotly_json would turn the arrays into base64 specs, which the CSV is read back from
    spec = {"data": [trace.to_plotly_json() for trace in figure.data], "layout": figure.layout.to_plotly_json()}
    layout = spec["layout"]
    _floor_fonts(spec)
    for key in ("uirevision", "modebar", "clickmode", "dragmode"):
        layout.pop(key, None)
    title = layout.setdefault("title", {})
    title["font"] = {**(title.get("font") or {}), "size": TITLE_FONT}
    old_lines = _lines(title.get("text"))
    title["text"], lines = _rewrap(title.get("text"), width - 20, TITLE_FONT)
    subtitle = title.get("subtitle") or {}
    old_sub = _lines(subtitle.get("text"))
    subtitle["text"], sub_lines = _rewrap(subtitle.get("text"), width - 20, (subtitle.get("font") or {}).get("size",
                                                                                                          10))
    extra = max(0, lines - old_lines) * round(1.3 * TITLE_FONT) + max(0, sub_lines - old_sub) * 13
    margin = layout.setdefault("margin", {})
    margin["t"] = margin.get("t", 40) + extra
    if extra:  # colour bars and legends placed from the figure's top edge move down with the title
        _shift_from_top(layout, spec.get("data", []), extra, layout.get("height") or height, height + extra)
        height += extra
    # plotly.js lifts a title of several lines above its anchor by about 0.7 em: anchor it lower, or it is cut
    title.update(yref="container", yanchor="top", y=1 - (TITLE_TOP_PX + (0.7 * TITLE_FONT if lines > 1 else 0))
                 / height)
    _wrap_axis_titles(layout, width, height)
    layout.update(width=width, height=height, autosize=False, paper_bgcolor="white", font=dict(PAPER_FONT))
    return go.Figure(spec)


def _wrap_axis_titles(layout: dict, width: int, height: int) -> None:
    """Axis titles longer than their axis wrapped onto more lines (the axis then makes room for them)."""
    for key, axis in layout.items():
        title = axis.get("title") if isinstance(axis, dict) and re.fullmatch(r"[xy]axis\d*", key) else None
        if not isinstance(title, dict) or not title.get("text"):
            continue
        length = (width - 90) if key.startswith("x") else (height - 110)
        domain = axis.get("domain") or [0, 1]
        size = (title.get("font") or {}).get("size", PAPER_FONT["size"])
        text, lines = _rewrap(title["text"], max(80, int(length * (domain[1] - domain[0]))), size)
        if lines > 1:
            title["text"] = text
            axis["automargin"] = True
            legend = layout.get("legend") or {}
            if key == "xaxis" and legend.get("yref", "paper") == "paper" and (legend.get("y") or 0) < 0:
                margin = layout.get("margin") or {}
                plot_height = max(100, height - margin.get("t", 80) - margin.get("b", 80))
                legend["y"] = legend["y"] - (lines - 1) * 1.3 * size / plot_height  # below the longer title


def _lines(text: str | None) -> int:
    return text.count("<br>") + 1 if text else 0


def _shift_from_top(layout: dict, data: list, pixels: int, old_height: float, new_height: float) -> None:
    def shift(item: dict) -> None:
        if item.get("yref") == "container" and isinstance(item.get("y"), int | float):
            item["y"] = 1 - ((1 - item["y"]) * old_height + pixels) / new_height

    shift(layout.get("legend") or {})
    for trace in data:
        shift(trace.get("colorbar") or {})


# --- rendering ------------------------------------------------------------------------------------------------------


def chromium_path() -> str | None:
    """The browser Kaleido drives: ``$BROWSER_PATH``, else Debian's ``chromium`` on PATH; None without one."""
    for candidate in (os.environ.get("BROWSER_PATH"), shutil.which("chromium"), shutil.which("chromium-browser"),
                      "/usr/bin/chromium"):
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


PAGES = 2
"""Kaleido pages rendering at once: each page's renderer is one process, so two use both cores of a 2-core machine
(measured: an export of 47 figures 20-25 % faster than with one page)."""
PAGE_FIGURES = 12
"""Figures from which a second page pays: each page loads plotly.js on start (about 3 s on 2 cores), a figure's
three images take 0.5-1 s."""
RELOAD_EVERY = 24
"""Images a Kaleido page renders before it is reloaded (to bound what a long export leaves in it)."""


def _browser_class():
    """Kaleido, keeping its pages between images: Kaleido reloads the page (4.6 MB of plotly.js, its compiled code
    lost) after every image, half of each image's time. Safe for these figures: plotly.js renders each into a
    fresh element, and the one thing a page keeps from its first PDF, the paper colour, is white in every
    figure of an export. If Kaleido's internals change, it falls back to reloading (slower, not wrong)."""
    import kaleido

    class ReusedPages(kaleido.Kaleido):
        async def _return_kaleido_tab(self, tab) -> None:
            self._rendered = getattr(self, "_rendered", 0) + 1
            queue = getattr(self, "tabs_ready", None)
            if queue is None or self._rendered % RELOAD_EVERY == 0:
                await super()._return_kaleido_tab(tab)
            else:
                await queue.put(tab)

    return ReusedPages if hasattr(kaleido.Kaleido, "_return_kaleido_tab") else kaleido.Kaleido


def default_pages(n_figures: int) -> int:
    """Pages an export of ``n_figures`` renders with: one, or one per core (at most :data:`PAGES`) from
    :data:`PAGE_FIGURES` figures on."""
    return max(1, min(PAGES, os.cpu_count() or 1)) if n_figures >= PAGE_FIGURES else 1


def render_images(figures: Sequence[ExportFigure], formats: Sequence[str] = FORMATS,
                  on_figure: Callable[[int, int, str], None] | None = None,
                  tabs: int | None = None) -> dict[tuple[str, str], bytes]:
    """Every figure in every format, as bytes keyed by (figure name, format), from one Kaleido browser with
    ``tabs`` pages rendering at once (default :func:`default_pages`); ``on_figure(done, total,
    name)`` once before the browser starts (done 0, name "") and after each figure's last format."""
    path = chromium_path()
    if path is None:
        raise ExportError("browser", "Chromium for PNG/SVG/PDF export (apt-get install chromium, or set BROWSER_PATH)",
                          "none found")
    if any(f not in FORMATS for f in formats):
        raise ExportError("formats", f"one or more of {list(FORMATS)}", list(formats))

    pages = default_pages(len(figures)) if tabs is None else max(1, int(tabs))
    if on_figure is not None:
        on_figure(0, len(figures), "")

    async def render() -> dict[tuple[str, str], bytes]:
        images: dict[tuple[str, str], bytes] = {}
        done = 0
        turns = asyncio.Semaphore(pages)
        async with _browser_class()(n=pages, timeout=RENDER_TIMEOUT_S, mathjax=False, path=path) as browser:
            async def one(item: ExportFigure) -> str:
                layout = item.figure.layout
                async with turns:  # a figure at a time per page, so figures finish (and report) one by one
                    for fmt in formats:
                        opts = {"format": fmt, "width": layout.width, "height": layout.height,
                                "scale": PNG_SCALE if fmt == "png" else 1}
                        try:
                            images[(item.name, fmt)] = await browser.calc_fig(item.figure, opts=opts)
                        except Exception as exc:
                            raise RenderError(f"{item.name}.{fmt}: Kaleido could not render it "
                                              f"({type(exc).__name__}: {exc})") from exc
                return item.name

            for finished in asyncio.as_completed([one(item) for item in figures]):
                name = await finished
                done += 1
                if on_figure is not None:
                    on_figure(done, len(figures), name)
        return images

    # A thread of its own: the caller may already run an event loop (a notebook, an async server).
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        try:
            return pool.submit(asyncio.run, render()).result()
        except (RenderError, ExportError):
            raise
        except Exception as exc:  # the browser did not start or went away
            raise RenderError(f"Kaleido with the browser {path} failed: {type(exc).__name__}: {exc}") from exc


# --- files ----------------------------------------------------------------------------------------------------------


def safe_name(text: str, fallback: str = "figure") -> str:
    """``text`` as a file name: runs of characters outside ``[A-Za-z0-9_.-]`` become ``_``, no leading dot or dash
    and no ``..`` (so never a hidden file, an option or a parent folder), at most :data:`NAME_LENGTH` characters."""
    name = re.sub(r"(?:[^A-Za-z0-9_.-]|\.{2,})+", "_", str(text)).lstrip(".-")[:NAME_LENGTH].rstrip(".")
    return name or fallback


def inside(root: Path, name: str) -> Path:
    """``root / name``, refused unless it resolves to a direct child of ``root``."""
    root = root.resolve()
    path = (root / name).resolve()
    if path.parent != root or name != safe_name(name, ""):
        raise ExportError("file name", f"a plain file name inside {root}", name)
    return path


def package_versions() -> dict[str, str | None]:
    found = {}
    for package in VERSIONED:
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            found[package] = None
    return found


def export_files(run: PublishedRun | Explorer, cohort, units, settings: ExportSettings | None = None,
                 on_figure: Callable[[int, int, str], None] | None = None, *, grid=None) -> dict[str, bytes]:
    """Every file of the selection's export (on ``grid``'s map, :func:`selection_figures`), in memory:
    ``NN_<figure>.<format|csv|json>`` per figure and ``export.json``; names are safe (:func:`safe_name`) and
    unique."""
    ex = run if isinstance(run, Explorer) else Explorer(run)
    grid = check_grid(ex, grid)
    cohort, units = check_selection(ex, cohort, units, grid)
    figures, settings = selection_figures(ex, cohort, units, settings, grid=grid)
    images = render_images(figures, settings.formats, on_figure)
    inside_ids, rest_ids = views.cohort_members(ex, cohort, units, grid)
    shown = grid_record(ex, grid)
    common = {
        "run_id": ex.run.run_id,
        "study": ex.run.study_name,
        "created_utc": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "selection": {"cohort": cohort, "units": units, "som_grid": [shown["rows"], shown["cols"]], "grid": shown,
                      "members": inside_ids, "n_members": len(inside_ids), "n_rest_of_cohort": len(rest_ids)},
        "settings": _settings_record(ex, settings),
        "versions": package_versions(),
    }
    files: dict[str, bytes] = {}
    index = []
    stems: set[str] = set()
    for k, item in enumerate(figures, start=1):
        stem = _unique(f"{k:02d}_{safe_name(item.name)}", stems)
        names = [f"{stem}.{fmt}" for fmt in settings.formats] + [f"{stem}.csv", f"{stem}.json"]
        for fmt in settings.formats:
            files[f"{stem}.{fmt}"] = images[(item.name, fmt)]
        files[f"{stem}.csv"] = item.data.to_csv(index=False).encode()
        layout = item.figure.layout
        record = {**common, "figure": {"name": item.name, "title": _plain(layout.title.text), "width_px": layout.width,
                                       "height_px": layout.height, "png_scale": PNG_SCALE,
                                       "empty": item.data.empty, **item.details},
                  "files": names}
        files[f"{stem}.json"] = _json(record)
        index.append({"name": item.name, "files": names})
    files["export.json"] = _json({**common, "figures": index, "files": [*files, "export.json"]})
    return files


def _unique(stem: str, taken: set[str]) -> str:
    name, k = stem, 2
    while name.lower() in taken:
        name, k = f"{stem}_{k}", k + 1
    taken.add(name.lower())
    return name


def _plain(text: str | None) -> str | None:
    return None if text is None else re.sub(r"<br>", " ", text)


def _plain_json(value):
    """``value`` with numpy scalars and arrays as Python values, tuples as lists and NaN or infinities as None
    (strict JSON has no NaN)."""
    if isinstance(value, dict):
        return {str(k): _plain_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple | np.ndarray):
        return [_plain_json(v) for v in value]
    if isinstance(value, np.bool_ | bool):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value


def _json(record: dict) -> bytes:
    return json.dumps(_plain_json(record), indent=2, allow_nan=False).encode()


def _settings_record(ex: Explorer, settings: ExportSettings) -> dict:
    record = asdict(settings)
    record["crosshair"] = {"voxel": list(settings.crosshair),
                           "world": [float(v) for v in ex.geometry.world(list(settings.crosshair))],
                           "unit": ex.geometry.unit}
    record["roi_scores"] = record.pop("scores")
    record["formats"] = list(settings.formats)
    record["png_scale"] = PNG_SCALE
    return record


def export_selection(run: PublishedRun | Explorer, cohort, units, out_dir: str | os.PathLike,
                     settings: ExportSettings | None = None,
                     on_figure: Callable[[int, int, str], None] | None = None, *, grid=None) -> list[Path]:
    """Write the selection's export (on ``grid``'s map, :func:`selection_figures`) into the new folder ``out_dir``
    (it must not exist, or be empty) and return its files. Written into a temporary folder beside it and renamed
    when complete, so a failure leaves no half export."""
    out_dir = Path(out_dir).absolute()
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise ExportError("out_dir", "a new or empty folder", str(out_dir))
    files = export_files(run, cohort, units, settings, on_figure, grid=grid)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = _staging_folder(out_dir)
    try:
        for name, content in files.items():
            inside(staging, name).write_bytes(content)
        if out_dir.is_dir():
            out_dir.rmdir()  # empty (checked above); rename cannot replace a folder otherwise
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return [out_dir / name for name in files]


def _staging_folder(out_dir: Path) -> Path:
    """A new hidden folder beside ``out_dir``, with the permissions of an ordinary folder (the umask's, unlike
    :func:`tempfile.mkdtemp`'s private one)."""
    while True:
        staging = out_dir.parent / f".{safe_name(out_dir.name)}.{secrets.token_hex(4)}.partial"
        try:
            staging.mkdir()
            return staging
        except FileExistsError:
            continue


def zip_name(run: PublishedRun | Explorer, cohort: str, grid=None) -> str:
    """The download's file name: ``msma-export_<run id>_<cohort>.zip``, with ``_<rows>x<cols>`` (and ``hex``) for
    a selection on a sweep grid's map (a checked ``grid``), made safe."""
    run_id = (run.run if isinstance(run, Explorer) else run).run_id
    grid = None if grid is None else views.MapGrid(*grid)
    where = "" if grid is None else f"_{grid.rows}x{grid.cols}" + ("hex" if grid.topology == "hexagonal" else "")
    if grid is not None and grid.norms != "msma":
        where += f"_{grid.norms}"
    return f"{safe_name(f'msma-export_{run_id}_{cohort}{where}')}.zip"


def export_zip(run: PublishedRun | Explorer, cohort, units, settings: ExportSettings | None = None,
               on_figure: Callable[[int, int, str], None] | None = None, *, grid=None) -> bytes:
    """The selection's export (on ``grid``'s map, :func:`selection_figures`) as one zip (for the browser's
    download): its files in one folder named like :func:`zip_name`."""
    ex = run if isinstance(run, Explorer) else Explorer(run)
    grid = check_grid(ex, grid)
    files = export_files(ex, cohort, units, settings, on_figure, grid=grid)
    folder = zip_name(ex, cohort, grid).removesuffix(".zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(f"{folder}/{safe_name(name)}", content)
    return buffer.getvalue()
