"""Orthogonal brain slices of a heatmap over the template, their crosshair and shared colour bar."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import plotly.graph_objects as go

from app.style import CROSSHAIR_COLOR, HEATMAP_COLORS, OUTLINE_COLOR, base_layout

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
