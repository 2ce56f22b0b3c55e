"""Grid-stability sweep: each grid's prototype equals a direct fit, overlaps are Jaccard indices, workers agree."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.exploration.som import SelfOrganizingMap
from analysis.exploration.sweep import SweepGrids, grid_stability_sweep, jaccard, parse_range


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
