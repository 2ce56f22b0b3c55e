"""Grid-stability sweep of the SOM (dissertation ch. 6.3, fig. 6.3): is a cohort's maximal prototype real or an
artefact of the grid size?

For every grid ``rows x cols`` the map is fitted as :class:`analysis.exploration.som.SelfOrganizingMap` does
(deterministic: PCA initialisation, batch training), and the cohort's maximal prototype is recorded: its unit, size and
members, with the map's quantisation and topographic errors. The Jaccard overlap of the members with those of the
neighbouring grid sizes (one row or one column more or fewer) shows the stable bands: where neighbouring settings
find the same subjects, the subgroup does not hinge on the grid.

The explorer runs a sweep as a background job: it follows it through a ``progress`` callback, can stop it through
``should_stop`` (the sweep then raises :class:`SweepCancelled`), and redraws the map of any grid of the table with
:func:`fit_grid`, which gives the same members as the sweep.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits
from tqdm.auto import tqdm

from analysis.exploration.som import Prototype, SelfOrganizingMap, StandardisedNorms, standardise_norms

# How often (seconds) a sweep running in worker processes asks ``should_stop`` while no grid finishes.
_POLL_SECONDS = 0.05


class SweepCancelled(Exception):
    """The caller's ``should_stop`` asked a grid-stability sweep to stop before every grid was fitted.

    Attributes
    ----------
    done, total : int
        Grids fitted before the stop, and grids in the sweep.
    """

    def __init__(self, done: int, total: int):
        super().__init__(f"grid-stability sweep cancelled after {done} of {total} grids")
        self.done = done
        self.total = total


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


class GridFit(NamedTuple):
    """One grid's map and the maximal prototype of the swept cohort on it."""

    som: SelfOrganizingMap
    prototype: Prototype


@dataclass(frozen=True)
class _SweepInput:
    """What every grid of a sweep shares: the standardised norms and the cohort whose prototype is wanted."""

    norms: StandardisedNorms
    labels: np.ndarray
    cohort: str


def _sweep_input(X, labels, cohort: str, reference) -> _SweepInput:
    labels = np.asarray(labels)
    if cohort not in set(labels.tolist()):
        raise ValueError(f"cohort {cohort!r} has no subjects; cohorts present: {sorted(set(labels.tolist()))}")
    return _SweepInput(norms=standardise_norms(X, reference), labels=labels, cohort=cohort)


def _fit(shared: _SweepInput, rows: int, cols: int, topology: str, n_iterations: int | None) -> GridFit:
    som = SelfOrganizingMap(rows, cols, topology=topology, n_iterations=n_iterations)._fit_standardised(shared.norms)
    return GridFit(som, som.maximal_prototype(shared.labels, shared.cohort))


def fit_grid(
    X: np.ndarray,
    labels: Sequence[str],
    cohort: str,
    reference: np.ndarray | None,
    rows: int,
    cols: int,
    topology: str = "rectangular",
    *,
    n_iterations: int | None = None,
) -> GridFit:
    """The map of one grid of a sweep and the cohort's maximal prototype on it, e.g. to redraw the grid a user
    clicks in the sweep's heatmap; the members are those the sweep's table holds for that grid.

    Parameters
    ----------
    X, labels, cohort, reference
        As given to :func:`grid_stability_sweep`.
    rows, cols : int
        The grid.
    topology : {"rectangular", "hexagonal"}, default "rectangular"
    n_iterations : int, optional
        Batch iterations, as in the sweep's :class:`SweepGrids` (default: :class:`SelfOrganizingMap`'s).

    Returns
    -------
    GridFit
        ``(som, prototype)``: the fitted :class:`SelfOrganizingMap` and the cohort's :class:`Prototype`.
    """
    shared = _sweep_input(X, labels, cohort, reference)
    with threadpool_limits(1):  # as in the sweep's workers, so the products run through the same kernels
        return _fit(shared, rows, cols, topology, n_iterations)


def _table_row(shared: _SweepInput, rows: int, cols: int, topology: str, n_iterations: int | None) -> dict:
    som, prototype = _fit(shared, rows, cols, topology, n_iterations)
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


# A worker process's copy of the sweep's shared input, sent once when the worker starts rather than with every grid.
_worker_input: _SweepInput | None = None


def _start_worker(shared: _SweepInput) -> None:
    global _worker_input
    _worker_input = shared
    # The matrices of one grid are too small for threaded BLAS to pay off; the workers are the parallelism.
    threadpool_limits(1)


def _worker_table_row(rows: int, cols: int, topology: str, n_iterations: int | None) -> dict:
    return _table_row(_worker_input, rows, cols, topology, n_iterations)


def _worker_count(n_jobs: int | None, n_grids: int) -> int:
    """Worker processes: ``n_jobs``, else the cores this process may run on; never more than there are grids."""
    if n_jobs is None:
        n_jobs = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(n_jobs, n_grids))


def _stop_if_asked(should_stop: Callable[[], bool], done: int, total: int) -> None:
    if done < total and should_stop():
        raise SweepCancelled(done, total)


def _sweep_serially(shared, grids, jobs, report, should_stop) -> list[dict]:
    results = []
    with threadpool_limits(1):
        for rows, cols in jobs:
            _stop_if_asked(should_stop, len(results), len(jobs))
            results.append(_table_row(shared, rows, cols, grids.topology, grids.n_iterations))
            report()
    return results


def _sweep_in_workers(shared, grids, jobs, workers, report, should_stop) -> list[dict]:
    _stop_if_asked(should_stop, 0, len(jobs))
    results: list[dict | None] = [None] * len(jobs)
    pool = ProcessPoolExecutor(max_workers=workers, initializer=_start_worker, initargs=(shared,))
    try:
        # Largest grids first, so the last grids to finish are small ones and no worker idles at the end.
        order = sorted(range(len(jobs)), key=lambda i: -jobs[i][0] * jobs[i][1])
        pending = {pool.submit(_worker_table_row, *jobs[i], grids.topology, grids.n_iterations): i for i in order}
        while pending:
            finished, _ = wait(pending, timeout=_POLL_SECONDS, return_when=FIRST_COMPLETED)
            # Asked after every grid and, while none finishes, every _POLL_SECONDS; never once all are done.
            for future in finished:
                results[pending.pop(future)] = future.result()
                report()
                _stop_if_asked(should_stop, len(jobs) - len(pending), len(jobs))
            if not finished:
                _stop_if_asked(should_stop, len(jobs) - len(pending), len(jobs))
    finally:
        # On a stop or an error the grids not yet started are dropped; the call returns once the workers are gone.
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def grid_stability_sweep(
    X: np.ndarray,
    labels: Sequence[str],
    cohort: str,
    *,
    reference: np.ndarray | None = None,
    grids: SweepGrids = SweepGrids(),
    n_jobs: int | None = None,
    progress: bool | Callable[[int, int], None] = True,
    should_stop: Callable[[], bool] | None = None,
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
        Worker processes (default: one per core this process may use); 1 fits every grid in this process.
    progress : bool or callable ``(done, total) -> None``, default True
        True shows a progress bar on the terminal; a callable is called instead, in this process, after each grid
        is fitted, with the number of grids done so far and in all (grids finish in no fixed order when workers
        fit them), e.g. to move the explorer's progress bar.
    should_stop : callable ``() -> bool``, optional
        Asked before each grid in this process and, while workers fit grids, every few hundredths of a second;
        once it returns True the grids not yet started are dropped and the sweep raises :class:`SweepCancelled`
        when the grids under way have finished (no worker process outlives the call).

    Returns
    -------
    DataFrame, one row per grid (rows outer, cols inner): rows, cols, unit_row, unit_col, size, cohort_size,
    members (row indices into ``X``), quantization_error, topographic_error, jaccard_next_row, jaccard_next_col
    (overlap with the grid with one more row / column; NaN at the edge of the sweep) and jaccard_neighbours (mean
    over the up to four neighbouring grids; NaN for a grid without any).

    Raises
    ------
    SweepCancelled
        When ``should_stop`` returned True before every grid was fitted.
    """
    shared = _sweep_input(X, labels, cohort, reference)
    jobs = [(r, c) for r in grids.rows for c in grids.cols]
    on_progress = progress if callable(progress) else None
    bar = tqdm(total=len(jobs), desc="SOM grid sweep", unit="grid", disable=on_progress is not None or not progress)
    done = 0

    def report() -> None:
        nonlocal done
        done += 1
        bar.update()
        if on_progress is not None:
            on_progress(done, len(jobs))

    stop = should_stop or (lambda: False)
    workers = _worker_count(n_jobs, len(jobs))
    with bar:
        if workers == 1:
            results = _sweep_serially(shared, grids, jobs, report, stop)
        else:
            results = _sweep_in_workers(shared, grids, jobs, workers, report, stop)
    return _with_overlaps(pd.DataFrame(results))


def _with_overlaps(table: pd.DataFrame) -> pd.DataFrame:
    """Add the Jaccard overlaps of each grid's members with those of the neighbouring grids."""
    members = {(r.rows, r.cols): r.members for r in table.itertuples()}

    def overlap(r: int, c: int, dr: int, dc: int) -> float:
        other = members.get((r + dr, c + dc))
        return np.nan if other is None else jaccard(members[(r, c)], other)

    def mean_over_neighbours(r: int, c: int) -> float:
        overlaps = [overlap(r, c, dr, dc) for dr, dc in ((1, 0), (-1, 0), (0, 1), (0, -1))]
        overlaps = [o for o in overlaps if not np.isnan(o)]
        return float(np.mean(overlaps)) if overlaps else np.nan

    grid = list(zip(table.rows, table.cols, strict=True))
    table["jaccard_next_row"] = [overlap(r, c, 1, 0) for r, c in grid]
    table["jaccard_next_col"] = [overlap(r, c, 0, 1) for r, c in grid]
    table["jaccard_neighbours"] = [mean_over_neighbours(r, c) for r, c in grid]
    return table
