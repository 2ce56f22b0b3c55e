"""The SOM map with every cohort's maximal prototype (dissertation fig. 6.2)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go
from plotly.colors import sample_colorscale

from app.style import OUTLINE_COLOR, CohortStyle, base_layout

PROTOTYPE_MAX_PX = 40
"""Diameter in pixels of the largest prototype marker; marker areas are proportional to member counts."""
HEX_RADIUS = 1 / math.sqrt(3)
MAP_DOMAIN = 0.62
"""Share of the plot width the lattice may take (it keeps square units, so it may take less)."""
LEGEND_COLUMN = (0.65, 0.97)
"""Where the legend (top) and the colour bar (bottom) stand, right of the map, as shares of the plot width."""


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


@dataclass(frozen=True)
class MapLayer:
    """What colours the lattice: the U-matrix or a cohort's hit map."""

    values: np.ndarray
    """(n_rows, n_cols) value of each unit."""
    label: str
    """Title of the colour bar."""
    colorscale: str
    """Plotly colour scale name."""


def som_figure(
    layer: MapLayer,
    positions: tuple[np.ndarray, np.ndarray],
    topology: str,
    prototypes: Sequence[PrototypeMarker],
    unit_text: np.ndarray,
    selected: Sequence[tuple[int, int]],
    title: str,
    subject: tuple | None = None,
) -> go.Figure:
    """The SOM lattice coloured by ``layer`` (the U-matrix or a hit map), every cohort's maximal prototype as a
    marker whose area is proportional to its member count, and the selected units outlined.

    Parameters
    ----------
    layer : MapLayer
        Values of shape (n_rows, n_cols), their label and colour scale.
    positions : ``(across, up)`` arrays of shape (n_rows, n_cols), :func:`analysis.exploration.som.unit_positions`
    unit_text : (n_rows, n_cols) array of str
        Hover text of each unit.

    subject : (id, (row, col), CohortStyle), optional
        A subject found by the search box: a ring at its best-matching unit, in its cohort's colour.

    Every trace carries ``customdata = [row, col]`` per point, so a click or a box/lasso selection on any of them
    names units.
    """
    values, value_label, colorscale = np.asarray(layer.values, dtype=float), layer.label, layer.colorscale
    n_rows, n_cols = values.shape
    across, up = (np.asarray(p, dtype=float) for p in positions)
    rows, cols = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    fig = go.Figure(layout=base_layout(title))
    if "<br>" in title:  # a wrapped title sits above the plot, its lines pushing the plot down
        fig.update_layout(title={"yref": "paper", "y": 1, "yanchor": "bottom", "pad": {"b": 8}, "automargin": True})
    lo, hi = float(np.nanmin(values)), float(np.nanmax(values))
    # The colour bar lies under the legend, in the column right of the map, so nothing shares the space under the
    # map with the axis title: at any height the map is drawn (352 px in the sweep room) they cannot touch.
    colorbar = {"title": {"text": value_label, "side": "top", "font": {"size": 11}}, "thickness": 10,
                "len": LEGEND_COLUMN[1] - LEGEND_COLUMN[0], "orientation": "h", "x": LEGEND_COLUMN[0],
                "xanchor": "left", "y": 0.0, "yanchor": "bottom"}
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
    if subject is not None:
        sid, (r, c), style = subject
        fig.add_trace(go.Scatter(
            x=[across[r, c]], y=[up[r, c]], mode="markers", name=f"subject {sid}",
            marker={"size": 24, "symbol": "circle-open", "color": style.color, "line": {"width": 3}},
            customdata=[[r, c]], hovertemplate=f"subject {sid}: best-matching unit ({r}, {c})<extra></extra>",
            unselected={"marker": {"opacity": 1}},
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
               "domain": [0, MAP_DOMAIN]},
        yaxis={"title": {"text": "SOM row"}, "showgrid": False, "zeroline": False, "autorange": "reversed",
               "scaleanchor": "x", "tickmode": "array", "tickvals": list(range(n_rows)), "constrain": "domain"},
        # one legend group per cohort: without the groups' default 10 px gaps the legend of six cohorts and a found
        # subject fits beside a 352 px map without scrolling
        legend={"orientation": "v", "y": 1.0, "yanchor": "top", "x": LEGEND_COLUMN[0], "xanchor": "left",
                "font": {"size": 11}, "itemsizing": "constant", "tracegroupgap": 0,
                "title": {"text": "maximal prototype<br>(members/cohort)", "side": "top"}},
        margin={"l": 50, "r": 34, "t": 32, "b": 48},
    )
    return fig
