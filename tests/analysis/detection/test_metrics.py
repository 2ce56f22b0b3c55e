"""Tests of the out-of-distribution detection metrics against sklearn, scipy and hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from analysis.detection.metrics import (
    aupr_in,
    aupr_out,
    auroc,
    auroc_standard_error,
    detection_error,
    detection_metrics,
    fpr_at_tpr,
)


def random_case(seed: int):
    """Scores with many ties (small integers) and unequal class sizes; outliers tend to score higher."""
    rng = np.random.default_rng(seed)
    n_in, n_out = rng.integers(1, 60, size=2)
    inliers = rng.integers(0, 8, size=n_in).astype(float)
    outliers = rng.integers(0, 8, size=n_out).astype(float) + rng.integers(0, 3)
    return inliers, outliers


def sklearn_reference(inliers, outliers, target=0.95):
    """The metrics computed independently with sklearn, inliers positive and decision value -score."""
    labels = np.r_[np.ones(inliers.size), np.zeros(outliers.size)]
    scores = np.r_[inliers, outliers]
    fpr, tpr, _ = roc_curve(labels, -scores, drop_intermediate=False)
    return {
        "fpr_at_tpr": fpr[np.flatnonzero(tpr >= target)[0]],
        "detection_error": np.min(0.5 * (1 - tpr) + 0.5 * fpr),
        "auroc": roc_auc_score(labels, -scores),
        "aupr_in": average_precision_score(labels, -scores),
        "aupr_out": average_precision_score(1 - labels, scores),
    }


@pytest.mark.parametrize("seed", range(40))
def test_metrics_agree_with_sklearn_on_random_cases_with_ties(seed):
    inliers, outliers = random_case(seed)
    ref = sklearn_reference(inliers, outliers)
    assert fpr_at_tpr(inliers, outliers) == pytest.approx(ref["fpr_at_tpr"], abs=1e-12)
    assert detection_error(inliers, outliers) == pytest.approx(ref["detection_error"], abs=1e-12)
    assert auroc(inliers, outliers) == pytest.approx(ref["auroc"], abs=1e-12)
    assert aupr_in(inliers, outliers) == pytest.approx(ref["aupr_in"], abs=1e-12)
    assert aupr_out(inliers, outliers) == pytest.approx(ref["aupr_out"], abs=1e-12)


@pytest.mark.parametrize("target", [0.1, 0.5, 0.8, 0.95, 1.0])
def test_fpr_at_other_tpr_targets_agrees_with_sklearn(target):
    rng = np.random.default_rng(7)
    inliers, outliers = rng.normal(0, 1, 37), rng.normal(1, 1, 23)
    ref = sklearn_reference(inliers, outliers, target)
    assert fpr_at_tpr(inliers, outliers, tpr=target) == pytest.approx(ref["fpr_at_tpr"], abs=1e-12)


@pytest.mark.parametrize("seed", range(10))
def test_auroc_is_the_mann_whitney_u_statistic_over_n1_n2(seed):
    inliers, outliers = random_case(seed)
    u = mannwhitneyu(outliers, inliers, alternative="two-sided").statistic
    assert auroc(inliers, outliers) == pytest.approx(u / (inliers.size * outliers.size), abs=1e-12)


def test_perfect_separation():
    m = detection_metrics([0.1, 0.2, 0.3], [1.0, 2.0])
    assert m == {
        "fpr_at_95_tpr": 0.0,
        "detection_error": 0.0,
        "auroc": 1.0,
        "auroc_se": 0.0,
        "aupr_in": 1.0,
        "aupr_out": 1.0,
        "n_inliers": 3,
        "n_outliers": 2,
    }
    assert all(type(m[k]) is float for k in ("fpr_at_95_tpr", "detection_error", "auroc", "aupr_in", "aupr_out"))
    assert type(m["n_inliers"]) is int and type(m["n_outliers"]) is int


def test_reversed_scores():
    inliers, outliers = [1.0, 2.0], [-1.0, -2.0, -3.0]
    assert auroc(inliers, outliers) == 0.0
    assert fpr_at_tpr(inliers, outliers) == 1.0
    # Best is to accept nothing: error 0.5 (accepting everything is 0.5 too).
    assert detection_error(inliers, outliers) == 0.5


def test_four_against_four_by_hand():
    inliers, outliers = [1.0, 2.0, 3.0, 4.0], [2.5, 3.5, 5.0, 6.0]
    # TPR >= 0.95 needs all four inliers accepted (score <= 4), which accepts outliers 2.5 and 3.5.
    assert fpr_at_tpr(inliers, outliers) == 0.5
    # TPR 0.5 is reached at score <= 2, which accepts no outlier.
    assert fpr_at_tpr(inliers, outliers, tpr=0.5) == 0.0
    # Outlier > inlier pairs: 2.5 beats 2, 3.5 beats 3, 5 and 6 beat 4 each: 2 + 3 + 4 + 4 = 13 of 16.
    assert auroc(inliers, outliers) == pytest.approx(13 / 16)
    # Thresholds 2, 3 and 4 all give 0.25 (e.g. TPR 0.5, FPR 0 at 2).
    assert detection_error(inliers, outliers) == pytest.approx(0.25)
    # Outliers positive, ranked 6 5 | 4(in) | 3.5 | 3(in) | 2.5: precisions 1, 1, 3/4, 4/6 at each recall step.
    assert aupr_out(inliers, outliers) == pytest.approx((1 + 1 + 3 / 4 + 4 / 6) / 4)
    # Inliers positive, ranked 1 2 | 2.5(out) | 3 | 3.5(out) | 4: precisions 1, 1, 3/4, 4/6.
    assert aupr_in(inliers, outliers) == pytest.approx((1 + 1 + 3 / 4 + 4 / 6) / 4)


def test_all_tied_scores_are_uninformative():
    m = detection_metrics([1.0, 1.0, 1.0], [1.0, 1.0])
    assert m["auroc"] == 0.5
    assert m["fpr_at_95_tpr"] == 1.0
    assert m["detection_error"] == 0.5
    assert m["aupr_in"] == pytest.approx(3 / 5)
    assert m["aupr_out"] == pytest.approx(2 / 5)


def test_single_sample_each():
    assert auroc([0.0], [1.0]) == 1.0
    assert detection_metrics([0.0], [1.0])["n_inliers"] == 1


def test_accepts_lists_ints_and_float32():
    a = detection_metrics([1, 2, 3], np.array([2.5, 4.0], dtype=np.float32))
    b = detection_metrics(np.array([1.0, 2.0, 3.0]), np.array([2.5, 4.0]))
    assert a == b


@pytest.mark.parametrize("function", [fpr_at_tpr, detection_error, auroc, aupr_in, aupr_out, detection_metrics])
@pytest.mark.parametrize(
    ("inliers", "outliers", "needle"),
    [
        ([], [1.0], "inlier_scores.*empty"),
        ([1.0], [], "outlier_scores.*empty"),
        ([[1.0, 2.0]], [1.0], r"inlier_scores must be a 1-D.*shape \(1, 2\)"),
        ([1.0], 3.0, r"outlier_scores must be a 1-D.*shape \(\)"),
        ([1.0, np.nan], [1.0], "inlier_scores must hold finite.*position 1"),
        ([1.0], [np.inf], "outlier_scores must hold finite"),
        (["a"], [1.0], "inlier_scores must be a 1-D array of numbers"),
    ],
)
def test_invalid_input_names_the_argument(function, inliers, outliers, needle):
    with pytest.raises(ValueError, match=needle):
        function(inliers, outliers)


@pytest.mark.parametrize("target", [0.0, -0.1, 1.5, float("nan")])
def test_fpr_at_tpr_rejects_a_target_outside_the_unit_interval(target):
    with pytest.raises(ValueError, match="tpr must be in"):
        fpr_at_tpr([1.0], [2.0], tpr=target)


@pytest.mark.parametrize(("area", "n", "expected"), [(0.8, 50, 0.045), (0.9, 50, 0.032)])
def test_auroc_standard_error_matches_hanley_and_mcneils_table(area, n, expected):
    assert auroc_standard_error(area, n, n) == pytest.approx(expected, abs=0.0015)


def test_auroc_standard_error_is_close_to_the_spread_of_simulated_aurocs():
    rng = np.random.default_rng(0)
    areas = [auroc(rng.normal(0, 1, 50), rng.normal(1.19, 1, 20)) for _ in range(3000)]
    mean_area = float(np.mean(areas))
    assert auroc_standard_error(mean_area, 50, 20) == pytest.approx(np.std(areas), rel=0.1)
