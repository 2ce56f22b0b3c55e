"""ROI box plots against the reference 90th percentile (dissertation fig. 6.4, 6.7)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.figures import wrap_text
from app.style import HIGHLIGHT, PERCENTILE_LINE, base_layout


@dataclass(frozen=True)
class BoxGroup:
    """One group of subjects on the box plot: its name, colour and ROI scores (subjects x ROIs)."""

    name: str
    scores: pd.DataFrame
    color: str
    fill: str
    points: str
    """Plotly ``boxpoints``: "all" draws every subject, "outliers" only those beyond the whiskers."""


@dataclass(frozen=True)
class SubjectMark:
    """One subject found by the search box, starred on every ROI's row: its name, scores per ROI and colour."""

    name: str
    scores: pd.Series
    color: str


def roi_box_figure(
    rois: Sequence[str],
    groups: Sequence[BoxGroup],
    reference_p90: Mapping[str, float],
    stats: Mapping[str, Mapping[str, float]],
    unit: str,
    title: str,
    highlighted: str | None = None,
    note: str | None = None,
) -> go.Figure:
    """Horizontal box plots of ``rois`` (the first at the top), one box per group, with the reference 90th
    percentile of each ROI as a dashed line and the ROI's p-values and effect size on hover; ``note`` is a second,
    smaller title line (what the test can see); a :class:`SubjectMark` among ``groups`` stars one subject on
    every ROI's row."""
    rois = list(rois)
    fig = go.Figure(layout=base_layout(title))
    if note is not None:  # under the title: what the test can see
        fig.update_layout(title_subtitle={"text": wrap_text(note, 100), "font": {"size": 10, "color": "#555555"}})
    order = rois[::-1]  # category axes run upwards: the most significant ROI on top
    marks = [g for g in groups if isinstance(g, SubjectMark)]
    for group in (g for g in groups if not isinstance(g, SubjectMark)):
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
    for mark in marks:
        values = pd.Series(mark.scores).reindex(rois)
        fig.add_trace(go.Scatter(
            x=values.to_numpy(dtype=float), y=rois, mode="markers", name=mark.name,
            marker={"size": 13, "symbol": "star", "color": mark.color, "line": {"color": "black", "width": 1}},
            hovertemplate=f"{mark.name}: %{{x:.2f}} {unit} in %{{y}}<extra></extra>",
        ))
    fig.update_layout(
        boxmode="group",
        shapes=shapes,
        xaxis={"title": {"text": f"ROI anomaly score ({unit}), higher = more anomalous", "standoff": 4},
               "zeroline": False},
        yaxis={"categoryorder": "array", "categoryarray": order, "automargin": True, "tickfont": {"size": 11}},
        legend={"orientation": "h", "y": -0.12, "yanchor": "top", "x": 0, "font": {"size": 11}},
        margin={"l": 10, "r": 34, "t": 32 if note is None else 62, "b": 10},
        hoverlabel={"align": "left"},
    )
    return fig


def _stat_text(roi: str, stat: Mapping[str, float]) -> str:
    if not stat:
        return roi
    nan = float("nan")
    return (f"{roi}: p {stat.get('p_raw', nan):.2g}, Bonferroni {stat.get('p_bonferroni', nan):.2g}, "
            f"BH {stat.get('p_bh', nan):.2g}<br>rank-biserial r {stat.get('rank_biserial', nan):+.2f}")
