"""One subject against the reference cohort: its score-norm profile, its detector score on the reference centile
curves in age, and its most atypical ROIs (the numbers of :mod:`analysis.exploration.subject`).

Each figure reads at about 520 x 300 px: the legend sits in the bottom margin, under the axis title, and the
centile curves are labelled at their right end instead of in the legend.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.exploration.subject import CentileChart, NormProfile
from app.figures import empty_figure, wrap_text
from app.style import REST_COLOR, CohortStyle, base_layout

BAND_FILL = "rgba(153,153,153,0.3)"
CURVE_LINES = {5.0: "dot", 25.0: "dash", 50.0: "solid", 75.0: "dash", 95.0: "dot"}
"""Dash of each centile curve: the median solid, the quartiles dashed, the outer centiles dotted."""
CODEBOOK_COLOR = "#000000"
SUBJECT_MARKER_PX = 15
LABEL_GAP = 0.08
"""Least distance between two curve labels, as a share of the drawn score range (about 13 px at 300 px high)."""
LEGEND_BELOW = {"orientation": "h", "yref": "container", "y": 0.005, "yanchor": "bottom", "x": 0, "xanchor": "left",
                "font": {"size": 10}, "itemwidth": 30, "tracegroupgap": 0}
"""In the bottom margin, under the x-axis title, so it never covers a line."""
MARGIN = {"l": 62, "r": 16, "t": 40, "b": 78}


def _ordinal(value: float) -> str:
    n = int(round(value))
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


# --- (a) the norm profile ------------------------------------------------------------------------------------------


def norm_profile_figure(profile: NormProfile, style: CohortStyle, subject_id: str, cohort: str,
                        reference_cohort: str, sigmas: Sequence[float] | None = None) -> go.Figure:
    """The subject's log score norms in reference z per noise scale (1 = smallest sigma), in its cohort's colour
    and marker, over the reference band (shaded) and median (dashed), with its best-matching unit's codebook
    vector (dotted); scales outside the band carry a larger, outlined marker. ``sigmas`` (ascending, one per
    scale) go into the hover when the run recorded them."""
    scales = np.arange(1, profile.subject.size + 1)
    outside = profile.above | profile.below
    low, high = profile.band
    band_name = f"{reference_cohort} {low:g}–{high:g} %"
    title = f"{subject_id} ({cohort}): {int(outside.sum())} of {scales.size} scales outside the {band_name}"
    sigma_text = ([f" (σ = {s:.3g})" for s in sigmas] if sigmas is not None and len(sigmas) == scales.size
                  else [""] * scales.size)
    fig = go.Figure(layout=base_layout(title))
    fig.add_trace(go.Scatter(x=scales, y=profile.lower, mode="lines", line={"width": 0}, showlegend=False,
                             hoverinfo="skip", legendgroup="band"))
    fig.add_trace(go.Scatter(
        x=scales, y=profile.upper, mode="lines", line={"width": 0}, fill="tonexty", fillcolor=BAND_FILL,
        name=f"{band_name} (n = {profile.n_reference})", legendgroup="band", hoverinfo="skip",
    ))
    fig.add_trace(go.Scatter(x=scales, y=profile.median, mode="lines", name=f"{reference_cohort} median",
                             line={"color": REST_COLOR, "dash": "dash", "width": 1.5}, hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=scales, y=profile.codebook, mode="lines", name=f"BMU ({profile.bmu[0]}, {profile.bmu[1]})",
        line={"color": CODEBOOK_COLOR, "dash": "dot", "width": 1.5},
        hovertemplate="BMU codebook: %{y:.2f}<extra></extra>",
    ))
    where = np.where(profile.above, "above the band", np.where(profile.below, "below the band", "inside the band"))
    text = [f"scale {k}{s}: z = {z:.2f}, {w}<br>{band_name}: {lo:.2f} to {hi:.2f}"
            for k, s, z, w, lo, hi in zip(scales, sigma_text, profile.subject, where, profile.lower, profile.upper,
                                          strict=True)]
    fig.add_trace(go.Scatter(
        x=scales, y=profile.subject, mode="lines+markers", name=subject_id, text=text,
        hovertemplate="%{text}<extra></extra>", line={"color": style.color, "width": 2},
        marker={"color": style.color, "symbol": style.symbol, "size": np.where(outside, 10, 6),
                "line": {"color": np.where(outside, "#000000", style.color), "width": np.where(outside, 1.5, 0)}},
    ))
    fig.update_layout(
        xaxis={"title": {"text": "noise scale (1 = smallest σ)", "standoff": 2}, "dtick": 1, "tickfont": {"size": 9},
               "range": [0.5, scales.size + 0.5], "zeroline": False},
        yaxis={"title": {"text": "log score norm (reference z)", "standoff": 2}, "zeroline": True,
               "zerolinecolor": "#dddddd"},
        legend=LEGEND_BELOW, margin=MARGIN, hovermode="closest",
    )
    return fig


# --- (b) the centile chart -----------------------------------------------------------------------------------------


def centile_title(chart: CentileChart, subject_id: str, detector_name: str) -> str:
    """"sub-01: 97th centile of MSMA GMM at age 10.3" (or above/below every fitted centile, or without age)."""
    fit_levels = 100 * chart.fit.taus
    if chart.beyond == "above":
        where = f"above the {_ordinal(fit_levels[-1])} centile"
    elif chart.beyond == "below":
        where = f"below the {_ordinal(fit_levels[0])} centile"
    else:
        where = f"{_ordinal(chart.subject_centile)} centile"
    age = f" at age {chart.subject_age:g}" if chart.uses_age else " (without age)"
    return f"{subject_id}: {where} of {detector_name}{age}"


def centile_method(chart: CentileChart, reference_cohort: str) -> str:
    """How the curves were drawn, and what they could not do, in a line under the chart's title."""
    fit = chart.fit
    if not chart.uses_age:
        return f"centiles: quantiles of {fit.n_reference} {reference_cohort} subjects; {chart.note}"
    how = {"linear": "quantile regression linear in age", "quadratic": "quantile regression quadratic in age",
           "constant": "age-independent quantiles"}[fit.design]
    if fit.design == "constant" and fit.held_out_loss:
        how += " (an age trend did not lower the held-out pinball loss)"
    return f"centiles: {how}, {fit.n_reference} {reference_cohort} subjects" + (f"; {chart.note}" if chart.note else "")


def _curve_label(centile: float) -> str:
    return f"{centile:g} %"


def spread_labels(heights: np.ndarray, gap: float) -> np.ndarray:
    """Label heights in the order of ``heights`` (ascending, as rearranged curves end), at least ``gap`` apart
    and shifted together to stay centred on the curves they name."""
    heights = np.asarray(heights, dtype=float)
    placed = heights.copy()
    for k in range(1, placed.size):
        placed[k] = max(placed[k], placed[k - 1] + gap)
    return placed - (placed - heights).mean()


def centile_figure(chart: CentileChart, style: CohortStyle, subject_id: str, cohort: str, reference_cohort: str,
                   detector_name: str, unit: str) -> go.Figure:
    """The detector score against age (years): the reference subjects as faint points, the reference centile
    curves labelled at their right end, the subject as a large marker in its cohort's style and its centile in the
    title. A chart without age (no ages, or none for the subject) shows the reference distribution as a strip with
    its centiles as horizontal lines, and says so under the title."""
    y_title = f"{detector_name}<br>({unit})"
    if not np.isfinite(chart.subject_score):
        return empty_figure(f"{subject_id}: {detector_name} against the reference centiles",
                            f"{subject_id} has no {detector_name} score in this run.")
    fig = go.Figure(layout=base_layout(centile_title(chart, subject_id, detector_name)))
    method = wrap_text(centile_method(chart, reference_cohort), 100)
    fig.update_layout(title_subtitle={"text": method, "font": {"size": 9, "color": "#555555"}})
    ref = np.isfinite(chart.reference_scores)
    if chart.uses_age:
        ref &= np.isfinite(chart.reference_ages)
        ref_x, subject_x = chart.reference_ages[ref], chart.subject_age
        curve_x, label_x = chart.age_grid, chart.age_grid[-1]
    else:
        # Reproducible horizontal spread of the strip; its position carries no meaning.
        ref_x = np.random.default_rng(0).uniform(-0.3, 0.3, int(ref.sum()))
        subject_x, curve_x, label_x = 0.0, np.array([-0.45, 0.45]), 0.45
    fig.add_trace(go.Scatter(
        x=ref_x, y=chart.reference_scores[ref], mode="markers", name=f"{reference_cohort} (n = {int(ref.sum())})",
        marker={"color": REST_COLOR, "size": 5, "opacity": 0.45}, hovertemplate=(
            ("age %{x:.1f}, " if chart.uses_age else "") + "score %{y:.3g}<extra>reference</extra>"),
    ))
    for k, centile in enumerate(chart.centiles):
        values = chart.curves[:, k] if chart.uses_age else np.repeat(chart.curves[0, k], 2)
        fig.add_trace(go.Scatter(
            x=curve_x, y=values, mode="lines", name=f"{_curve_label(centile)} centile", showlegend=False,
            line={"color": "#000000", "dash": CURVE_LINES.get(centile, "solid"), "width": 2 if centile == 50 else 1.2},
            hovertemplate=f"{_curve_label(centile)} centile: %{{y:.3g}}<extra></extra>",
        ))
    ends = chart.curves[-1]
    shown = np.concatenate([chart.reference_scores[ref], ends, [chart.subject_score]])
    heights = spread_labels(ends, LABEL_GAP * float(np.ptp(shown)))
    annotations = [{"x": label_x, "y": y, "xref": "x", "yref": "y", "text": _curve_label(c), "showarrow": False,
                    "xanchor": "left", "xshift": 3, "font": {"size": 9}}
                   for c, y in zip(chart.centiles, heights, strict=True)]
    fig.add_trace(go.Scatter(
        x=[subject_x], y=[chart.subject_score], mode="markers", name=f"{subject_id} ({cohort})",
        marker={"color": style.color, "symbol": style.symbol, "size": SUBJECT_MARKER_PX,
                "line": {"color": "#000000", "width": 1.5}},
        hovertemplate=(f"{subject_id}<br>" + ("age %{x:.1f}, " if chart.uses_age else "")
                       + f"score %{{y:.3g}}<br>centile {chart.subject_centile:.0f}<extra></extra>"),
    ))
    if chart.uses_age:
        xaxis = {"title": {"text": "age (years)", "standoff": 2}, "zeroline": False}
    else:
        xaxis = {"title": {"text": "reference distribution (no age)", "standoff": 2}, "showticklabels": False,
                 "range": [-0.6, 0.75], "zeroline": False}
    fig.update_layout(
        xaxis=xaxis, yaxis={"title": {"text": y_title, "standoff": 2, "font": {"size": 12}}, "zeroline": False},
        annotations=annotations, legend=LEGEND_BELOW, hovermode="closest",
        margin={**MARGIN, "l": 70, "t": 44 + 11 * method.count("<br>") + 11, "r": 40},
    )
    return fig


# --- (c) the top ROIs ----------------------------------------------------------------------------------------------


def top_roi_columns(unit: str) -> list[dict]:
    """dash-ag-grid ``columnDefs`` for :func:`top_roi_rows`."""
    return [
        {"field": "rank", "headerName": "#", "width": 56},
        {"field": "roi", "headerName": "ROI", "flex": 2, "minWidth": 140},
        {"field": "value", "headerName": f"score ({unit})", "flex": 1, "type": "numericColumn",
         "valueFormatter": {"function": "params.value == null ? 'n/a' : d3.format('.2f')(params.value)"}},
        {"field": "percentile", "headerName": "reference percentile", "flex": 1, "type": "numericColumn",
         "valueFormatter": {"function": "params.value == null ? 'n/a' : d3.format('.0f')(params.value)"}},
    ]


def top_roi_rows(rois: pd.DataFrame) -> list[dict]:
    """One dict per ROI of :func:`~analysis.exploration.subject.top_rois` (rank, roi, value, percentile), most
    atypical first; missing numbers are None (JSON null)."""
    def number(value) -> float | None:
        return float(value) if np.isfinite(value) else None

    return [{"rank": k + 1, "roi": str(row.roi), "value": number(row.value), "percentile": number(row.percentile)}
            for k, row in enumerate(rois.itertuples(index=False))]


def top_roi_figure(rois: pd.DataFrame, subject_id: str, unit: str, scores: str) -> go.Figure:
    """The top ROIs as a compact table (for export beside the grid): ROI, score with its unit, reference
    percentile."""
    title = f"{subject_id}: most atypical ROIs ({scores} scores)"
    if rois.empty or not np.isfinite(rois["value"].to_numpy(dtype=float)).any():
        return empty_figure(title, f"{subject_id} has no {scores} ROI scores in this run.")
    rows = top_roi_rows(rois)
    cells = [[r["rank"] for r in rows], [r["roi"] for r in rows],
             ["n/a" if r["value"] is None else f"{r['value']:.2f}" for r in rows],
             ["n/a" if r["percentile"] is None else f"{r['percentile']:.0f}" for r in rows]]
    fig = go.Figure(layout=base_layout(title))
    fig.add_trace(go.Table(
        columnwidth=[20, 150, 110, 80],
        header={"values": ["#", "ROI", f"score<br>({unit})", "reference<br>percentile"], "align": "left",
                "fill": {"color": "#eeeeee"}, "font": {"size": 10}, "height": 34},
        cells={"values": cells, "align": ["right", "left", "right", "right"], "font": {"size": 10}, "height": 20},
    ))
    fig.update_layout(margin={"l": 8, "r": 8, "t": 34, "b": 8})
    return fig
