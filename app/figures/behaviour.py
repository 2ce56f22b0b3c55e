"""Behaviour correlations of the ROIs (dissertation fig. 6.5, 6.8) and one pair's scatter (fig. 6.6)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from scipy.stats import rankdata

from app.style import CORRELATION_COLORS, REST_COLOR, CohortStyle, base_layout


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


@dataclass(frozen=True)
class PairPoints:
    """The cohort's members as points of one (ROI, behaviour) pair; NaN in either value drops a member."""

    scores: np.ndarray
    """(n_members,) ROI anomaly scores."""
    values: np.ndarray
    """(n_members,) behaviour scores, as recorded."""
    subject_ids: Sequence[str]
    """(n_members,) ids, shown on hover."""
    in_selection: np.ndarray
    """(n_members,) bool: the member lies in the selection."""
    marked: str | None = None
    """The subject found by the search box, ringed when it is among the points."""


def pair_scatter_figure(
    roi: str,
    behaviour: str,
    points: PairPoints,
    style: CohortStyle,
    cohort: str,
    unit: str,
    view: str,
    stats: Mapping[str, float],
) -> go.Figure:
    """ROI score against behaviour score over the cohort's members with both, the selection in the cohort's colour
    and the others in grey, and the least-squares line; ``view="rank"`` draws ranks (what Spearman's rho
    correlates) instead of raw values; the points' ``marked`` subject is ringed."""
    scores, values = np.asarray(points.scores, dtype=float), np.asarray(points.values, dtype=float)
    keep = np.isfinite(scores) & np.isfinite(values)
    x, y = scores[keep], values[keep]
    ids = np.asarray(points.subject_ids, dtype=object)[keep]
    chosen = np.asarray(points.in_selection, dtype=bool)[keep]
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
    subject = points.marked
    if subject is not None and subject in set(ids.tolist()):
        k = ids.tolist().index(subject)
        fig.add_trace(go.Scatter(
            x=[x[k]], y=[y[k]], mode="markers", name=f"subject {subject}", hoverinfo="skip",
            marker={"size": 20, "symbol": "circle-open", "color": "black", "line": {"width": 2.5}},
        ))
    fig.update_layout(
        xaxis={"title": {"text": x_title}, "zeroline": False},
        yaxis={"title": {"text": y_title}, "zeroline": False},
        legend={"orientation": "h", "y": -0.2, "x": 0},
        margin={"l": 60, "r": 20, "t": 45, "b": 80},
    )
    return fig
