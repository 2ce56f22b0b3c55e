"""The grid-stability sweep (dissertation fig. 6.3): the maximal prototype's size over SOM grid sizes beside how
many of its members the neighbouring grid sizes keep, with the stable band marked."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from app.style import OUTLINE_COLOR, base_layout

STABLE = 0.8
"""Mean Jaccard overlap with the neighbouring grids at which a grid counts as stable (outlined)."""


def sweep_grid(table: pd.DataFrame) -> tuple[list[int], list[int], np.ndarray, np.ndarray, np.ndarray]:
    """The sweep on its rows x cols lattice: the row and column sizes, the prototype's size, its share of the
    cohort and the mean Jaccard overlap with the neighbouring grids (NaN where a grid was not swept)."""
    rows, cols = sorted(set(table["rows"].astype(int))), sorted(set(table["cols"].astype(int)))
    size = np.full((len(rows), len(cols)), np.nan)
    share, stability = size.copy(), size.copy()
    for r in table.itertuples():
        i, j = rows.index(int(r.rows)), cols.index(int(r.cols))
        size[i, j] = r.size
        share[i, j] = r.size / r.cohort_size if r.cohort_size else np.nan
        stability[i, j] = r.jaccard_neighbours
    return rows, cols, size, share, stability


def sweep_data(table: pd.DataFrame) -> pd.DataFrame:
    """Exactly the numbers :func:`sweep_figure` draws, one row per grid."""
    columns = ["rows", "cols", "size", "cohort_size", "jaccard_neighbours"]
    frame = table[columns].copy()
    frame["share"] = frame["size"] / frame["cohort_size"]
    frame["stable"] = frame["jaccard_neighbours"] >= STABLE
    return frame.sort_values(["rows", "cols"]).reset_index(drop=True)


def sweep_figure(table: pd.DataFrame, cohort: str, shown: tuple[int, int] | None = None,
                 title: str | None = None) -> go.Figure:
    """Two heatmaps over rows x cols: the maximal prototype's member count, and its membership stability (mean
    Jaccard overlap with the grids one row or column away); grids with overlap >= :data:`STABLE` are outlined in
    both, and ``shown`` (the grid on the map) is marked. Each cell's ``customdata`` is ``[rows, cols]``, so a click
    names a grid."""
    rows, cols, size, share, stability = sweep_grid(table)
    custom = np.dstack(np.meshgrid(rows, cols, indexing="ij")).tolist()
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.14,
                        subplot_titles=("members of the maximal prototype", "stability (mean Jaccard, neighbours)"))
    hover = ("%{customdata[0]} × %{customdata[1]} grid<br>prototype: %{z:.0f} members (%{text})"
             "<extra>click to show this grid's map</extra>")
    text = np.vectorize(lambda v: "" if np.isnan(v) else f"{100 * v:.0f} % of the cohort")(share)
    fig.add_trace(go.Heatmap(
        z=size, x=cols, y=rows, customdata=custom, text=text, colorscale="Cividis", xgap=1, ygap=1,
        hovertemplate=hover, name="prototype size",
        colorbar={"title": {"text": f"members of {cohort}", "side": "right"}, "x": 0.43, "thickness": 10},
    ), row=1, col=1)
    fig.add_trace(go.Heatmap(
        z=stability, x=cols, y=rows, customdata=custom, colorscale="Viridis", zmin=0, zmax=1, xgap=1, ygap=1,
        hovertemplate=("%{customdata[0]} × %{customdata[1]} grid<br>mean Jaccard with neighbours %{z:.2f}"
                       "<extra>click to show this grid's map</extra>"), name="stability",
        colorbar={"title": {"text": "Jaccard overlap", "side": "right"}, "x": 1.0, "thickness": 10},
    ), row=1, col=2)
    shapes = []
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            if np.isfinite(stability[i, j]) and stability[i, j] >= STABLE:
                for axis in ("", "2"):
                    shapes.append({"type": "rect", "xref": f"x{axis}", "yref": f"y{axis}", "x0": c - 0.5,
                                   "x1": c + 0.5, "y0": r - 0.5, "y1": r + 0.5,
                                   "line": {"color": "white", "width": 1.5}})
    if shown is not None and shown[0] in rows and shown[1] in cols:
        r, c = shown
        for axis in ("", "2"):
            shapes.append({"type": "rect", "xref": f"x{axis}", "yref": f"y{axis}", "x0": c - 0.5, "x1": c + 0.5,
                           "y0": r - 0.5, "y1": r + 0.5, "line": {"color": OUTLINE_COLOR, "width": 3}})
    n_stable = int(np.nansum(stability >= STABLE))
    fig.update_layout(
        base_layout(title or f"Grid-stability sweep of {cohort}: {len(table)} grids, {n_stable} stable "
                             f"(Jaccard ≥ {STABLE:g}, white outline)"),
        shapes=shapes, margin={"l": 60, "r": 20, "t": 60, "b": 50},
    )
    for k in (1, 2):
        fig.update_xaxes(title_text="SOM columns", tickmode="array", tickvals=cols, row=1, col=k)
        fig.update_yaxes(title_text="SOM rows", tickmode="array", tickvals=rows, autorange="reversed", row=1, col=k)
    for annotation in fig.layout.annotations:
        annotation.font = {"size": 11}
    return fig
