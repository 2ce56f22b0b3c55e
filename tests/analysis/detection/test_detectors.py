"""Tests of the MSMA auxiliary models (Gaussian mixture and k-nearest-neighbour detectors) on synthetic norms."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.exceptions import NotFittedError
from sklearn.mixture import GaussianMixture
from threadpoolctl import threadpool_limits

from analysis.detection.detectors import (
    GaussianMixtureDetector,
    KNNDetector,
    fit_log_standardisation,
    log_standardise,
)
from analysis.detection.metrics import auroc


def lognormal(n: int, n_features: int, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    """Score-norm-like rows: exp of correlated Gaussians around log-norm 2, shifted by ``shift`` in log space."""
    rng = np.random.default_rng(seed)
    mixing = np.eye(n_features) + 0.3 * rng.standard_normal((n_features, n_features)) / np.sqrt(n_features)
    return np.exp(2.0 + shift + 0.5 * rng.standard_normal((n, n_features)) @ mixing)


def three_clusters(n: int = 600, n_features: int = 4, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0] * n_features, [3.0] * n_features, [0.0, 3.0] * (n_features // 2)])
    labels = rng.integers(0, 3, size=n)
    return np.exp(centers[labels] + 0.3 * rng.standard_normal((n, n_features)))


@pytest.fixture(autouse=True)
def one_thread():
    """One BLAS/OpenMP thread: on a busy 2-core machine, k-means and EM in threads spin and run 100x slower."""
    with threadpool_limits(limits=1):
        yield


@pytest.fixture(scope="module")
def data():
    train = lognormal(300, 20, seed=0)
    test = lognormal(100, 20, seed=1)
    outliers = lognormal(100, 20, shift=0.8, seed=2)
    return train, test, outliers


# --- standardisation -------------------------------------------------------------------------------------------


def test_log_standardise_gives_zero_mean_unit_std_on_training_rows():
    X = lognormal(50, 3)
    center, scale = fit_log_standardisation(X)
    Z = log_standardise(X, center, scale)
    assert Z.shape == X.shape
    np.testing.assert_allclose(Z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(Z.std(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(center, np.log(X).mean(axis=0))


def test_constant_column_gets_unit_scale():
    X = np.c_[lognormal(10, 2), np.full(10, 3.0)]
    center, scale = fit_log_standardisation(X)
    assert scale[2] == 1.0
    np.testing.assert_allclose(log_standardise(X, center, scale)[:, 2], 0.0, atol=1e-12)


# --- GaussianMixtureDetector -------------------------------------------------------------------------------------


def test_gmm_fit_returns_self_and_sets_attributes(data):
    train, _, _ = data
    detector = GaussianMixtureDetector(max_components=3, n_init=1)
    assert detector.fit(train) is detector
    assert detector.center_.shape == detector.scale_.shape == (20,)
    assert detector.n_features_in_ == 20
    assert isinstance(detector.mixture_, GaussianMixture)
    assert detector.mixture_.n_components == detector.n_components_
    assert detector.n_components_ in detector.cv_log_likelihood_
    # Folds train on 240 rows: k = 1..3 need at most 3 * 21 = 63 rows, so all are tried.
    assert sorted(detector.cv_log_likelihood_) == [1, 2, 3]
    assert detector.n_components_ == max(detector.cv_log_likelihood_, key=detector.cv_log_likelihood_.get)


def test_gmm_separates_shifted_outliers(data):
    train, test, outliers = data
    detector = GaussianMixtureDetector(max_components=3, n_init=1).fit(train)
    scores = detector.score_samples(test)
    assert scores.shape == (100,)
    assert auroc(scores, detector.score_samples(outliers)) > 0.95


def test_gmm_selects_one_component_for_a_single_gaussian():
    detector = GaussianMixtureDetector(max_components=4, n_init=1).fit(lognormal(600, 4, seed=3))
    assert detector.n_components_ == 1


def test_gmm_selects_several_components_for_three_clusters():
    detector = GaussianMixtureDetector(max_components=5, n_init=2).fit(three_clusters())
    assert detector.n_components_ >= 2
    assert detector.cv_log_likelihood_[detector.n_components_] > detector.cv_log_likelihood_[1] + 1.0


def test_gmm_skips_sizes_the_folds_cannot_support():
    # 40 rows, 5 folds: 32 training rows per fold; with L = 10 a component needs 11, so only k = 1, 2 are tried.
    detector = GaussianMixtureDetector(max_components=5, n_init=1).fit(lognormal(40, 10))
    assert sorted(detector.cv_log_likelihood_) == [1, 2]
    # Too few rows even for one component per the rule: k = 1 is still tried.
    detector = GaussianMixtureDetector(max_components=5, n_init=1).fit(lognormal(10, 10))
    assert sorted(detector.cv_log_likelihood_) == [1]


def test_gmm_score_is_negative_sklearn_log_likelihood_on_standardised_data():
    train, test = three_clusters(seed=4), three_clusters(n=50, seed=5)
    detector = GaussianMixtureDetector(max_components=4, n_init=2, random_state=3).fit(train)
    center, scale = fit_log_standardisation(train)
    reference = GaussianMixture(
        n_components=detector.n_components_, covariance_type="full", n_init=2, reg_covar=1e-4, random_state=3
    ).fit(log_standardise(train, center, scale))
    np.testing.assert_allclose(
        detector.score_samples(test), -reference.score_samples(log_standardise(test, center, scale)), rtol=1e-10
    )


def test_gmm_is_deterministic_given_random_state():
    X = three_clusters(n=300, seed=6)
    a = GaussianMixtureDetector(max_components=4, n_init=1, random_state=11).fit(X)
    b = GaussianMixtureDetector(max_components=4, n_init=1, random_state=11).fit(X)
    assert a.cv_log_likelihood_ == b.cv_log_likelihood_
    np.testing.assert_array_equal(a.score_samples(X), b.score_samples(X))


def test_gmm_init_stores_parameters_only():
    detector = GaussianMixtureDetector(max_components=2, covariance_type="diag", n_folds=3, random_state=5)
    assert detector.get_params() == {
        "max_components": 2,
        "covariance_type": "diag",
        "n_folds": 3,
        "n_init": 3,
        "reg_covar": 1e-4,
        "random_state": 5,
    }
    assert not [name for name in vars(detector) if name.endswith("_")]


# --- KNNDetector -------------------------------------------------------------------------------------------------


def brute_force_kth_distance(train_z, query_z, k, leave_self_out=False):
    distances = np.sqrt(((query_z[:, None, :] - train_z[None, :, :]) ** 2).sum(axis=-1))
    if leave_self_out:
        np.fill_diagonal(distances, np.inf)
    return np.sort(distances, axis=1)[:, k - 1]


def test_knn_fit_returns_self_and_sets_attributes(data):
    train, _, _ = data
    detector = KNNDetector(n_neighbors=3)
    assert detector.fit(train) is detector
    assert detector.center_.shape == detector.scale_.shape == (20,)
    assert detector.nn_.n_neighbors == 3
    assert detector.n_features_in_ == 20


def test_knn_separates_shifted_outliers(data):
    train, test, outliers = data
    detector = KNNDetector().fit(train)
    assert auroc(detector.score_samples(test), detector.score_samples(outliers)) > 0.95


@pytest.mark.parametrize("k", [1, 5])
def test_knn_score_matches_brute_force(data, k):
    train, test, outliers = data
    query = np.r_[test, outliers]
    detector = KNNDetector(n_neighbors=k).fit(train)
    center, scale = fit_log_standardisation(train)
    expected = brute_force_kth_distance(log_standardise(train, center, scale), log_standardise(query, center, scale), k)
    np.testing.assert_allclose(detector.score_samples(query), expected, rtol=1e-10)


@pytest.mark.parametrize("k", [1, 5])
def test_knn_leave_self_out_training_scores_match_brute_force(data, k):
    train = data[0]
    detector = KNNDetector(n_neighbors=k).fit(train)
    z = log_standardise(train, detector.center_, detector.scale_)
    expected = brute_force_kth_distance(z, z, k, leave_self_out=True)
    np.testing.assert_allclose(detector.score_training_samples(), expected, rtol=1e-10)
    # Scoring training rows the ordinary way counts the row itself.
    if k == 1:
        # (sklearn computes distances as sqrt(|x|^2 - 2 x.y + |y|^2): about 1e-7 off zero)
        np.testing.assert_allclose(detector.score_samples(train), 0.0, atol=1e-6)


def test_knn_is_deterministic(data):
    train, test, _ = data
    a, b = KNNDetector().fit(train), KNNDetector().fit(train)
    np.testing.assert_array_equal(a.score_samples(test), b.score_samples(test))


# --- bad input ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("make", [lambda: GaussianMixtureDetector(max_components=1, n_init=1), KNNDetector])
@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 7, 0.0, X), r"strictly positive.*row 0, column 7"),
        (lambda X: -X, r"strictly positive.*received 120 value"),
        (lambda X: np.where(np.arange(X.size).reshape(X.shape) == 13, np.nan, X), r"finite.*row 1, column 3"),
        (lambda X: X[:, 0], r"2-D with shape \(n_subjects, n_scales\).*shape \(12,\)"),
        (lambda X: X[None], r"2-D.*shape \(1, 12, 10\)"),
        (lambda X: X[:0], r"at least one row"),
    ],
)
def test_bad_training_input_is_rejected(make, change, needle):
    X = lognormal(12, 10)
    with pytest.raises(ValueError, match=needle):
        make().fit(change(X))


@pytest.mark.parametrize("make", [lambda: GaussianMixtureDetector(max_components=1, n_init=1), KNNDetector])
def test_bad_scoring_input_is_rejected(make):
    detector = make().fit(lognormal(30, 4))
    with pytest.raises(ValueError, match=r"must have 4 columns .*received 3"):
        detector.score_samples(lognormal(5, 3))
    with pytest.raises(ValueError, match="strictly positive"):
        detector.score_samples(np.zeros((2, 4)))
    with pytest.raises(ValueError, match="finite"):
        detector.score_samples(np.full((2, 4), np.inf))


@pytest.mark.parametrize(
    ("detector", "X", "needle"),
    [
        (GaussianMixtureDetector(n_folds=5), lognormal(4, 2), "at least n_folds=5 rows .*; received 4"),
        (GaussianMixtureDetector(n_folds=1), lognormal(10, 2), "n_folds must be an integer >= 2; received 1"),
        (GaussianMixtureDetector(max_components=0), lognormal(10, 2), "max_components must be an integer >= 1"),
        (GaussianMixtureDetector(covariance_type="ful"), lognormal(10, 2), "covariance_type must be"),
        (KNNDetector(n_neighbors=5), lognormal(5, 2), "more than n_neighbors=5 rows; received 5"),
        (KNNDetector(n_neighbors=0), lognormal(5, 2), "n_neighbors must be an integer >= 1; received 0"),
    ],
)
def test_bad_parameters_are_rejected(detector, X, needle):
    with pytest.raises(ValueError, match=needle):
        detector.fit(X)


@pytest.mark.parametrize("detector", [GaussianMixtureDetector(), KNNDetector()])
def test_scoring_before_fit_raises(detector):
    with pytest.raises(NotFittedError):
        detector.score_samples(lognormal(3, 2))
