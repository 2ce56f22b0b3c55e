"""The explorer's page: a header (study, run, cohort), a side panel (the selection, the statistics) and the four
linked views, laid out to fit 1600 x 1000 without scrolling. Components come from dash-bootstrap-components and
dash-ag-grid; every id is in :mod:`app.ids`."""

from __future__ import annotations

import dash_ag_grid as dag
import dash_bootstrap_components as dbc
from dash import dcc, html

from app import ids
from app.style import CohortStyle

GRAPH_CONFIG = {"displaylogo": False, "responsive": True,
                "modeBarButtonsToRemove": ["autoScale2d", "toggleSpikelines", "hoverCompareCartesian"]}
SMALL = {"fontSize": "0.8rem"}
ALPHAS = ("0.01", "0.05", "0.1")
FDR_LEVELS = ("0.05", "0.1", "0.2")
ROI_COUNTS = {"10": 10, "20": 20, "all": 10_000}


def permutation_counts(refresh_count: int) -> list[int]:
    """The permutation counts offered: the refresh's and the round ones around it (the callbacks accept no other)."""
    return sorted({1_000, 10_000, 100_000, int(refresh_count)})


DEFAULT_THRESHOLD = 2.0
"""Voxels shown over the template at first: two reference standard deviations from the reference mean."""


def _graph(component_id: str, figure, height: str, **config) -> dcc.Graph:
    return dcc.Graph(id=component_id, figure=figure, style={"height": height}, config={**GRAPH_CONFIG, **config})


def _card(title: str, body, tools=None, class_name: str = "h-100") -> dbc.Card:
    header = dbc.CardHeader(
        html.Div([html.Span(title, className="fw-semibold"), html.Div(tools, className="ms-auto")],
                 className="d-flex align-items-center gap-2"),
        className="py-1 px-2", style=SMALL,
    )
    return dbc.Card([header, dbc.CardBody(body, className="p-1")], className=f"{class_name} shadow-sm")


def _labelled(label: str, control, tip: str | None = None) -> html.Div:
    return html.Div([html.Label(label, className="mb-0 text-secondary d-block", style=SMALL, title=tip), control],
                    className="mb-2")


def summary_panel(summary: dict, styles: dict[str, CohortStyle]) -> list:
    """The selection's make-up: per cohort, then its members of the chosen cohort against the others by sex and
    age, with Fisher's exact and Mann-Whitney p-values, and warnings when a group is too small to test."""
    cohort = summary["cohort"]
    a, b = summary["selection"], summary["rest"]

    def age(group):
        if group["age_mean"] is None:
            return "unknown"
        sd = f" ± {group['age_sd']:.1f}" if group["age_sd"] is not None else ""
        return f"{group['age_mean']:.1f}{sd}"

    def numeric(part):
        if part["mean"] is None:
            return "unknown"
        return f"{part['mean']:.4g}" + (f" ± {part['sd']:.3g}" if part["sd"] is not None else "")

    balance = summary.get("covariates") or []
    rows = [
        {"what": "members", "selection": a["n"], "rest": b["n"]},
        {"what": "female", "selection": a["female"], "rest": b["female"]},
        {"what": "male", "selection": a["male"], "rest": b["male"]},
        {"what": "age (y)", "selection": age(a), "rest": age(b)},
    ]
    # Numeric covariates besides age get a row; categorical ones other than sex show as counts per level.
    for row in balance:
        if row["kind"] == "numeric" and row["name"] != "age":
            rows.append({"what": row["name"], "selection": numeric(row["selection"]), "rest": numeric(row["rest"])})
        elif row["kind"] == "categorical" and row["name"] != "sex":
            rows += [{"what": f"{row['name']} {level}", "selection": n, "rest": row["rest"].get(level, 0)}
                     for level, n in row["selection"].items()]
    grid = dag.AgGrid(
        rowData=rows,
        columnDefs=[{"field": "what", "headerName": "", "width": 74},
                    {"field": "selection", "headerName": "selected", "flex": 1},
                    {"field": "rest", "headerName": "rest", "flex": 1}],
        defaultColDef={"sortable": False, "resizable": False, "suppressMovable": True, "cellDataType": False,
                       "cellStyle": {"paddingLeft": "4px", "paddingRight": "2px"}},
        dashGridOptions={"headerHeight": 24, "rowHeight": 22, "suppressHorizontalScroll": True},
        style={"width": "100%", "height": f"{30 + 22 * len(rows)}px", "fontSize": "0.72rem"},
    )
    tests = [f"{row['name']}: {row['test']} p = {row['p']:.2g}" for row in balance if row["p"] is not None]
    named = {row["name"] for row in balance}
    if "sex" not in named and summary["sex_fisher_p"] is not None:  # sex and age are shown even when not covariates
        tests.append(f"sex: Fisher's exact p = {summary['sex_fisher_p']:.2g}")
    if "age" not in named and summary["age_mannwhitney_p"] is not None:
        tests.append(f"age: Mann-Whitney p = {summary['age_mannwhitney_p']:.2g}")
    unbalanced = [row for row in balance if row["unbalanced"]]
    if unbalanced:
        names = ", ".join(f"{row['name']} (p = {row['p']:.2g})" for row in unbalanced)
        summary = {**summary, "warnings": [*summary["warnings"],
                   f"the selection differs from the rest of {cohort} in {names}: regional differences may "
                   f"follow it; compare with the adjusted ROI scores"]}
    counts = [
        html.Span([html.Span("●", style={"color": styles[c].color}), f" {c} {n}"], className="me-2 text-nowrap")
        for c, n in sorted(summary["selected_per_cohort"].items(), key=lambda kv: -kv[1]) if c in styles
    ]
    warnings = [dbc.Alert(w, color="warning", className="p-1 my-1", style=SMALL) for w in summary["warnings"]]
    return [
        html.Div([html.B(f"{summary['selected']} subjects selected: "), *counts], style=SMALL, className="mb-1"),
        html.Div(f"{cohort} in the selection and in the rest:", className="text-secondary",
                 style={"fontSize": "0.72rem"}),
        grid,
        html.Div("; ".join(tests) or "no covariates recorded", className="text-secondary mt-1",
                 style={"fontSize": "0.72rem"}),
        *warnings,
    ]


def header(run, cohort: str) -> dbc.Navbar:
    created = run.created.strftime("%Y-%m-%d %H:%M UTC")
    options = [{"label": f"{c} ({len(run.cohort_ids(c))})", "value": c} for c in run.cohorts]
    return dbc.Navbar(
        dbc.Container(
            [
                html.Span("msma-explorer", className="navbar-brand fw-bold mb-0"),
                html.Span(run.study_name, className="text-white fw-semibold me-3"),
                html.Span(f"run {run.run_id} · {created} · {run.study.manifest.atlas.name} atlas ·"
                          f" {len(run.subjects)} subjects", className="text-white-50 small"),
                html.Div(
                    [dbc.Label("Cohort", html_for=ids.COHORT, className="text-white mb-0 me-2 small"),
                     dbc.Select(id=ids.COHORT, options=options, value=cohort, size="sm", style={"width": "15rem"})],
                    className="d-flex align-items-center ms-auto",
                ),
            ],
            fluid=True,
        ),
        color="dark", dark=True, className="py-1",
    )


def roi_score_control(run) -> html.Div:
    """Which ROI scores the chain reads: adjusted for the study's covariates (the default when it declares some) or
    raw; the adjusted choice is disabled, and says why, without covariates."""
    covariates = ", ".join(c["name"] for c in (run.record.get("normative") or {}).get("covariates", []))
    adjusted = run.roi_adjusted is not None
    options = [
        {"label": "adjusted" if adjusted else "adjusted (not in this run)", "value": "adjusted",
         "disabled": not adjusted},
        {"label": "raw", "value": "raw"},
    ]
    tip = (f"adjusted: each ROI score's deviation (z) from what the reference cohort predicts for the subject's "
           f"{covariates}; raw: the mean heatmap value" if adjusted else
           "this run has no normative model: the study declares no covariates, or the model could not be fitted "
           "(the run's warnings say why); declare subjects.covariates (age, sex, head size, site) to adjust for them")
    return _labelled("ROI scores", dbc.RadioItems(id=ids.ROI_SCORES, value=run.default_roi_scores, inline=True,
                                                  style=SMALL, options=options), tip)


def sidebar(default_permutations: int, summary_children, p_floor: str, score_control) -> html.Div:
    permutation_options = permutation_counts(default_permutations)
    return html.Div(
        [
            _card("Selection", html.Div(summary_children, id=ids.SUMMARY), class_name="mb-2"),
            _card(
                "Statistics",
                [
                    html.Div("Regions: selection vs rest of the cohort (Mann-Whitney U)", className="text-secondary",
                             style=SMALL),
                    score_control,
                    _labelled("correction", dbc.RadioItems(
                        id=ids.CORRECTION, value="bonferroni", inline=True, style=SMALL,
                        options=[{"label": "Bonferroni", "value": "bonferroni"}, {"label": "BH (FDR)", "value": "bh"}],
                    ), "Bonferroni as in the dissertation; BH controls the false discovery rate instead"),
                    _labelled("alpha", dbc.Select(id=ids.ALPHA, value="0.05", size="sm",
                                                  options=[{"label": v, "value": v} for v in ALPHAS])),
                    html.Hr(className="my-1"),
                    html.Div("Behaviour: Spearman ρ, permutation p, BH", className="text-secondary", style=SMALL),
                    _labelled("FDR level q", dbc.Select(id=ids.FDR, value="0.1", size="sm",
                                                        options=[{"label": v, "value": v}
                                                                 for v in FDR_LEVELS])),
                    _labelled("permutations", dbc.Select(
                        id=ids.PERMUTATIONS, value=str(default_permutations), size="sm",
                        options=[{"label": f"{v:,}", "value": str(v)} for v in permutation_options],
                    ), "the refresh used this many; 100,000 takes about ten times as long"),
                    html.Div(p_floor, id=ids.P_FLOOR, className="text-secondary", style={"fontSize": "0.72rem"}),
                ],
                class_name="",
            ),
            html.Div(
                "Click a SOM unit to select it; shift-click or box/lasso-select to take several. Click an ROI's "
                "boxes to centre the slices on it, a correlation cell for its scatter. Arrow keys step through "
                "the slice under the pointer.",
                className="text-secondary mt-2", style={"fontSize": "0.72rem"},
            ),
        ],
    )


def slice_controls() -> html.Div:
    slider = {"allow_direct_input": False, "updatemode": "mouseup"}
    label = {"className": "mb-0 text-secondary text-nowrap", "style": {"fontSize": "0.75rem"}}
    return html.Div(
        [
            html.Div([html.Label("show |value| ≥", **label),
                      html.Div(dcc.Slider(id=ids.THRESHOLD, min=0, max=10, step=0.5, value=DEFAULT_THRESHOLD,
                                          marks={0: "0", 2: "2", 5: "5", 10: "10"}, **slider),
                               className="flex-grow-1")],
                     className="d-flex align-items-center gap-1", style={"width": "36%"}),
            html.Div([html.Label("opacity", **label),
                      html.Div(dcc.Slider(id=ids.OPACITY, min=0, max=1, step=0.05, value=0.85,
                                          marks={0: "0", 1: "1"}, **slider), className="flex-grow-1")],
                     className="d-flex align-items-center gap-1", style={"width": "26%"}),
            html.Div([html.Label("colours", **label),
                      dbc.RadioItems(id=ids.RANGE_MODE, value="auto", inline=True, style={"fontSize": "0.75rem"},
                                     options=[{"label": "auto ±", "value": "auto"},
                                              {"label": "fixed ±", "value": "fixed"}]),
                      dbc.Input(id=ids.RANGE_MAX, type="number", min=0.1, step=0.1, value=3, size="sm",
                                style={"width": "4.2rem"}, debounce=True)],
                     className="d-flex align-items-center gap-1"),
        ],
        className="d-flex gap-3 px-2 align-items-center",
    )


def slice_tools() -> html.Div:
    return html.Div(
        [dbc.Switch(id=ids.RADIOLOGICAL, label="radiological (L on the right)", value=False,
                    className="mb-0", style={"fontSize": "0.75rem"}),
         dbc.Button("peak", id=ids.PEAK, size="sm", color="secondary", outline=True, className="py-0",
                    title="move the crosshair to the strongest voxel of the selection's mean heatmap")],
        className="d-flex align-items-center gap-2",
    )


def page(ex, initial: dict) -> dbc.Container:
    """The whole page. ``initial`` holds the first state and figures (computed once when the app starts)."""
    run = ex.run
    som_tools = dbc.RadioItems(id=ids.SOM_LAYER, value="u_matrix", inline=True, className="small",
                               options=[{"label": "U-matrix", "value": "u_matrix"},
                                        {"label": "hit map", "value": "hits"}])
    roi_tools = html.Div([html.Span("show", className="small me-1"),
                          dbc.Select(id=ids.ROI_COUNT, value="10", size="sm", style={"width": "5rem"},
                                     options=[{"label": v, "value": v} for v in ROI_COUNTS])],
                         className="d-flex align-items-center")
    correlation_tools = dbc.RadioItems(id=ids.CORRELATION_MODE, value="full", inline=True, className="small",
                                       options=[{"label": "significant pairs", "value": "significant"},
                                                {"label": "full matrix", "value": "full"}])
    slices = html.Div(
        [
            dbc.Row([dbc.Col(html.Div(_graph(ids.SLICE_GRAPHS[p], initial["slices"][k], "292px",
                                             displayModeBar=False), **{"data-plane": p}), width=4, className="px-0")
                     for k, p in enumerate(ids.PLANES)], className="g-0", id="slice-panel"),
            html.Div([
                html.Div(initial["slice_note"], id=ids.SLICE_NOTE, className="text-secondary px-2",
                         style={"fontSize": "0.75rem", "width": "48%"}),
                html.Div(_graph(ids.SLICE_COLORBAR, initial["colorbar"], "52px", displayModeBar=False,
                                staticPlot=True), style={"width": "52%"}),
            ], className="d-flex align-items-center mb-1"),
            slice_controls(),
        ]
    )
    modal = dbc.Modal(
        [dbc.ModalHeader(dbc.ModalTitle("ROI score against behaviour score (fig. 6.6)")),
         dbc.ModalBody([dbc.RadioItems(id=ids.SCATTER_VIEW, value="raw", inline=True, className="small",
                                       options=[{"label": "raw values", "value": "raw"},
                                                {"label": "ranks", "value": "rank"}]),
                        _graph(ids.SCATTER_GRAPH, initial["scatter"], "460px")])],
        id=ids.SCATTER_MODAL, is_open=False, size="lg",
    )
    views_grid = html.Div(
        [
            dbc.Row([
                dbc.Col(_card("SOM map (fig. 6.2)", _graph(ids.SOM_GRAPH, initial["som"], "408px"), som_tools),
                        width=5),
                dbc.Col(_card("Brain slices", slices, slice_tools()), width=7),
            ], className="g-2 mb-2"),
            dbc.Row([
                dbc.Col(_card("ROI box plots (fig. 6.4)", html.Div(
                    dcc.Graph(id=ids.ROI_GRAPH, figure=initial["rois"], style=initial["roi_style"],
                              config=GRAPH_CONFIG),
                    style={"height": "404px", "overflowY": "auto"},
                ), roi_tools), width=6),
                dbc.Col(_card("Behaviour correlations (fig. 6.5)", html.Div(
                    dcc.Graph(id=ids.CORRELATION_GRAPH, figure=initial["correlations"],
                              style=initial["correlation_style"], config=GRAPH_CONFIG),
                    style={"height": "404px", "overflowY": "auto"},
                ), correlation_tools), width=6),
            ], className="g-2"),
        ]
    )
    stores = [
        dcc.Store(id=ids.SELECTION, data=initial["selection"]),
        dcc.Store(id=ids.REGIONS, data=initial["regions"]),
        dcc.Store(id=ids.CROSSHAIR, data=initial["crosshair"]),
        dcc.Store(id=ids.KEYS, data=None),
    ]
    return dbc.Container(
        [
            header(run, initial["selection"]["cohort"]),
            dbc.Row([
                dbc.Col(sidebar(initial["permutations"], initial["summary"], initial["p_floor"],
                                roi_score_control(ex.run)), width=2,
                        className="pe-0"),
                dbc.Col(views_grid, width=10),
            ], className="g-2 pt-2 px-2"),
            modal,
            *stores,
        ],
        fluid=True, className="p-0",
    )
