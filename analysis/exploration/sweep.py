"""Grid-stability sweep of the SOM (dissertation ch. 6.3, fig. 6.3): is a cohort's maximal prototype real or an
artefact of the grid size?

For every grid ``rows x cols`` the map is fitted as :class:`analysis.exploration.som.SelfOrganizingMap` does
(deterministic: PCA initialisation, batch training), and the cohort's maximal prototype is recorded: its unit, size and
members, with the map's quantisation and topographic errors. The Jaccard overlap of the members with those of the
neighbouring grid sizes (one row or one column more or fewer) shows the stable bands: where neighbouring settings
find the same subjects, the subgroup does not hinge on the grid.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from analysis.exploration.som import SelfOrganizingMap


def parse_range(text: str, name: str) -> list[int]:
    """``"3:15"`` -> [3, ..., 15] (inclusive), ``"7"`` -> [7]; each value >= 2."""
    try:
        parts = [int(p) for p in text.split(":")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts = parts * 2
    if len(parts) != 2 or parts[0] < 2 or parts[1] < parts[0]:
        raise ValueError(f"{name}: expected FIRST:LAST with 2 <= FIRST <= LAST (e.g. 3:15), got {text!r}")
    return list(range(parts[0], parts[1] + 1))


def _fit_one(args) -> dict:
    X, labels, cohort, reference, rows, cols, topology, n_iterations = args
    with threadpool_limits(1):
        som = SelfOrganizingMap(rows, cols, topology=topology, n_iterations=n_iterations).fit(X, reference)
        prototype = som.maximal_prototype(labels, cohort)
    return {
        "rows": rows,
        "cols": cols,
        "unit_row": prototype.unit[0],
        "unit_col": prototype.unit[1],
        "size": prototype.size,
        "cohort_size": prototype.cohort_size,
        "members": [int(m) for m in prototype.members],
        "quantization_error": som.quantization_error_,
        "topographic_error": som.topographic_error_,
    }


def jaccard(a: Sequence, b: Sequence) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 1.0


@dataclass(frozen=True)
class SweepGrids:
    """The grids of a sweep: every ``rows x cols`` combination, each map fitted with ``topology`` and
    ``n_iterations`` batch iterations (None: :class:`SelfOrganizingMap`'s default)."""

    rows: Sequence[int] = range(3, 16)
    cols: Sequence[int] = range(3, 16)
    topology: str = "rectangular"
    n_iterations: int | None = None


def grid_stability_sweep(
    X: np.ndarray,
    labels: Sequence[str],
    cohort: str,
    *,
    reference: np.ndarray | None = None,
    grids: SweepGrids = SweepGrids(),
    n_jobs: int | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Fit a map for every grid of ``grids`` and describe the maximal prototype of ``cohort``.

    Parameters
    ----------
    X : ndarray (n_subjects, L)
        Score norms (positive); standardised by the ``reference`` rows as in :class:`SelfOrganizingMap`.
    labels : sequence of str, length n_subjects
        Cohort of each row.
    reference : ndarray of bool (n_subjects,), optional
        Rows whose statistics standardise the norms.
    grids : SweepGrids
    n_jobs : int, optional
        Worker processes (default: all cores).

    Returns
    -------
    DataFrame, one row per grid: rows, cols, unit_row, unit_col, size, cohort_size, members (row indices into
    ``X``), quantization_error, topographic_error, jaccard_next_row, jaccard_next_col (overlap with the grid
    with one more row / column; NaN at the edge of the sweep) and jaccard_neighbours (mean over the up to four
    neighbouring grids).
    """
    labels = np.asarray(labels)
    if cohort not in set(labels.tolist()):
        raise ValueError(f"cohort {cohort!r} has no subjects; cohorts present: {sorted(set(labels.tolist()))}")
    jobs = [(X, labels, cohort, reference, r, c, grids.topology, grids.n_iterations)
            for r in grids.rows for c in grids.cols]
    workers = max(1, min(n_jobs or os.cpu_count() or 1, len(jobs)))
    if workers == 1:
        results = [_fit_one(job) for job in tqdm(jobs, desc="SOM grid sweep", unit="grid", disable=not progress)]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            iterator = pool.map(_fit_one, jobs, chunksize=max(1, len(jobs) // (4 * workers)))
            results = list(tqdm(iterator, total=len(jobs), desc="SOM grid sweep", unit="grid", disable=not progress))
    table = pd.DataFrame(results)
    members = {(r.rows, r.cols): r.members for r in table.itertuples()}

    def overlap(r: int, c: int, dr: int, dc: int) -> float:
        other = members.get((r + dr, c + dc))
        return np.nan if other is None else jaccard(members[(r, c)], other)

    table["jaccard_next_row"] = [overlap(r, c, 1, 0) for r, c in zip(table.rows, table.cols, strict=True)]
    table["jaccard_next_col"] = [overlap(r, c, 0, 1) for r, c in zip(table.rows, table.cols, strict=True)]
    table["jaccard_neighbours"] = [
        np.nanmean([overlap(r, c, dr, dc) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))])
        if len(members) > 1
        else np.nan
        for r, c in zip(table.rows, table.cols, strict=True)
    ]
    return table
