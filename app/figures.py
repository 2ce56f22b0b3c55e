"""Pure figure builders: plain numbers and names in, a ``plotly.graph_objects.Figure`` out.

Nothing here reads a run or knows about Dash; each builder is tested through ``fig.to_dict()``. The views follow
the dissertation's hand-drawn figures (ch. 6): the SOM map with cohort prototypes (fig. 6.2), ROI box plots with the
reference 90th percentile (fig. 6.4, 6.7), the behaviour-correlation heatmap (fig. 6.5, 6.8) and a pair's scatter
(fig. 6.6); plus orthogonal brain slices of a heatmap over the template.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.colors import sample_colorscale
from scipy.stats import rankdata

from app.style import (
    CORRELATION_COLORS,
    CROSSHAIR_COLOR,
    HEATMAP_COLORS,
    HIGHLIGHT,
    OUTLINE_COLOR,
    PERCENTILE_LINE,
    REST_COLOR,
    CohortStyle,
    base_layout,
)

PROTOTYPE_MAX_PX = 40
"""Diameter in pixels of the largest prototype marker; marker areas are proportional to member counts."""
HEX_RADIUS = 1 / math.sqrt(3)


def empty_figure(title: str, message: str) -> go.Figure:
    """A titled figure that says why there is nothing to draw (an honest empty state)."""
    fig = go.Figure(layout=base_layout(title))
    fig.update_layout(
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[{"text": message, "xref": "paper", "yref": "paper", "x": 0.5, "y": 0.5, "showarrow": False,
                      "font": {"size": 13, "color": "#555"}, "align": "center"}],
    )
    return fig


# --- SOM map (fig. 6.2) --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PrototypeMarker:
    """One cohort's maximal prototype, as drawn on the map."""

    cohort: str
    unit: tuple[int, int]
    size: int
    cohort_size: int
    style: CohortStyle


def _hexagon(across: float, up: float, radius: float = HEX_RADIUS) -> str:
    corners = [(across + radius * math.cos(a), up + radius * math.sin(a)) for a in np.radians(np.arange(0, 360, 60))]
    return "M " + " L ".join(f"{x:.4f},{y:.4f}" for x, y in corners) + " Z"


def _unit_outline(topology: str, across: float, up: float, **line) -> dict:
    if topology == "hexagonal":
        return {"type": "path", "path": _hexagon(across, up), "line": line, "layer": "above"}
    return {"type": "rect", "x0": across - 0.5, "x1": across + 0.5, "y0": up - 0.5, "y1": up + 0.5, "line": line,
            "layer": "above"}


def som_figure(
    values: np.ndarray,
    positions: tuple[np.ndarray, np.ndarray],
    topology: str,
    value_label: str,
    colorscale: str,
    prototypes: Sequence[PrototypeMarker],
    unit_text: np.ndarray,
    selected: Sequence[tuple[int, int]],
    title: str,
) -> go.Figure:
    """The SOM lattice coloured by ``values`` (the U-matrix or a hit map), every cohort's maximal prototype as a
    marker whose area is proportional to its member count, and the selected units outlined.

    Parameters
    ----------
    values : (n_rows, n_cols) array
    positions : ``(across, up)`` arrays of shape (n_rows, n_cols), :func:`analysis.exploration.som.unit_positions`
    unit_text : (n_rows, n_cols) array of str
        Hover text of each unit.

    Every trace carries ``customdata = [row, col]`` per point, so a click or a box/lasso selection on any of them
    names units.
    """
    values = np.asarray(values, dtype=float)
    n_rows, n_cols = values.shape
    across, up = (np.asarray(p, dtype=float) for p in positions)
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    fig = go.Figure(layout=base_layout(title))
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    colorbar = {"title": {"text": value_label, "side": "top"}, "thickness": 10, "len": 0.6, "orientation": "h",
                "x": 0.0, "xanchor": "left", "y": -0.14, "yanchor": "top"}
    if topology == "hexagonal":
        spread = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        colours = np.array(sample_colorscale(colorscale, spread.ravel().tolist())).reshape(values.shape)
        shapes = [
            {"type": "path", "path": _hexagon(across[r, c], up[r, c]), "fillcolor": colours[r, c],
             "line": {"color": "white", "width": 1}, "layer": "below"}
            for r in range(n_rows) for c in range(n_cols)
        ]
        fig.update_layout(shapes=shapes)
        marker = {"size": 26, "symbol": "hexagon2", "opacity": 0, "color": values.ravel(), "colorscale": colorscale,
                  "cmin": lo, "cmax": hi, "showscale": True, "colorbar": colorbar}
    else:
        fig.add_trace(go.Heatmap(
            z=values, x=np.arange(n_cols), y=np.arange(n_rows), colorscale=colorscale, zmin=lo, zmax=hi,
            colorbar=colorbar, hoverinfo="skip", xgap=1, ygap=1, name=value_label,
        ))
        marker = {"size": 30, "symbol": "square", "opacity": 0}
    fig.add_trace(go.Scatter(
        x=across.ravel(), y=up.ravel(), mode="markers", marker=marker, name="units", showlegend=False,
        # lists, not arrays: Dash hands a point's customdata to callbacks only from plain JSON arrays
        customdata=np.column_stack([rows.ravel(), cols.ravel()]).tolist(), hovertext=np.asarray(unit_text).ravel(),
        hovertemplate="%{hovertext}<extra></extra>", unselected={"marker": {"opacity": 0}},
        selected={"marker": {"opacity": 0}},
    ))
    largest = max([p.size for p in prototypes] or [1])
    sizeref = 2.0 * largest / PROTOTYPE_MAX_PX**2
    sharing: dict[tuple[int, int], list[PrototypeMarker]] = {}
    for p in prototypes:
        sharing.setdefault(tuple(p.unit), []).append(p)
    for unit, group in sharing.items():
        r, c = unit
        for k, p in enumerate(group):
            angle, radius = 2 * math.pi * k / len(group), 0.2 if len(group) > 1 else 0.0
            fig.add_trace(go.Scatter(
                x=[across[r, c] + radius * math.cos(angle)], y=[up[r, c] + radius * math.sin(angle)], mode="markers",
                name=f"{p.cohort} {p.size}/{p.cohort_size}", legendgroup=p.cohort,
                marker={"size": [p.size], "sizemode": "area", "sizeref": sizeref, "sizemin": 7,
                        "color": p.style.color, "symbol": p.style.symbol, "line": {"color": "white", "width": 1.5},
                        "opacity": 0.95},
                customdata=[[r, c]],
                hovertemplate=(f"maximal prototype of {p.cohort}<br>unit ({r}, {c}): {p.size} of its "
                               f"{p.cohort_size} members<extra></extra>"),
                unselected={"marker": {"opacity": 0.95}},
            ))
    outlines = []
    for r, c in selected:
        outlines.append(_unit_outline(topology, across[r, c], up[r, c], color="white", width=5))
        outlines.append(_unit_outline(topology, across[r, c], up[r, c], color=OUTLINE_COLOR, width=2.5))
    fig.update_layout(
        shapes=list(fig.layout.shapes) + outlines,
        clickmode="event+select",
        dragmode="select",
        xaxis={"title": {"text": "SOM column"}, "showgrid": False, "zeroline": False, "tickmode": "array",
               "tickvals": list(range(n_cols)) if topology != "hexagonal" else [], "constrain": "domain",
               "domain": [0, 0.62]},
        yaxis={"title": {"text": "SOM row"}, "showgrid": False, "zeroline": False, "autorange": "reversed",
               "scaleanchor": "x", "tickmode": "array", "tickvals": list(range(n_rows)), "constrain": "domain"},
        legend={"orientation": "v", "y": 1.0, "yanchor": "top", "x": 0.64, "xanchor": "left", "font": {"size": 11},
                "itemsizing": "constant", "title": {"text": "maximal prototype<br>(members/cohort)", "side": "top"}},
        margin={"l": 50, "r": 34, "t": 32, "b": 80},
    )
    return fig


# --- Brain slices -------------------------------------------------------------------------------------------------

ORIENTATION_LETTERS = {
    # plane -> (left, right, bottom, top) in the neurological convention
    "axial": ("L", "R", "P", "A"),
    "coronal": ("L", "R", "I", "S"),
    "sagittal": ("P", "A", "I", "S"),
}
AXIS_TITLES = {"axial": ("x", "y"), "coronal": ("x", "z"), "sagittal": ("y", "z")}


@dataclass(frozen=True)
class SliceData:
    """One plane of the viewer at the crosshair: the cut arrays and where it lies."""

    plane: str
    horizontal: np.ndarray
    """(W,) ascending coordinates across."""
    vertical: np.ndarray
    """(H,) ascending coordinates up."""
    background: np.ndarray
    """(H, W) template intensities."""
    values: np.ndarray
    """(H, W) heatmap values, NaN outside the brain."""
    regions: np.ndarray
    """(H, W) atlas region name under each pixel (or a note that it lies outside the atlas's regions)."""
    outline: np.ndarray | None
    """(H, W) bool: the outlined region, or None."""
    crosshair: tuple[float, float]
    """(across, up) of the crosshair in the plane."""
    depth: str
    """Where the plane cuts, e.g. ``"z = 12 mm"``."""
    unit: str = "mm"
    """Of the coordinates: "mm" on a grid aligned with the world axes, else "voxel" (no orientation letters)."""


def slice_updates(data: SliceData, threshold: float, unit: str) -> list[dict]:
    """What changes in the three traces of a slice view when its cut moves: the template's intensities and hover
    (values and region names), the overlay above ``threshold`` and the region outline."""
    values = np.asarray(data.values, dtype=float)
    axis_h, axis_v = AXIS_TITLES[data.plane]
    outline = np.zeros(values.shape) if data.outline is None else np.asarray(data.outline, dtype=float)
    return [
        {"z": data.background, "customdata": values, "text": data.regions,
         "hovertemplate": (f"{axis_h} %{{x:.0f}} {data.unit}, {axis_v} %{{y:.0f}} {data.unit}, {data.depth}<br>"
                           f"%{{customdata:.2f}} {unit}<br>%{{text}}<extra></extra>")},
        {"z": np.where(np.abs(values) >= threshold, values, np.nan)},
        {"z": outline},
    ]


def slice_traces(data: SliceData, zrange: tuple[float, float], threshold: float, unit: str,
                 background_range: tuple[float, float]) -> list[dict]:
    """The three traces of a slice view: template (carries the hover), thresholded overlay, region outline."""
    template, overlay, contour = slice_updates(data, threshold, unit)
    common = {"x": data.horizontal, "y": data.vertical}
    template.update(common, type="heatmap", colorscale="gray", zmin=background_range[0], zmax=background_range[1],
                    showscale=False, zsmooth="best", name="template")
    overlay.update(common, type="heatmap", colorscale=HEATMAP_COLORS, zmin=zrange[0], zmax=zrange[1],
                   zsmooth="best", hoverinfo="skip", showscale=False, name="heatmap")
    contour.update(common, type="contour", showscale=False, hoverinfo="skip", name="region outline",
                   contours={"start": 0.5, "end": 0.5, "size": 1, "coloring": "none"},
                   line={"color": OUTLINE_COLOR, "width": 2})
    return [template, overlay, contour]


def crosshair_shapes(horizontal: np.ndarray, vertical: np.ndarray, crosshair: tuple[float, float]) -> list[dict]:
    """The two crosshair lines of a view whose axes run over ``horizontal`` and ``vertical``."""
    h, v = crosshair
    line = {"color": CROSSHAIR_COLOR, "width": 1.5, "dash": "dash"}
    return [
        {"type": "line", "x0": h, "x1": h, "y0": float(vertical[0]), "y1": float(vertical[-1]),
         "line": line, "layer": "above"},
        {"type": "line", "y0": v, "y1": v, "x0": float(horizontal[0]), "x1": float(horizontal[-1]),
         "line": line, "layer": "above"},
    ]


def orientation_annotations(plane: str, radiological: bool) -> list[dict]:
    """The L/R, A/P, S/I letters at the edges of a view; radiological views swap left and right."""
    left, right, bottom, top = ORIENTATION_LETTERS[plane]
    if radiological and plane != "sagittal":
        left, right = right, left
    style = {"xref": "x domain", "yref": "y domain", "showarrow": False, "font": {"size": 12, "color": "white"},
             "bgcolor": "rgba(0,0,0,0.45)"}
    return [
        {**style, "text": left, "x": 0.0, "y": 0.5, "xanchor": "left"},
        {**style, "text": right, "x": 1.0, "y": 0.5, "xanchor": "right"},
        {**style, "text": bottom, "x": 0.5, "y": 0.0, "yanchor": "bottom"},
        {**style, "text": top, "x": 0.5, "y": 1.0, "yanchor": "top"},
    ]


def colorbar_figure(zrange: tuple[float, float], label: str, colorscale: str = HEATMAP_COLORS) -> go.Figure:
    """The colour scale shared by the three slice views, drawn once: a strip of the scale over its values."""
    values = np.linspace(zrange[0], zrange[1], 129)
    fig = go.Figure(go.Heatmap(z=[values], x=values, y=[0], zmin=zrange[0], zmax=zrange[1], colorscale=colorscale,
                               showscale=False, hoverinfo="skip"))
    fig.update_layout(
        margin={"l": 10, "r": 14, "t": 2, "b": 30},
        xaxis={"title": {"text": label, "standoff": 2, "font": {"size": 11}}, "ticks": "outside", "ticklen": 3,
               "tickfont": {"size": 10}, "showgrid": False, "zeroline": False},
        yaxis={"visible": False},
        paper_bgcolor="white", plot_bgcolor="white", font={"size": 11},
    )
    return fig


def slice_figure(
    data: SliceData,
    zrange: tuple[float, float],
    threshold: float,
    opacity: float,
    unit: str,
    radiological: bool,
    background_range: tuple[float, float],
    title: str,
) -> go.Figure:
    """One orthogonal view: the template in grey, the heatmap above ``threshold`` over it (shared ``zrange``,
    whose colour bar :func:`colorbar_figure` draws), the outlined region, the crosshair and the orientation
    letters; radiological views mirror left and right."""
    template, overlay, contour = slice_traces(data, zrange, threshold, unit, background_range)
    overlay["opacity"] = opacity
    axis_h, axis_v = AXIS_TITLES[data.plane]
    fig = go.Figure(data=[template, overlay, contour], layout=base_layout(title))
    fig.update_layout(
        shapes=crosshair_shapes(data.horizontal, data.vertical, data.crosshair),
        annotations=orientation_annotations(data.plane, radiological) if data.unit == "mm" else [],
        xaxis={"title": {"text": f"{axis_h} ({data.unit})", "standoff": 2}, "autorange": "reversed" if radiological
               and data.plane != "sagittal" else True, "showgrid": False, "zeroline": False, "constrain": "domain",
               "ticks": "outside", "nticks": 5},
        yaxis={"title": {"text": f"{axis_v} ({data.unit})", "standoff": 2}, "scaleanchor": "x", "showgrid": False,
               "zeroline": False, "constrain": "domain", "ticks": "outside", "nticks": 5},
        margin={"l": 45, "r": 8, "t": 28, "b": 38},
        plot_bgcolor="black",
        # kept UI state (zoom) must not outlive a change of convention, or the axis keeps its old direction
        uirevision=f"{data.plane}-{'radiological' if radiological else 'neurological'}",
    )
    return fig


# --- ROI box plots (fig. 6.4, 6.7) -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BoxGroup:
    """One group of subjects on the box plot: its name, colour and ROI scores (subjects x ROIs)."""

    name: str
    scores: pd.DataFrame
    color: str
    fill: str
    points: str
    """Plotly ``boxpoints``: "all" draws every subject, "outliers" only those beyond the whiskers."""


def roi_box_figure(
    rois: Sequence[str],
    groups: Sequence[BoxGroup],
    reference_p90: Mapping[str, float],
    stats: Mapping[str, Mapping[str, float]],
    unit: str,
    title: str,
    highlighted: str | None = None,
) -> go.Figure:
    """Horizontal box plots of ``rois`` (the first at the top), one box per group, with the reference 90th
    percentile of each ROI as a dashed line and the ROI's p-values and effect size on hover."""
    rois = list(rois)
    fig = go.Figure(layout=base_layout(title))
    order = rois[::-1]  # category axes run upwards: the most significant ROI on top
    for group in groups:
        frame = group.scores.reindex(columns=rois)
        long = frame.stack(future_stack=True).dropna()
        # numpy arrays, not lists: plotly validates lists element by element (a third of the callback's time)
        subject_ids = np.asarray(long.index.get_level_values(0), dtype=str)
        roi_names = np.asarray(long.index.get_level_values(1), dtype=str)
        roi_text = {roi: _stat_text(roi, stats.get(roi, {})) for roi in rois}
        text = np.array([f"{sid}: {value:.2f} {unit}<br>{roi_text[roi]}"
                         for sid, roi, value in zip(subject_ids, roi_names, long.to_numpy(), strict=True)])
        fig.add_trace(go.Box(
            x=long.to_numpy(), y=roi_names, name=group.name, orientation="h", boxpoints=group.points,
            jitter=0.4, pointpos=0, marker={"color": group.color, "size": 4, "opacity": 0.8},
            line={"color": group.color, "width": 1.5}, fillcolor=group.fill, customdata=subject_ids,
            text=text, hovertemplate="%{text}<extra>%{fullData.name}</extra>", hoveron="points+boxes",
        ))
    k = order.index(highlighted) if highlighted in order else 0
    shapes = [  # first: the band behind the outlined ROI (moved by partial updates), then the percentile lines
        {"type": "rect", "xref": "paper", "yref": "y", "x0": 0, "x1": 1, "y0": k - 0.5, "y1": k + 0.5,
         "fillcolor": HIGHLIGHT, "line": {"width": 0}, "layer": "below", "visible": highlighted in order},
        *({"type": "line", "xref": "x", "yref": "y", "x0": reference_p90[roi], "x1": reference_p90[roi],
           "y0": k - 0.45, "y1": k + 0.45, "line": PERCENTILE_LINE}
          for k, roi in enumerate(order) if roi in reference_p90 and np.isfinite(reference_p90[roi])),
    ]
    fig.add_trace(go.Scatter(x=[None], y=[None], mode="lines", line=PERCENTILE_LINE, name="reference 90th pct."))
    fig.update_layout(
        boxmode="group",
        shapes=shapes,
        xaxis={"title": {"text": f"ROI anomaly score ({unit}), higher = more anomalous", "standoff": 4},
               "zeroline": False},
        yaxis={"categoryorder": "array", "categoryarray": order, "automargin": True, "tickfont": {"size": 11}},
        legend={"orientation": "h", "y": -0.12, "yanchor": "top", "x": 0, "font": {"size": 11}},
        margin={"l": 10, "r": 34, "t": 32, "b": 10},
        hoverlabel={"align": "left"},
    )
    return fig


def _stat_text(roi: str, stat: Mapping[str, float]) -> str:
    if not stat:
        return roi
    nan = float("nan")
    return (f"{roi}: p {stat.get('p_raw', nan):.2g}, Bonferroni {stat.get('p_bonferroni', nan):.2g}, "
            f"BH {stat.get('p_bh', nan):.2g}<br>rank-biserial r {stat.get('rank_biserial', nan):+.2f}")


# --- Behaviour correlations (fig. 6.5, 6.8) -------------------------------------------------------------------------


def correlation_figure(
    table: pd.DataFrame,
    rois: Sequence[str],
    behaviours: Sequence[str],
    q: float,
    significant_only: bool,
    title: str,
    height: int = 404,
) -> go.Figure:
    """Spearman rho of every (ROI, behaviour) pair on a diverging scale centred at 0, pairs with BH-adjusted
    p < ``q`` ringed; ``significant_only`` keeps the ROIs and scores with such a pair and blanks the other cells.

    ``table`` has one row per pair: roi, behaviour, n, rho, p_perm, p_bh, p_maxt, testable (as
    :func:`analysis.exploration.correlations.spearman_permutation` returns it). ``height`` in pixels: the colour bar and
    the legend sit under the title, above the behaviour names, however tall the figure grows.
    """
    indexed = table.set_index(["roi", "behaviour"])
    significant = (table["testable"].astype(bool) & (table["p_bh"] < q)).to_numpy()
    hits = table.loc[significant]
    if significant_only:
        rois = [r for r in rois if r in set(hits["roi"])]
        behaviours = [b for b in behaviours if b in set(hits["behaviour"])]
    grid = pd.MultiIndex.from_product([list(rois), list(behaviours)], names=["roi", "behaviour"])
    cells = indexed.reindex(grid)
    rho = cells["rho"].to_numpy(dtype=float).reshape(len(rois), len(behaviours))
    if significant_only:
        keep = (cells["testable"].fillna(False).astype(bool) & (cells["p_bh"] < q)).to_numpy()
        rho = np.where(keep.reshape(rho.shape), rho, np.nan)
    custom = np.stack([cells[c].to_numpy(dtype=float).reshape(rho.shape) for c in ("n", "p_perm", "p_bh", "p_maxt")],
                      axis=-1)
    fig = go.Figure(layout=base_layout(title))
    fig.add_trace(go.Heatmap(
        z=rho, x=list(behaviours), y=list(rois), zmin=-1, zmax=1, zmid=0, colorscale=CORRELATION_COLORS,
        customdata=custom, xgap=1, ygap=1, hoverongaps=False,
        colorbar={"title": {"text": "Spearman ρ", "side": "right"}, "thickness": 10, "len": 170, "lenmode": "pixels",
                  "orientation": "h", "x": 0.98, "xanchor": "right", "y": 1 - 30 / height, "yanchor": "top",
                  "yref": "container", "ypad": 0, "tickfont": {"size": 9}, "tickvals": [-1, -0.5, 0, 0.5, 1],
                  "tickangle": 0},
        hovertemplate=("%{y} × %{x}<br>ρ = %{z:.2f} (n = %{customdata[0]:.0f})<br>permutation p = "
                       "%{customdata[1]:.3g}<br>BH p = %{customdata[2]:.3g}, maxT p = %{customdata[3]:.3g}"
                       "<extra></extra>"),
    ))
    shown = hits[hits["roi"].isin(rois) & hits["behaviour"].isin(behaviours)]
    fig.add_trace(go.Scatter(
        x=shown["behaviour"], y=shown["roi"], mode="markers", name=f"BH p < {q:g}", hoverinfo="skip",
        marker={"symbol": "circle-open", "size": 9, "color": "black", "line": {"width": 1.5}},
    ))
    fig.update_layout(
        xaxis={"title": {"text": "behaviour score"}, "tickangle": -90, "tickfont": {"size": 9}, "automargin": True,
               "categoryorder": "array", "categoryarray": list(behaviours), "dtick": 1, "side": "top"},
        yaxis={"tickfont": {"size": 9}, "automargin": True, "autorange": "reversed", "categoryorder": "array",
               "categoryarray": list(rois), "dtick": 1},
        legend={"orientation": "h", "y": 1 - 30 / height, "yanchor": "top", "yref": "container", "x": 0,
                "xanchor": "left", "font": {"size": 11}},
        margin={"l": 10, "r": 34, "t": 70, "b": 10},
        height=height,
    )
    return fig


# --- One pair's scatter (fig. 6.6) ----------------------------------------------------------------------------------


def pair_scatter_figure(
    roi: str,
    behaviour: str,
    scores: np.ndarray,
    values: np.ndarray,
    subject_ids: Sequence[str],
    in_selection: np.ndarray,
    style: CohortStyle,
    cohort: str,
    unit: str,
    view: str,
    stats: Mapping[str, float],
) -> go.Figure:
    """ROI score against behaviour score over the cohort's members with both, the selection in the cohort's colour
    and the others in grey, and the least-squares line; ``view="rank"`` draws ranks (what Spearman's rho
    correlates) instead of raw values."""
    scores, values = np.asarray(scores, dtype=float), np.asarray(values, dtype=float)
    keep = np.isfinite(scores) & np.isfinite(values)
    x, y = scores[keep], values[keep]
    ids = np.asarray(subject_ids, dtype=object)[keep]
    chosen = np.asarray(in_selection, dtype=bool)[keep]
    if view == "rank":
        x, y = rankdata(x), rankdata(y)
        x_title, y_title = f"rank of {roi} score", f"rank of {behaviour}"
    else:
        x_title, y_title = f"{roi} anomaly score ({unit})", f"{behaviour} (as recorded)"
    title = (f"{roi} × {behaviour}: ρ = {stats.get('rho', float('nan')):.2f}, BH p = "
             f"{stats.get('p_bh', float('nan')):.3g}, n = {int(keep.sum())}")
    fig = go.Figure(layout=base_layout(title))
    for name, members, colour, symbol in (
        (f"{cohort}, in the selection", chosen, style.color, style.symbol),
        (f"{cohort}, rest", ~chosen, REST_COLOR, f"{style.symbol}-open"),
    ):
        fig.add_trace(go.Scatter(
            x=x[members], y=y[members], mode="markers", name=f"{name} ({int(members.sum())})",
            marker={"color": colour, "symbol": symbol, "size": 9, "line": {"width": 1, "color": colour}},
            customdata=ids[members], hovertemplate="%{customdata}<br>x %{x:.3g}, y %{y:.3g}<extra></extra>",
        ))
    if len(x) >= 2 and np.ptp(x) > 0:
        slope, intercept = np.polyfit(x, y, 1)
        line_x = np.array([x.min(), x.max()])
        fig.add_trace(go.Scatter(x=line_x, y=slope * line_x + intercept, mode="lines", name="least-squares line",
                                 line={"color": "black", "width": 1.5}, hoverinfo="skip"))
    fig.update_layout(
        xaxis={"title": {"text": x_title}, "zeroline": False},
        yaxis={"title": {"text": y_title}, "zeroline": False},
        legend={"orientation": "h", "y": -0.2, "x": 0},
        margin={"l": 60, "r": 20, "t": 45, "b": 80},
    )
    return fig
