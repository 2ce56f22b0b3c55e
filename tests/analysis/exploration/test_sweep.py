"""Grid-stability sweep: each grid's prototype equals a direct fit, overlaps are Jaccard indices, workers agree, a
fixed input keeps the members recorded before the sweep was sped up, and a caller can follow and stop a sweep."""

from __future__ import annotations

import multiprocessing

import numpy as np
import pytest

from analysis.exploration.som import SelfOrganizingMap
from analysis.exploration.sweep import (
    SweepCancelled,
    SweepGrids,
    fit_grid,
    grid_stability_sweep,
    jaccard,
    parse_range,
)


def _cohorts(seed: int = 0):
    rng = np.random.default_rng(seed)
    typical = rng.normal(size=(120, 6))
    subgroup = rng.normal(size=(12, 6)) * 0.3 + np.array([4.0, -3.0, 0, 0, 2.0, 0])
    rest = rng.normal(size=(10, 6))
    X = np.exp(np.vstack([typical, subgroup, rest]) * 0.5)
    labels = np.array(["typical"] * 120 + ["ds"] * 22)
    return X, labels, labels == "typical"


def test_each_grid_matches_a_direct_fit_and_overlaps_are_jaccard():
    X, labels, reference = _cohorts()
    table = grid_stability_sweep(X, labels, "ds", reference=reference,
                                 grids=SweepGrids(rows=[3, 4, 5], cols=[3, 4], n_iterations=50), n_jobs=1,
                                 progress=False)
    assert len(table) == 6
    for row in table.itertuples():
        som = SelfOrganizingMap(row.rows, row.cols, n_iterations=50).fit(X, reference)
        prototype = som.maximal_prototype(labels, "ds")
        assert (row.unit_row, row.unit_col) == prototype.unit and row.members == list(prototype.members)
        assert row.quantization_error == pytest.approx(som.quantization_error_)
    members = {(r.rows, r.cols): r.members for r in table.itertuples()}
    first = table[(table.rows == 3) & (table.cols == 3)].iloc[0]
    assert first.jaccard_next_row == pytest.approx(jaccard(members[(3, 3)], members[(4, 3)]))
    assert first.jaccard_next_col == pytest.approx(jaccard(members[(3, 3)], members[(3, 4)]))
    assert first.jaccard_neighbours == pytest.approx(np.mean([first.jaccard_next_row, first.jaccard_next_col]))
    assert np.isnan(table[(table.rows == 5) & (table.cols == 4)].iloc[0].jaccard_next_row)
    planted = set(range(120, 132))
    assert max(len(planted & set(m)) / len(set(m)) for m in table.members) > 0.8


def test_parallel_workers_give_the_same_table():
    X, labels, reference = _cohorts(1)
    kwargs = dict(reference=reference, grids=SweepGrids(rows=[3, 4], cols=[3, 4], n_iterations=30), progress=False)
    one = grid_stability_sweep(X, labels, "ds", n_jobs=1, **kwargs)
    two = grid_stability_sweep(X, labels, "ds", n_jobs=2, **kwargs)
    assert one.drop(columns="members").equals(two.drop(columns="members"))
    assert list(one.members) == list(two.members)


def test_ranges_and_cohorts_are_checked():
    assert parse_range("3:15", "--rows") == list(range(3, 16)) and parse_range("7", "--cols") == [7]
    for bad in ("1:4", "5:3", "a:b", "3:4:5"):
        with pytest.raises(ValueError, match="--rows"):
            parse_range(bad, "--rows")
    X, labels, reference = _cohorts()
    with pytest.raises(ValueError, match="'autism' has no subjects"):
        grid_stability_sweep(X, labels, "autism", grids=SweepGrids(rows=[3], cols=[3]), progress=False)
    assert jaccard([1, 2, 3], [2, 3, 4]) == pytest.approx(0.5)


def _mixed_cohorts(seed: int = 5, n: int = 300, n_scales: int = 10, n_ds: int = 40):
    """A cohort shifted by one standard deviation in three scales: its prototypes are mixed, grid-dependent sets."""
    rng = np.random.default_rng(seed)
    logs = rng.normal(size=(n, n_scales))
    logs[:n_ds, :3] += 1.0
    return np.exp(0.4 * logs), np.array(["ds"] * n_ds + ["typical"] * (n - n_ds))


# Unit, members, quantisation and topographic errors of each grid of _mixed_cohorts() with 60 iterations, recorded
# with the sweep as it was before its speed-up (commit 4093641): the faster code must find the same subjects.
RECORDED = {
    (3, 4, "rectangular"): ((0, 3), [5, 6, 12, 13, 14, 17, 21, 22, 24, 27, 32, 33, 37, 39], 2.668679502866391,
                            0.03666666666666667),
    (3, 9, "rectangular"): ((0, 0), [2, 3, 4, 8, 9, 11, 16, 23, 24, 29, 34, 35, 36], 2.727349855324667,
                            0.006666666666666667),
    (6, 4, "rectangular"): ((0, 3), [5, 6, 12, 13, 14, 17, 21, 22, 27, 32, 37, 38, 39], 2.6309433626478427, 0.01),
    (6, 9, "rectangular"): ((0, 8), [6, 14, 21, 22, 24, 32, 37, 39], 2.577945498362496, 0.006666666666666667),
    (10, 4, "rectangular"): ((0, 3), [5, 6, 12, 13, 14, 17, 18, 21, 22, 27, 32, 37, 39], 2.6771357827688,
                             0.006666666666666667),
    (10, 9, "rectangular"): ((0, 8), [6, 7, 13, 21, 22, 24, 27, 32, 37, 39], 2.4934847847916104,
                             0.0033333333333333335),
    (5, 6, "hexagonal"): ((0, 5), [6, 7, 12, 13, 17, 21, 22, 24, 27, 32, 37, 39], 2.5743978981815108,
                          0.030000000000000027),
    (8, 6, "hexagonal"): ((0, 5), [5, 6, 12, 13, 17, 21, 22, 27, 32, 37, 39], 2.5906361486014293,
                          0.033333333333333326),
}


@pytest.mark.parametrize(
    ("topology", "rows", "cols"), [("rectangular", [3, 6, 10], [4, 9]), ("hexagonal", [5, 8], [6])]
)
def test_a_fixed_input_keeps_the_members_recorded_before_the_speed_up(topology, rows, cols):
    X, labels = _mixed_cohorts()
    table = grid_stability_sweep(X, labels, "ds", reference=labels == "typical", progress=False, n_jobs=2,
                                 grids=SweepGrids(rows=rows, cols=cols, topology=topology, n_iterations=60))
    assert [(r, c) for r, c in zip(table.rows, table.cols, strict=True)] == [(r, c) for r in rows for c in cols]
    for row in table.itertuples():
        unit, members, quantization_error, topographic_error = RECORDED[(row.rows, row.cols, topology)]
        assert (row.unit_row, row.unit_col) == unit and row.members == members
        assert row.quantization_error == pytest.approx(quantization_error, rel=1e-12)
        assert row.topographic_error == pytest.approx(topographic_error, rel=1e-12)


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
def test_fit_grid_gives_the_members_the_sweep_records(topology):
    X, labels = _mixed_cohorts()
    reference = labels == "typical"
    table = grid_stability_sweep(X, labels, "ds", reference=reference, progress=False, n_jobs=1,
                                 grids=SweepGrids(rows=[4, 7], cols=[5, 8], topology=topology, n_iterations=40))
    for row in table.itertuples():
        som, prototype = fit_grid(X, labels, "ds", reference, row.rows, row.cols, topology, n_iterations=40)
        assert som.weights_.shape[:2] == (row.rows, row.cols) and som.topology == topology
        assert prototype.unit == (row.unit_row, row.unit_col) and list(prototype.members) == row.members
        assert som.quantization_error_ == row.quantization_error


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_progress_is_reported_after_every_grid(n_jobs):
    X, labels, reference = _cohorts()
    calls = []
    table = grid_stability_sweep(X, labels, "ds", reference=reference, n_jobs=n_jobs,
                                 grids=SweepGrids(rows=[3, 4, 5], cols=[3, 4], n_iterations=10),
                                 progress=lambda done, total: calls.append((done, total)))
    assert calls == [(done, 6) for done in range(1, 7)] and len(table) == 6


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_a_stop_after_some_grids_raises_and_leaves_no_worker_running(n_jobs):
    X, labels, reference = _cohorts()
    done = []
    before = set(multiprocessing.active_children())  # e.g. joblib's loky workers of earlier tests stay alive
    with pytest.raises(SweepCancelled, match="cancelled after") as stopped:
        grid_stability_sweep(X, labels, "ds", reference=reference, n_jobs=n_jobs,
                             grids=SweepGrids(rows=range(3, 9), cols=range(3, 9), n_iterations=30),
                             progress=lambda d, total: done.append(d), should_stop=lambda: len(done) >= 2)
    assert (stopped.value.done, stopped.value.total) == (2, 36) and done == [1, 2]
    assert set(multiprocessing.active_children()) - before == set()
