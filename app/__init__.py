"""msma-explorer's browser app: linked SOM, brain-slice, ROI box-plot and behaviour-correlation views of one
published run. It only reads runs (through :mod:`analysis.runs.reader`) and starts without importing torch;
``tests/test_layering.py`` guards that rule.

:func:`create_app` builds the Dash app of a run; :mod:`app.server` serves it.
"""

from __future__ import annotations

from pathlib import Path

from analysis.runs.reader import PublishedRun

ASSETS = Path(__file__).resolve().parent / "assets"


def default_cohort(run: PublishedRun) -> str:
    """The cohort the explorer opens on: the non-reference cohort whose maximal prototype holds the largest share
    of it (the most concentrated subgroup; the Down-syndrome-like cohort in the demo), the reference one if alone."""
    others = [c for c in run.cohorts if c != run.reference_cohort and c in run.som.prototypes]
    if not others:
        return run.reference_cohort
    share = {c: run.som.prototypes[c]["size"] / max(1, run.som.prototypes[c]["cohort_size"]) for c in others}
    return max(others, key=lambda c: (share[c], run.som.prototypes[c]["size"]))


def create_app(run: PublishedRun, *, cohort: str | None = None):
    """The explorer of ``run``, opened on ``cohort`` (default :func:`default_cohort`) with its prototype selected;
    the study's other published runs open from the run picker or a link (``?run=<id>``). Every figure of the first
    page is computed here, once, so the first page needs one request."""
    import dash
    import dash_bootstrap_components as dbc  # noqa: F401  (registers the components before the layout is built)

    from app import callbacks, layout, page
    from app.jobs import ExportJobs, SweepJobs
    from app.registry import RunRegistry

    if cohort is not None and cohort not in run.cohorts:
        raise ValueError(f"cohort {cohort!r} is not a cohort of run {run.run_id}; expected one of {run.cohorts}")
    registry = RunRegistry(run)
    ex = registry.first
    state = callbacks.default_state(ex, cohort)
    app = dash.Dash(
        __name__,
        title=f"msma-explorer · {run.study_name}",
        assets_folder=str(ASSETS),
        update_title=None,
        serve_locally=True,
    )
    app.layout = layout.shell(page.build(ex, registry, state), run.run_id, state)
    jobs = SweepJobs()
    app.server.config["MSMA_SWEEP_JOBS"] = jobs  # so a test or the server can stop running sweeps
    callbacks.register(app, registry, jobs, lambda explorer, target: page.build(explorer, registry, target),
                       ExportJobs())
    return app
