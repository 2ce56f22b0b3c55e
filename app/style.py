"""One look for every view: a fixed colour and marker per cohort (Okabe-Ito, safe for colour-blind readers) and
the colour maps of scores and correlations."""

from __future__ import annotations

from dataclasses import dataclass

OKABE_ITO = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442"]
"""Okabe & Ito (2008): distinguishable under the common colour-vision deficiencies; yellow last (weak on white)."""

SYMBOLS = ["circle", "triangle-up", "star", "diamond", "square", "pentagon", "cross", "hexagram"]

HEATMAP_COLORS = "RdBu_r"
"""Diverging (ColorBrewer RdBu, colour-blind safe) for heatmaps in reference SD: red above the reference, blue below."""
CORRELATION_COLORS = "PuOr"
"""Diverging (ColorBrewer PuOr, colour-blind safe) centred at 0 for Spearman rho."""
U_MATRIX_COLORS = "Greys"
HIT_MAP_COLORS = "Viridis"
REST_COLOR = "#999999"
"""The cohort's members outside the selection, where the selection has the cohort's own colour."""
CROSSHAIR_COLOR = "#F0E442"
OUTLINE_COLOR = "#000000"
HIGHLIGHT = "rgba(240,228,66,0.35)"
"""The band behind the ROI outlined on the slices, on the box plots."""
PERCENTILE_LINE = {"color": "#000000", "dash": "dash", "width": 2}
"""The reference 90th percentile on the box plots."""
FONT = {"family": "Inter, system-ui, -apple-system, Segoe UI, Roboto, sans-serif", "size": 12}


@dataclass(frozen=True)
class CohortStyle:
    color: str
    symbol: str


def cohort_styles(cohorts: list[str]) -> dict[str, CohortStyle]:
    """One style per cohort, by position in ``cohorts`` (the run's order: reference first, then by name), so a
    cohort keeps its colour and marker in every view of a run."""
    return {
        cohort: CohortStyle(OKABE_ITO[k % len(OKABE_ITO)], SYMBOLS[k % len(SYMBOLS)])
        for k, cohort in enumerate(cohorts)
    }


def base_layout(title: str, **extra) -> dict:
    """Layout shared by every figure: white background, the title at the top left, small margins."""
    layout = {
        "title": {"text": title, "x": 0.01, "xanchor": "left", "font": {"size": 13}, "y": 0.985, "yanchor": "top"},
        "font": FONT,
        "paper_bgcolor": "white",
        "plot_bgcolor": "white",
        "margin": {"l": 60, "r": 20, "t": 40, "b": 45},
        "uirevision": "keep",
        "modebar": {"orientation": "v", "bgcolor": "rgba(255,255,255,0.6)"},
    }
    layout.update(extra)
    return layout
