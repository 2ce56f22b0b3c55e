"""Tests of the tabular benchmark's protocol: the 80/10/10 inlier split with every anomaly in the test set, average
precision against hand-computed values, and the mean and SD over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.tabular.protocol import Split, average_precision, split, summarise


def labels(n_inliers: int, n_anomalies: int, seed: int = 0) -> np.ndarray:
    is_anomaly = np.zeros(n_inliers + n_anomalies, dtype=bool)
    is_anomaly[np.random.default_rng(seed).choice(len(is_anomaly), n_anomalies, replace=False)] = True
    return is_anomaly


def test_split_sizes_follow_80_10_10_with_every_anomaly_in_test():
    is_anomaly = labels(4000, 200)
    rows = split(is_anomaly, seed=0)
    assert isinstance(rows, Split)
    assert (len(rows.train), len(rows.val), len(rows.test)) == (3200, 400, 600)
    assert not is_anomaly[rows.train].any() and not is_anomaly[rows.val].any()
    assert is_anomaly[rows.test].sum() == 200


@pytest.mark.parametrize(("n_inliers", "sizes"), [(15, (12, 2, 1)), (25, (20, 3, 2)), (101, (81, 10, 10))])
def test_split_rounds_half_up_and_gives_the_test_set_the_rest(n_inliers, sizes):
    rows = split(labels(n_inliers, 3), seed=1)
    assert (len(rows.train), len(rows.val), len(rows.test) - 3) == sizes


def test_split_parts_are_disjoint_sorted_and_cover_every_row():
    is_anomaly = labels(997, 31, seed=2)
    rows = split(is_anomaly, seed=5)
    parts = [rows.train, rows.val, rows.test]
    every = np.concatenate(parts)
    assert len(np.unique(every)) == len(every) == len(is_anomaly)
    for part in parts:
        assert part.dtype == np.int64 and (np.diff(part) > 0).all()


def test_split_is_a_function_of_its_seed():
    is_anomaly = labels(500, 20)
    first, again, other = split(is_anomaly, 7), split(is_anomaly, 7), split(is_anomaly, 8)
    for a, b in zip((first.train, first.val, first.test), (again.train, again.val, again.test), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first.train, other.train)
    np.testing.assert_array_equal(np.flatnonzero(is_anomaly), np.intersect1d(other.test, np.flatnonzero(is_anomaly)))


def test_split_refuses_what_it_cannot_split():
    with pytest.raises(ValueError, match="boolean"):
        split(np.array([0, 1, 0]), seed=0)
    with pytest.raises(ValueError, match="enough inliers"):
        split(labels(4, 2), seed=0)


def test_average_precision_matches_hand_computed_values():
    # Ranked 0.9 (a), 0.8, 0.7 (a), 0.6, 0.5: precision 1/1 at the first anomaly, 2/3 at the second.
    assert average_precision([0.9, 0.8, 0.7, 0.6, 0.5], np.array([1, 0, 1, 0, 0], dtype=bool)) == pytest.approx(
        (1 + 2 / 3) / 2
    )
    # A tie at the top: the threshold 1 recalls half the anomalies at precision 1/2, the threshold 0 the rest at 2/3.
    assert average_precision([1, 1, 0], np.array([True, False, True])) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    # Perfect ranking, and its reverse: 1, and the mean of 1/3 and 2/4.
    y = np.array([True, True, False, False])
    assert average_precision([4, 3, 2, 1], y) == 1.0
    assert average_precision([1, 2, 3, 4], y) == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_average_precision_of_a_random_score_is_the_anomaly_ratio():
    is_anomaly = labels(4000, 2000, seed=3)
    scores = np.random.default_rng(4).random(len(is_anomaly))
    assert average_precision(scores, is_anomaly) == pytest.approx(1 / 3, abs=0.02)


def test_average_precision_refuses_what_it_cannot_score():
    with pytest.raises(ValueError, match="same shape"):
        average_precision([1.0, 2.0], np.array([True]))
    with pytest.raises(ValueError, match="both"):
        average_precision([1.0, 2.0], np.array([True, True]))
    with pytest.raises(ValueError, match="finite"):
        average_precision([np.nan, 2.0], np.array([True, False]))
    with pytest.raises(ValueError, match="boolean"):
        average_precision([1.0, 2.0], np.array([1, 0]))


def test_summarise_gives_mean_and_sample_sd_per_dataset_and_method_in_order():
    records = [
        {"dataset": "b", "method": "ECOD", "seed": s, "ap": ap} for s, ap in enumerate([0.1, 0.2, 0.3])
    ] + [
        {"dataset": "a", "method": "IForest", "seed": 0, "ap": 0.5},
        {"dataset": "b", "method": "IForest", "seed": 0, "ap": 0.7},
        {"dataset": "b", "method": "IForest", "seed": 1, "ap": 0.9},
    ]
    summary = summarise(records)
    assert list(summary.index) == [("b", "ECOD"), ("a", "IForest"), ("b", "IForest")]
    assert list(summary.columns) == ["mean", "sd", "n_seeds"]
    assert summary.loc[("b", "ECOD")].tolist() == pytest.approx([0.2, 0.1, 3])
    assert summary.loc[("a", "IForest")].tolist() == pytest.approx([0.5, 0.0, 1])
    assert summary.loc[("b", "IForest"), "sd"] == pytest.approx(np.std([0.7, 0.9], ddof=1))
    pd.testing.assert_frame_equal(summarise(pd.DataFrame(records)), summary)


def test_summarise_refuses_incomplete_or_repeated_records():
    with pytest.raises(ValueError, match="lack"):
        summarise([{"dataset": "a", "method": "m", "ap": 0.1}])
    with pytest.raises(ValueError, match="once"):
        summarise([{"dataset": "a", "method": "m", "seed": 0, "ap": 0.1}] * 2)
