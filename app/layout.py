"""The explorer's page: a header (study, run, cohort), a side panel (the selection, the statistics) and the four
linked views, laid out to fit 1600 x 1000 without scrolling. Components come from dash-bootstrap-components and
dash-ag-grid; every id is in :mod:`app.ids`."""

from __future__ import annotations

import dash_ag_grid as dag
import dash_bootstrap_components as dbc
from dash import dcc, html

from app import ids
from app.state import ALPHAS, FDR_LEVELS, TABS
from app.style import CohortStyle

GRAPH_CONFIG = {"displaylogo": False, "responsive": True,
                "modeBarButtonsToRemove": ["autoScale2d", "toggleSpikelines", "hoverCompareCartesian"]}
SMALL = {"fontSize": "0.8rem"}
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
    """The selection's make-up: per cohort, then its members of the chosen cohort against the others by sex, age
    and the other covariates, and by the subject-level anomaly scores (MSMA GMM, and GNSM GMM when the run has it),
    with Fisher's exact and Mann-Whitney p-values, and warnings when a group is too small to test."""
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
    anomaly = summary.get("anomaly") or []  # subject-level anomaly scores (MSMA GMM, GNSM GMM): findings, not confounds
    def median(part):
        return "unknown" if part["median"] is None else f"{part['median']:.3g}"

    rows += [{"what": row["name"], "selection": median(row["selection"]), "rest": median(row["rest"])}
             for row in anomaly]
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
    scored = [f"{row['name']} p = {row['p']:.2g}" for row in anomaly if row["p"] is not None]
    if scored:
        tests.append(f"MSMA/GNSM: median GMM anomaly score, Mann-Whitney {', '.join(scored)}")
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


ROOM_NAMES = {"explore": "Explore", "sweep": "Grid sweep", "subject": "Subject", "run": "Run"}
"""The rooms as the header names them; the run picker marks the published (latest) run with a star."""


def run_label(run_id: str, latest: str) -> str:
    """A run as the picker lists it: its date and id, and whether the store publishes it now."""
    date = f"{run_id[4:6]}-{run_id[6:8]} {run_id[9:11]}:{run_id[11:13]}"
    return f"{run_id[0:4]}-{date} · {run_id[-8:]}" + (" ★" if run_id == latest else "")


def header(ex, registry, state: dict) -> dbc.Navbar:
    """The bar over every room: the study, the room switch, the run, the cohort, the subject search and the
    link and export buttons."""
    run = ex.run
    options = [{"label": f"{c} ({len(run.cohort_ids(c))})", "value": c} for c in run.cohorts]
    latest = registry.latest_id()
    runs = [{"label": run_label(r, latest), "value": r} for r in registry.run_ids()]
    small = "text-white mb-0 me-1 small"
    subjects = [{"label": f"{sid} · {cohort}", "value": sid}
                for sid, cohort in run.subjects["cohort"].items()]
    return dbc.Navbar(
        dbc.Container(
            [
                html.Span("msma-explorer", className="navbar-brand fw-bold mb-0 me-2"),
                html.Span(run.study_name, className="text-white fw-semibold me-3 text-nowrap",
                          title=f"{run.study.manifest.atlas.name} atlas · {len(run.subjects)} subjects"),
                html.Div(dbc.RadioItems(
                    id=ids.ROOM, value=state["tab"], className="btn-group",
                    inputClassName="btn-check", labelClassName="btn btn-outline-light btn-sm py-0 text-nowrap",
                    labelCheckedClassName="active",
                    options=[{"label": ROOM_NAMES[t], "value": t} for t in TABS],
                ), className="room-switch me-3"),
                html.Div(
                    [dbc.Label("Run", html_for=ids.RUN_PICKER, className=small),
                     dbc.Select(id=ids.RUN_PICKER, options=runs, value=run.run_id, size="sm",
                                style={"width": "16rem"}),
                     dbc.Label("Cohort", html_for=ids.COHORT, className=small + " ms-2"),
                     dbc.Select(id=ids.COHORT, options=options, value=state["cohort"], size="sm",
                                style={"width": "12rem"}),
                     html.Div(dcc.Dropdown(id=ids.SUBJECT, options=subjects, value=state.get("subject"),
                                           placeholder="find a subject by id", clearable=True, searchable=True,
                                           optionHeight=26, style={"fontSize": "0.8rem"}),
                              style={"width": "11.5rem"}, className="ms-2"),
                     html.Div([dcc.Clipboard(id=ids.COPY_LINK, title="copy a link to this view",
                                             style={"display": "inline-block", "fontSize": "1rem"}),
                               html.Span("link", className="small ms-1")],
                              className="text-white ms-3 d-flex align-items-center",
                              title="copy a link that opens this view (run, selection, settings, crosshair)"),
                     dbc.Button("export", id=ids.EXPORT, size="sm", color="light", outline=True,
                                className="ms-2 py-0", title="download every figure of this selection as PNG, "
                                "SVG and PDF with the numbers behind each (one zip)")],
                    className="d-flex align-items-center ms-auto",
                ),
            ],
            fluid=True,
        ),
        color="dark", dark=True, className="py-1",
    )


def roi_score_control(run, value: str | None = None) -> html.Div:
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
    return _labelled("ROI scores", dbc.RadioItems(id=ids.ROI_SCORES, value=value or run.default_roi_scores, inline=True,
                                                  style=SMALL, options=options), tip)


def sidebar(default_permutations: int, summary_children, p_floor: str, score_control, state: dict) -> html.Div:
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
                        id=ids.CORRECTION, value=state["correction"], inline=True, style=SMALL,
                        options=[{"label": "Bonferroni", "value": "bonferroni"}, {"label": "BH (FDR)", "value": "bh"}],
                    ), "Bonferroni as in the dissertation; BH controls the false discovery rate instead"),
                    _labelled("alpha", dbc.Select(id=ids.ALPHA, value=state["alpha"], size="sm",
                                                  options=[{"label": v, "value": v} for v in ALPHAS])),
                    html.Hr(className="my-1"),
                    html.Div("Behaviour: Spearman ρ, permutation p, BH", className="text-secondary", style=SMALL),
                    _labelled("FDR level q", dbc.Select(id=ids.FDR, value=state["q"], size="sm",
                                                        options=[{"label": v, "value": v}
                                                                 for v in FDR_LEVELS])),
                    _labelled("permutations", dbc.Select(
                        id=ids.PERMUTATIONS, value=state["permutations"], size="sm",
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


def slice_tools(subject_heatmap: bool = False) -> html.Div:
    return html.Div(
        [html.Div(dbc.Switch(id=ids.SUBJECT_HEATMAP, label="found subject's own", value=subject_heatmap,
                             className="mb-0", style={"fontSize": "0.75rem"}),
                  title="show the heatmap of the subject found by the search box instead of the selection's mean"),
         dbc.Switch(id=ids.RADIOLOGICAL, label="radiological (L on the right)", value=False,
                    className="mb-0", style={"fontSize": "0.75rem"}),
         dbc.Button("peak", id=ids.PEAK, size="sm", color="secondary", outline=True, className="py-0",
                    title="move the crosshair to the strongest voxel of the selection's mean heatmap")],
        className="d-flex align-items-center gap-2",
    )


SOM_INPUT_LABELS = {"msma": "score norms", "gnsm": "+ GNSM"}


def som_input_control(ex, grid: dict | None) -> html.Div:
    """What the map is fitted on: the score norms (the refresh's map), or those and the GNSM norms of the
    manifest's gnsm: columns; shown only for a run with GNSM norms."""
    options = [{"label": SOM_INPUT_LABELS[k], "value": k} for k in ex.som_inputs]
    tip = ("the SOM's input: the MSMA score norms (the refresh's map), or those and each subject's GNSM norms "
           "(metadata-aware: the manifest's gnsm: columns) side by side, each standardised by the reference cohort")
    control = dbc.Select(id=ids.SOM_INPUT, value=(grid or {}).get("norms", "msma"), options=options, size="sm",
                         className="py-0 ps-2",  # fits "score norms" beside its arrow, on one line with the radios
                         style={"width": "7.8rem", "fontSize": "0.75rem", "paddingRight": "1.7rem"})
    return html.Div(control, title=tip, style={} if len(options) > 1 else {"display": "none"})


def explore_room(ex, initial: dict) -> html.Div:
    """The four linked views of dissertation ch. 6.3: the SOM map, the slices, the ROI box plots and the behaviour
    correlations."""
    grid_shown = initial["selection"].get("grid") is not None
    som_tools = html.Div([
        dbc.Button("run's map", id=ids.RUN_MAP, size="sm", color="secondary", outline=True,
                   className="py-0 px-1 text-nowrap",
                   style={} if grid_shown else {"display": "none"},
                   title="back from the sweep grid's map to the map the refresh fitted"),
        dbc.RadioItems(id=ids.SOM_LAYER, value="u_matrix", inline=True, className="small",
                       options=[{"label": "U-matrix", "value": "u_matrix"}, {"label": "hit map", "value": "hits"}]),
        som_input_control(ex, initial["selection"].get("grid")),
    ], className="d-flex align-items-center gap-2")
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
    som_body = html.Div([
        _graph(ids.SOM_GRAPH, initial["som"], "386px"),
        html.Div(initial["stability"], id=ids.STABILITY, title=initial["stability_title"],
                 className="text-secondary px-2 text-truncate",
                 style={"fontSize": "0.75rem", "height": "20px"}),
    ])
    return html.Div(
        [
            dbc.Row([
                dbc.Col(_card("SOM map (fig. 6.2)", som_body, som_tools), width=5),
                dbc.Col(_card("Brain slices", slices, slice_tools(initial["subject_heatmap"])), width=7),
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
        ],
        id=ids.ROOMS["explore"],
    )


def sweep_room(ex, initial: dict, state: dict) -> html.Div:
    """The grid-stability sweep of the cohort's maximal prototype (fig. 6.3), and a sweep started from here."""
    number = {"type": "text", "size": "sm", "style": {"width": "5rem"}, "debounce": True}
    controls = [
        html.Div("Fits a map for every grid size and follows the cohort's maximal prototype: its size, and how "
                 "many of its members the neighbouring grid sizes keep (Jaccard overlap).",
                 className="text-secondary mb-2", style=SMALL),
        html.Div([
            _labelled("rows", dbc.Input(id=ids.SWEEP_ROWS, value="3:15", **number), "FIRST:LAST, inclusive"),
            _labelled("columns", dbc.Input(id=ids.SWEEP_COLS, value="3:15", **number), "FIRST:LAST, inclusive"),
            _labelled("topology", dbc.Select(id=ids.SWEEP_TOPOLOGY, value="rectangular", size="sm",
                                             options=[{"label": t, "value": t}
                                                      for t in ("rectangular", "hexagonal")])),
        ], className="d-flex gap-2 flex-wrap"),
        html.Div([
            dbc.Button("run sweep", id=ids.SWEEP_START, size="sm", color="primary"),
            dbc.Button("cancel", id=ids.SWEEP_CANCEL, size="sm", color="secondary", outline=True, disabled=True),
        ], className="d-flex gap-2 mb-2"),
        dbc.Progress(id=ids.SWEEP_PROGRESS, value=0, max=1, label="", style={"height": "18px"},
                     className="mb-1"),
        html.Div(initial["sweep_status"], id=ids.SWEEP_STATUS, className="text-secondary", style=SMALL),
        dcc.Interval(id=ids.SWEEP_POLL, interval=500, disabled=True),
        dcc.Store(id=ids.SWEEP_JOB, data={}),
        dcc.Store(id=ids.SWEEP_DONE, data=""),
    ]
    return html.Div(
        [
            dbc.Row([
                dbc.Col(_card(f"Sweep of {state['cohort']}", controls), width=3),
                dbc.Col(_card("Grid-stability sweep (fig. 6.3): click a grid to show its map",
                              _graph(ids.SWEEP_GRAPH, initial["sweep"], "452px")), width=9),
            ], className="g-2 mb-2"),
            dbc.Row([
                dbc.Col(_card("Map of the chosen grid", _graph(ids.SWEEP_MAP, initial["som"], "352px")), width=6),
                dbc.Col(_card("Reading the sweep", html.Div(initial["sweep_reading"], style=SMALL,
                                                            className="p-2")), width=6),
            ], className="g-2"),
        ],
        id=ids.ROOMS["sweep"], style={"display": "none"},
    )


def subject_room(initial: dict) -> html.Div:
    """One subject's story: why is this subject atypical?"""
    return html.Div(
        [
            html.Div([
                html.Div(initial["subject_header"], id=ids.SUBJECT_HEADER, style=SMALL, className="flex-grow-1"),
                dbc.Button("show its heatmap in the slices", id=ids.SUBJECT_SHOW, size="sm", color="primary",
                           outline=True, className="py-0 text-nowrap",
                           title="the slice views (Explore room) show this subject's own heatmap"),
            ], className="d-flex align-items-center gap-2 mb-2"),
            dbc.Row([
                dbc.Col(_card("Score-norm profile against the reference",
                              _graph(ids.SUBJECT_PROFILE, initial["subject_profile"], "380px")), width=6),
                dbc.Col(_card("Detector score against age (normative chart)",
                              _graph(ids.SUBJECT_CENTILES, initial["subject_centiles"], "380px")), width=6),
            ], className="g-2 mb-2"),
            dbc.Row([
                dbc.Col(_card("The subject's most atypical ROIs",
                              html.Div(initial["subject_rois"], id=ids.SUBJECT_ROIS,
                                       style={"height": "330px", "overflowY": "auto"})), width=12),
            ], className="g-2"),
        ],
        id=ids.ROOMS["subject"], style={"display": "none"},
    )


def run_room(initial: dict) -> html.Div:
    """Where the numbers come from: the run's provenance and detection table, and the study's other runs."""
    return html.Div(html.Div(initial["provenance"], id=ids.PROVENANCE), id=ids.ROOMS["run"],
                    style={"display": "none"})


def page(ex, registry, state: dict, initial: dict) -> list:
    """The page of one run in one view state (``initial``: its figures, computed before the page is sent)."""
    modal = dbc.Modal(
        [dbc.ModalHeader(dbc.ModalTitle("ROI score against behaviour score (fig. 6.6)")),
         dbc.ModalBody([dbc.RadioItems(id=ids.SCATTER_VIEW, value="raw", inline=True, className="small",
                                       options=[{"label": "raw values", "value": "raw"},
                                                {"label": "ranks", "value": "rank"}]),
                        _graph(ids.SCATTER_GRAPH, initial["scatter"], "460px")])],
        id=ids.SCATTER_MODAL, is_open=initial["scatter_open"], size="lg",
    )
    rooms = [explore_room(ex, initial), sweep_room(ex, initial, state), subject_room(initial), run_room(initial)]
    for room, name in zip(rooms, ids.ROOMS, strict=True):
        room.style = {} if name == state["tab"] else {"display": "none"}
    stores = [
        dcc.Store(id=ids.SELECTION, data=initial["selection"]),
        dcc.Store(id=ids.REGIONS, data=initial["regions"]),
        dcc.Store(id=ids.CROSSHAIR, data=initial["crosshair"]),
        dcc.Store(id=ids.KEYS, data=None),
        dcc.Store(id=ids.PAIR, data=state.get("pair") or []),  # [] not None: a Store of None fires on mount
        dcc.Download(id=ids.EXPORT_DOWNLOAD),
        dcc.Store(id=ids.EXPORT_JOB, data={}),
        dcc.Store(id=ids.EXPORT_DONE, data=""),
        dcc.Interval(id=ids.EXPORT_POLL, interval=500, disabled=True),
    ]
    return [
        header(ex, registry, state),
        dbc.Row([
            dbc.Col(sidebar(initial["permutations"], initial["summary"], initial["p_floor"],
                            roi_score_control(ex.run, state["scores"]), state), width=2, className="pe-0"),
            dbc.Col(rooms, width=10),
        ], className="g-2 pt-2 px-2"),
        modal,
        *stores,
    ]


def shell(children: list, run_id: str, state: dict) -> dbc.Container:
    """The page's frame: the URL, the run and view-state stores, the newer-run poll and notices, around the page
    of one run (:func:`page`)."""
    toast = {"position": "fixed", "top": 52, "right": 12, "width": 420, "zIndex": 1080}
    return dbc.Container(
        [
            dcc.Location(id=ids.URL, refresh=False),
            dcc.Store(id=ids.RUN, data=run_id),
            dcc.Store(id=ids.VIEW_STATE, data=state),
            dcc.Interval(id=ids.RUN_POLL, interval=15_000),
            html.Div(children, id=ids.PAGE),
            dbc.Toast(id=ids.NEWER_RUN, header="A newer run is published", is_open=False, dismissable=True,
                      icon="info", style=toast),
            dbc.Toast(id=ids.LINK_NOTICE, header="The link named things this run does not have", is_open=False,
                      dismissable=True, icon="warning", duration=12_000, style={**toast, "top": 200}),
            dbc.Toast(id=ids.EXPORT_NOTE, header="Export", is_open=False, dismissable=True, icon="primary",
                      style={**toast, "top": 340}),
        ],
        fluid=True, className="p-0",
    )


def provenance_panel(data: dict, run_ids: list[str], latest: str) -> list:
    """The run room: the run's provenance (manifest digest, date, profile, score model), its detection table
    (AUROC of every detector and cohort against the held-out reference subjects, in %), its warnings, and the
    study's runs."""
    from analysis.runs.report import DETECTOR_NAMES, NORM_NAMES

    model, manifest, sigmas = data["score_model"], data["manifest"], data["sigmas"]
    if model is None:
        trained = "not recorded in this run"
    else:
        loss = model["best_val_loss"]
        trained = (f"{model['steps']} steps ({model['stopped']}), best validation loss "
                   f"{'n/a' if loss is None else f'{loss:.4g}'}"
                   + (f", {model['parameters']:,} parameters" if model.get("parameters") else "")
                   + (" (reused checkpoint)" if model["reused"] else ""))
    facts = [
        ("run", data["run_id"]), ("created (UTC)", data["created_utc"] or "not recorded"), ("study", data["study"]),
        ("manifest", manifest.get("path", "not recorded")),
        ("manifest SHA-256", manifest.get("sha256", "not recorded")),
        ("profile", data["profile"] or "not recorded"), ("device", data["device"] or "not recorded"),
        ("score model", trained),
        ("noise scales", f"{len(sigmas)}, σ {min(sigmas):.3g} to {max(sigmas):.3g}" if sigmas else "not recorded"),
        *([("GNSM", data["gnsm"])] if data.get("gnsm") else []),
        ("folder", data["run_dir"]),
    ]
    fact_rows = [html.Tr([html.Th(k, className="text-secondary fw-normal pe-3 text-nowrap align-top"),
                          html.Td(v, style={"wordBreak": "break-all"})]) for k, v in facts]
    tables = []
    for norms, detectors in data["detection"].items():  # one row per cohort: it stays narrow with many cohorts
        groups = sorted({g for per in detectors.values() for g in per})
        head = html.Tr([html.Th(f"{NORM_NAMES.get(norms, norms)}: AUROC %"),
                        *(html.Th(DETECTOR_NAMES.get(d, d)) for d in detectors)])
        body = [html.Tr([html.Td(g), *(html.Td("" if per.get(g) is None else f"{100 * per[g]:.1f}")
                                       for per in detectors.values())]) for g in groups]
        tables.append(dbc.Table([html.Thead(head), html.Tbody(body)], size="sm", bordered=False, striped=True,
                                className="mb-2", style={"fontSize": "0.75rem"}))
    if not tables:
        tables = [html.Div("This run records no detection metrics.", className="text-secondary", style=SMALL)]
    versions = ", ".join(f"{k} {v}" for k, v in data["versions"].items()) or "not recorded"
    warnings = [dbc.Alert(w, color="warning", className="p-1 my-1", style=SMALL) for w in data["warnings"]]
    runs = html.Ul([html.Li(html.A(run_label(r, latest), href=f"?run={r}") if r != data["run_id"] else
                            html.B(run_label(r, latest) + " (shown)")) for r in run_ids], style=SMALL)
    return [dbc.Row([
        dbc.Col(_card("Provenance", [html.Table(html.Tbody(fact_rows), style={"fontSize": "0.78rem"}),
                                     html.Div(f"versions: {versions}", className="text-secondary mt-2",
                                              style={"fontSize": "0.72rem"}), *warnings]), width=6),
        dbc.Col([_card("Detection (held-out reference test subjects; dissertation table 3.8)", tables,
                       class_name="mb-2"),
                 _card("Runs of this study", runs)], width=6),
    ], className="g-2")]


def subject_rois(story) -> list:
    """The subject room's table of the subject's most atypical ROIs (value and reference percentile), or why
    there is none."""
    if story is None:
        return [html.Div("No subject chosen.", className="text-secondary p-2", style=SMALL)]
    from app.figures.subject import top_roi_columns, top_roi_rows

    rows = top_roi_rows(story.rois)
    if not rows:
        return [html.Div(f"{story.subject_id} has no {story.roi_scores} ROI scores in this run.",
                         className="text-secondary p-2", style=SMALL)]
    return [
        html.Div(f"{story.roi_scores} scores ({story.roi_unit}); the percentile is among the reference subjects "
                 f"the models did not train on.", className="text-secondary px-1", style={"fontSize": "0.72rem"}),
        dag.AgGrid(rowData=rows, columnDefs=top_roi_columns(story.roi_unit),
                   defaultColDef={"sortable": True, "resizable": True, "suppressMovable": True},
                   dashGridOptions={"headerHeight": 26, "rowHeight": 24},
                   style={"width": "100%", "height": f"{34 + 24 * len(rows)}px", "fontSize": "0.75rem"}),
    ]
