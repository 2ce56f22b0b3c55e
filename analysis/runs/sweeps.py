"""A grid-stability sweep of one cohort of a published run, written into the run as ``sweep_<cohort>.parquet``:
the one code path of ``msma sweep`` and of a sweep started from the explorer."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pandas as pd

from analysis.exploration.sweep import SweepGrids, grid_stability_sweep
from analysis.runs import layout
from analysis.runs.store import write_table


def sweep_run(
    run_dir: str | os.PathLike,
    reference_cohort: str,
    cohort: str,
    grids: SweepGrids,
    *,
    n_jobs: int | None = None,
    progress: bool | Callable[[int, int], None] = False,
    should_stop: Callable[[], bool] | None = None,
) -> tuple[pd.DataFrame, Path]:
    """Sweep ``cohort``'s maximal prototype over ``grids`` on the run's score norms (standardised by the reference
    cohort) and write the table atomically into the run; members are subject ids, and the table records the
    topology. Raises ValueError for a cohort the run lacks; :class:`~analysis.exploration.sweep.SweepCancelled`
    when ``should_stop`` stops it (nothing is written then)."""
    run_dir = Path(run_dir)
    norms = pd.read_parquet(run_dir / layout.SCORE_NORMS.name)
    columns = [c for c in norms.columns if c.startswith("norm_")]
    cohorts = sorted(set(norms["cohort"]))
    if cohort not in cohorts:
        raise ValueError(f"expected one of {cohorts} (cohorts of run {run_dir.name}), got {cohort!r}")
    table = grid_stability_sweep(
        norms[columns].to_numpy(), norms["cohort"].to_numpy(), cohort,
        reference=(norms["cohort"] == reference_cohort).to_numpy(), grids=grids, n_jobs=n_jobs, progress=progress,
        should_stop=should_stop,
    )
    ids = norms["subject_id"].astype(str).to_numpy()
    table["members"] = [[str(ids[i]) for i in m] for m in table["members"]]
    table["topology"] = grids.topology
    out = run_dir / layout.sweep_file(cohort)
    write_table(out, table)
    return table, out
