"""Pure figure builders: plain numbers and names in, a ``plotly.graph_objects.Figure`` out, one module per view.

Nothing here reads a run or knows about Dash; each builder is tested through ``fig.to_dict()``. The views follow
the dissertation's hand-drawn figures (ch. 6): the SOM map with cohort prototypes (fig. 6.2, :mod:`app.figures.som`),
ROI box plots with the reference 90th percentile (fig. 6.4, 6.7, :mod:`app.figures.regions`), the
behaviour-correlation heatmap (fig. 6.5, 6.8) and a pair's scatter (fig. 6.6) (:mod:`app.figures.behaviour`); plus
orthogonal brain slices of a heatmap over the template (:mod:`app.figures.slices`). This module holds what every
view shares: the empty state.
"""

from __future__ import annotations

import plotly.graph_objects as go

from app.style import base_layout


def wrap_text(text: str, width: int = 80) -> str:
    """Break a sentence into lines of at most about ``width`` characters, ``<br>`` between (Plotly text does not
    wrap by itself)."""
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return "<br>".join([*lines, line])


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
