"""Tests of the shallow baselines (pyod's Isolation Forest and ECOD): their input encoding, fitting on the train
inliers only, determinism, and where they can and cannot see anomalies."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.tabular.baselines import BASELINES, _onehot, ecod, iforest
from analysis.tabular.datasets import TabularSet, mixed_set, rare_combinations, rare_levels_set
from analysis.tabular.protocol import average_precision, split


def tiny_set() -> TabularSet:
    table = pd.DataFrame({"a": ["y", "x", "z", "x"], "t": [1.0, 3.0, 5.0, 100.0], "b": ["q", "p", "p", "q"]})
    return TabularSet("tiny", table, {"a": ["x", "y", "z"], "t": None, "b": ["p", "q"]},
                      np.array([False, False, False, True]), "four rows")


def test_onehot_has_a_column_per_declared_level_and_standardises_on_the_fit_rows():
    X = _onehot(tiny_set(), fit_rows=np.array([0, 1, 2]))
    t = (np.array([1.0, 3.0, 5.0, 100.0]) - 3.0) / np.std([1.0, 3.0, 5.0])
    expected = np.column_stack([
        [0, 1, 0, 1], [1, 0, 0, 0], [0, 0, 1, 0],  # a: x, y, z
        t,
        [0, 1, 1, 0], [1, 0, 0, 1],  # b: p, q
    ])
    np.testing.assert_allclose(X, expected)


def test_onehot_keeps_a_constant_continuous_column_finite():
    data = tiny_set()
    constant = TabularSet("c", data.table.assign(t=2.0), data.columns, data.is_anomaly, "constant t")
    np.testing.assert_allclose(_onehot(constant, np.array([0, 1, 2]))[:, 3], 0.0)


@pytest.fixture(scope="module")
def small_mixed():
    data = mixed_set(n_inliers=800, n_anomalies=40, n_categorical=6, n_continuous=2, seed=1)
    return data, split(data.is_anomaly, seed=0)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_a_baseline_scores_every_test_row(name, small_mixed):
    data, rows = small_mixed
    scores = BASELINES[name](data, rows, 0)
    assert scores.shape == (len(rows.test),) and np.isfinite(scores).all()


def test_iforest_is_a_function_of_its_random_state_and_ecod_has_none(small_mixed):
    data, rows = small_mixed
    np.testing.assert_array_equal(iforest(data, rows, 3), iforest(data, rows, 3))
    assert not np.array_equal(iforest(data, rows, 3), iforest(data, rows, 4))
    np.testing.assert_array_equal(ecod(data, rows, 0), ecod(data, rows, 1))


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_a_baseline_never_sees_the_validation_rows(name, small_mixed):
    data, rows = small_mixed
    scrambled = data.table.copy()
    scrambled.loc[rows.val, data.continuous] = 1e6
    scrambled.loc[rows.val, data.categorical[0]] = data.columns[data.categorical[0]][0]
    other = TabularSet(data.name, scrambled, data.columns, data.is_anomaly, data.description)
    np.testing.assert_allclose(BASELINES[name](other, rows, 0), BASELINES[name](data, rows, 0))


def test_both_baselines_beat_chance_on_rare_levels():
    data = rare_levels_set(seed=0)
    rows = split(data.is_anomaly, seed=0)
    labels = data.is_anomaly[rows.test]
    assert average_precision(ecod(data, rows, 0), labels) > 0.95
    assert average_precision(iforest(data, rows, 0), labels) > labels.mean() + 0.1


def test_ecod_is_near_chance_on_rare_combinations_where_iforest_is_not():
    data = rare_combinations("easy", seed=0)
    rows = split(data.is_anomaly, seed=0)
    labels = data.is_anomaly[rows.test]
    assert abs(average_precision(ecod(data, rows, 0), labels) - labels.mean()) < 0.08
    assert average_precision(iforest(data, rows, 0), labels) > 0.9
