"""The explorer's view state and its place in the URL, so a view can be sent to a colleague.

The state is a small dict of plain values: the room, the cohort and selected SOM units (and the grid when a sweep
cell's map is shown, or a map fitted on the score and GNSM norms: ``grid=7x9r~gnsm``), the ROI scores, corrections
and levels, the crosshair, the open correlation pair and the subject found by the search box. :func:`encode`
writes it into the URL's fragment (``#cohort=...&units=6.8``); the run is the query (``?run=<id>``).
:func:`restore` reads a fragment back, checking every field against the run and the controls' options: a field
that names nothing known is dropped (and said so), never trusted.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlencode

from app import ids

TABS = ("explore", "sweep", "subject", "run")
"""The rooms of the page, in the order the header offers them."""

CORRECTIONS = ("bonferroni", "bh")
ALPHAS = ("0.01", "0.05", "0.1")
FDR_LEVELS = ("0.05", "0.1", "0.2")
TOPOLOGY_CODES = {"r": "rectangular", "h": "hexagonal"}

FIELDS = ("tab", "cohort", "units", "grid", "scores", "correction", "alpha", "q", "permutations", "voxel", "plane",
          "roi", "pair", "subject")
"""Every field of a view state, in the order the URL lists them."""


def _units_text(units) -> str:
    return ";".join(f"{int(r)}.{int(c)}" for r, c in units)


def _grid_text(grid) -> str | None:
    if not grid:
        return None
    norms = grid.get("norms", "msma")
    suffix = "" if norms == "msma" else f"~{norms}"
    return f"{grid['rows']}x{grid['cols']}{grid.get('topology', 'rectangular')[0]}{suffix}"


def encode(state: dict) -> str:
    """The URL fragment (with its ``#``) of a view state; empty values are left out."""
    parts = {
        "tab": state.get("tab"),
        "cohort": state.get("cohort"),
        "units": _units_text(state.get("units") or []) or None,
        "grid": _grid_text(state.get("grid")),
        "scores": state.get("scores"),
        "correction": state.get("correction"),
        "alpha": state.get("alpha"),
        "q": state.get("q"),
        "permutations": state.get("permutations"),
        "voxel": ".".join(str(int(v)) for v in state["voxel"]) if state.get("voxel") else None,
        "plane": state.get("plane"),
        "roi": state.get("roi"),
        "pair": "~".join(state["pair"]) if state.get("pair") else None,
        "subject": state.get("subject"),
    }
    pairs = [(k, str(v)) for k, v in parts.items() if v not in (None, "")]
    return "#" + urlencode(pairs, quote_via=quote, safe=".;~") if pairs else ""


def _int_list(text: str, sep: str) -> list[int] | None:
    try:
        return [int(v) for v in text.split(sep)]
    except ValueError:
        return None


def parse(fragment: str | None) -> dict[str, str]:
    """The raw fields of a URL fragment (strings, unchecked); unknown names and repeats are dropped."""
    text = (fragment or "").lstrip("#")
    raw = {}
    for key, value in parse_qsl(text, keep_blank_values=False):
        if key in FIELDS and key not in raw and len(value) <= 400:
            raw[key] = value
    return raw


def restore(ex, fragment: str | None, default: dict, permutation_options) -> tuple[dict, list[str]]:
    """The view state a URL fragment names, on top of ``default``, and what in it was not understood.

    Every field is checked against the run of ``ex`` (cohorts, SOM units, ROIs, behaviour scores, subjects, the
    grid) and the controls' options; a field that fails is left at its default and named in the returned list.
    """
    from app.views import check_grid

    raw, state, problems = parse(fragment), dict(default), []
    run = ex.run

    def bad(name: str, why: str) -> None:
        problems.append(f"{name} ({why})")

    def take(name: str, options, why: str) -> None:
        """A field whose value must be one of ``options``."""
        if name in raw:
            if raw[name] in options:
                state[name] = raw[name]
            else:
                bad(name, why)

    take("tab", TABS, f"expected one of {', '.join(TABS)}")
    take("cohort", run.cohorts, "not a cohort of this run")
    grid = None
    if "grid" in raw:
        text, _, norms = raw["grid"].partition("~")
        code = text[-1:] if text[-1:] in TOPOLOGY_CODES else "r"
        numbers = _int_list(text.rstrip("rh"), "x")
        candidate = ({"rows": numbers[0], "cols": numbers[1], "topology": TOPOLOGY_CODES[code]}
                     if numbers and len(numbers) == 2 else None)
        if candidate is not None and norms:
            candidate["norms"] = norms
        checked = check_grid(candidate)
        if checked is not None and checked.norms in ex.som_inputs:
            grid = candidate
        elif checked is not None:
            bad("grid", f"this run has no {norms} norms to fit a map on")
        else:
            bad("grid", "expected ROWSxCOLS with 2-30 of each (and ~gnsm for a map with GNSM norms)")
    state["grid"] = grid
    som = ex.map(check_grid(grid)).som if grid else run.som
    if "units" in raw:
        pairs = [_int_list(u, ".") for u in raw["units"].split(";")]
        units = [p for p in pairs if p and len(p) == 2 and 0 <= p[0] < som.n_rows and 0 <= p[1] < som.n_cols]
        if units and len(units) == len(pairs):
            state["units"] = [list(u) for u in dict.fromkeys(tuple(u) for u in units)]
        else:
            bad("units", f"expected ROW.COL;... on the {som.n_rows} x {som.n_cols} map")
    elif "cohort" in raw or "grid" in raw:
        from app.views import prototype_units

        state["units"] = prototype_units(ex, state["cohort"], check_grid(grid))
    choices = {"scores": tuple(run.roi_tables), "correction": CORRECTIONS, "alpha": ALPHAS, "q": FDR_LEVELS,
               "permutations": tuple(str(p) for p in permutation_options), "plane": ids.PLANES}
    for name, options in choices.items():
        take(name, options, f"expected one of {', '.join(options)}")
    if "voxel" in raw:
        voxel = _int_list(raw["voxel"], ".")
        shape = ex.geometry.shape
        if voxel and len(voxel) == 3 and all(0 <= v < n for v, n in zip(voxel, shape, strict=True)):
            state["voxel"] = voxel
        else:
            bad("voxel", f"expected I.J.K inside the {' x '.join(map(str, shape))} grid")
    take("roi", run.roi_labels, "not a region of the atlas")
    if "pair" in raw:
        roi, _, behaviour = raw["pair"].partition("~")
        if roi in run.roi_labels and run.behaviour is not None and behaviour in run.behaviour.columns:
            state["pair"] = [roi, behaviour]
        else:
            bad("pair", "expected ROI~BEHAVIOUR of this run")
    take("subject", run.row_of, "not a subject of this run")
    return state, problems
