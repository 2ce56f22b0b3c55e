"""The grid-stability sweep of a cohort's maximal prototype (dissertation fig. 6.3): over SOM grid sizes, how many
of the cohort's subjects the maximal prototype gathers, beside how much of that membership the neighbouring grid
sizes keep, with the stable band outlined."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.figures import empty_figure
from app.style import base_layout

STABLE = 0.8
"""Mean Jaccard overlap with the neighbouring grids from which a grid counts as stable (outlined)."""

SIZE_COLORS = "Cividis"
STABILITY_COLORS = "Viridis"
"""Sequential and colour-blind safe; stability on a fixed 0-1 range so two sweeps read alike."""
STABLE_LINE = ({"color": "white", "width": 3.5}, {"color": "black", "width": 1.5})
"""A black line over a wider white one: visible on the dark and the light end of both colour scales."""
SHOWN_LINE = {"color": "#D55E00", "width": 3.5}
"""The grid on the map (Okabe-Ito vermillion, apart from both colour scales)."""
DOMAINS = ((0.0, 0.36), (0.60, 0.96))
"""Horizontal extent of the two heatmaps; each colour bar sits just right of its heatmap."""

COLUMNS = ["rows", "cols", "unit_row", "unit_col", "size", "cohort_size", "share", "jaccard_neighbours", "stable",
           "shown"]


def sweep_data(table: pd.DataFrame | None, shown: tuple[int, int] | None = None) -> pd.DataFrame:
    """Exactly the numbers :func:`sweep_figure` draws, one row per swept grid (sorted by rows, then columns): the
    prototype's unit, its member count and share of the cohort (left heatmap and hover), the mean Jaccard overlap
    with the neighbouring grids (right heatmap), whether the grid is outlined as stable and whether it is ``shown``.
    """
    if table is None or table.empty:
        return pd.DataFrame(columns=COLUMNS)
    frame = table[["rows", "cols", "unit_row", "unit_col", "size", "cohort_size", "jaccard_neighbours"]].copy()
    frame = frame.astype({"rows": int, "cols": int, "unit_row": int, "unit_col": int, "size": int,
                          "cohort_size": int, "jaccard_neighbours": float})
    frame["share"] = frame["size"] / frame["cohort_size"].where(frame["cohort_size"] > 0)
    frame["stable"] = frame["jaccard_neighbours"].to_numpy() >= STABLE  # NaN (a lone grid) is not stable
    frame["shown"] = [(r, c) == tuple(shown or ()) for r, c in zip(frame["rows"], frame["cols"], strict=True)]
    return frame.sort_values(["rows", "cols"]).reset_index(drop=True)[COLUMNS]


def _lattice(data: pd.DataFrame, column: str, rows: list[int], cols: list[int]) -> np.ndarray:
    """(len(rows), len(cols)) values of ``column``; NaN where a grid was not swept."""
    grid = data.pivot(index="rows", columns="cols", values=column).reindex(index=rows, columns=cols)
    return grid.to_numpy(dtype=float)


def _outline(i: int, j: int, axis: str, line: dict) -> dict:
    return {"type": "rect", "xref": f"x{axis}", "yref": f"y{axis}", "x0": j - 0.5, "x1": j + 0.5, "y0": i - 0.5,
            "y1": i + 0.5, "line": line, "layer": "above"}


def sweep_figure(table: pd.DataFrame | None, cohort: str, shown: tuple[int, int] | None = None,
                 title: str | None = None) -> go.Figure:
    """Two heatmaps over SOM rows x columns: the members of ``cohort``'s maximal prototype (its share of the cohort
    on hover) and their stability (mean Jaccard overlap with the grids one row or one column away). Grids with an
    overlap of at least :data:`STABLE` are outlined in both; ``shown`` (rows, cols), the grid on the map, is marked.

    The lattice is drawn on the positions 0..n-1 labelled with the grid sizes, so a sweep with gaps keeps square
    cells; each cell's ``customdata`` starts with ``[rows, cols]`` (the hover reads it). A click in the browser names
    a cell by its positions (Dash leaves a heatmap point's customdata out of ``clickData``), which
    :func:`app.views.sweep_cell` reads back against the table's sizes. ``table`` is a sweep
    table (:func:`analysis.exploration.sweep.grid_stability_sweep`); None or an empty one gives a figure saying how
    to make one.
    """
    heading = title or f"Grid-stability sweep of {cohort}"
    data = sweep_data(table, shown)
    if data.empty:
        return empty_figure(heading, f"No grid-stability sweep of {cohort} in this run:<br>"
                                     f"msma sweep --cohort {cohort} makes one.")
    rows, cols = sorted({int(v) for v in data["rows"]}), sorted({int(v) for v in data["cols"]})
    size, share, stability = (_lattice(data, c, rows, cols) for c in ("size", "share", "jaccard_neighbours"))
    cohort_size, unit_row, unit_col = (_lattice(data, c, rows, cols) for c in ("cohort_size", "unit_row", "unit_col"))
    # nested lists, not an array: Dash hands a point's customdata to callbacks only from plain JSON arrays
    custom = [[[r, c, *(None if np.isnan(v) else float(v) for v in (100 * share[i, j], cohort_size[i, j],
                                                                    unit_row[i, j], unit_col[i, j]))]
               for j, c in enumerate(cols)] for i, r in enumerate(rows)]
    where = "%{customdata[0]} × %{customdata[1]} grid: prototype at unit (%{customdata[4]}, %{customdata[5]})<br>"
    x, y = np.arange(len(cols)), np.arange(len(rows))
    common = {"x": x, "y": y, "customdata": custom, "xgap": 1, "ygap": 1, "hoverongaps": False}
    colorbar = {"thickness": 12, "len": 0.9, "y": 0.5, "yanchor": "middle", "outlinewidth": 0}
    fig = go.Figure(layout=base_layout(heading))
    fig.add_trace(go.Heatmap(
        z=size, colorscale=SIZE_COLORS, name="prototype size", **common,
        colorbar={**colorbar, "x": DOMAINS[0][1] + 0.01, "title": {"text": "members", "side": "right"}},
        hovertemplate=(where + "%{z:.0f} of the %{customdata[3]:.0f} members of " + cohort
                       + " (%{customdata[2]:.0f} %)<extra></extra>"),
    ))
    fig.add_trace(go.Heatmap(
        z=stability, colorscale=STABILITY_COLORS, zmin=0, zmax=1, name="stability", xaxis="x2", yaxis="y2",
        **common, colorbar={**colorbar, "x": DOMAINS[1][1] + 0.01,
                            "title": {"text": "mean Jaccard overlap", "side": "right"}},
        hovertemplate=where + "mean Jaccard overlap with the neighbouring grids %{z:.2f}<extra></extra>",
    ))
    stable = np.nan_to_num(stability, nan=-1) >= STABLE
    shapes = [_outline(i, j, axis, line) for line in STABLE_LINE for axis in ("", "2")
              for i, j in zip(*np.nonzero(stable), strict=True)]
    if shown is not None and shown[0] in rows and shown[1] in cols:
        i, j = rows.index(shown[0]), cols.index(shown[1])
        shapes += [_outline(i, j, axis, SHOWN_LINE) for axis in ("", "2")]
    n_stable = int(stable.sum())
    key = [f"black outline: {n_stable} of {len(data)} grids stable (Jaccard ≥ {STABLE:g})"]
    if shown is not None:
        swept = shown[0] in rows and shown[1] in cols
        key.append(f"vermillion: the {shown[0]} × {shown[1]} grid on the map" if swept
                   else f"the {shown[0]} × {shown[1]} grid on the map lies outside the sweep")
    axis = {"title": {"text": "SOM columns"}, "tickmode": "array", "tickvals": x.tolist(), "ticktext": cols,
            "showgrid": False, "zeroline": False, "constrain": "domain"}
    yaxis = {"title": {"text": "SOM rows"}, "tickmode": "array", "tickvals": y.tolist(), "ticktext": rows,
             "showgrid": False, "zeroline": False, "autorange": "reversed", "constrain": "domain"}
    fig.update_layout(
        shapes=shapes,
        xaxis={**axis, "domain": list(DOMAINS[0])}, xaxis2={**axis, "domain": list(DOMAINS[1]), "anchor": "y2"},
        yaxis={**yaxis, "scaleanchor": "x"}, yaxis2={**yaxis, "anchor": "x2", "scaleanchor": "x2"},
        annotations=[
            *({"text": text, "x": 0.5, "y": 1.0, "xref": f"x{axis} domain", "yref": f"y{axis} domain",
               "xanchor": "center", "yanchor": "bottom", "yshift": 4, "showarrow": False, "font": {"size": 12}}
              for text, axis in (("members of the maximal prototype", ""), ("stability over neighbouring grids", "2"))),
            {"text": "; ".join(key), "x": 0, "y": 0, "xref": "paper", "yref": "paper", "yanchor": "top", "yshift": -48,
             "xanchor": "left", "showarrow": False, "font": {"size": 11, "color": "#333333"}},
        ],
        margin={"l": 60, "r": 30, "t": 60, "b": 80},
    )
    return fig
