"""Tests of the RealNVP flow detector: exact change of variables, invertibility, training and scoring."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from threadpoolctl import threadpool_limits

from analysis.detection.detectors import GaussianMixtureDetector
from analysis.detection.metrics import auroc
from models.norm_flow.flow import AdamSettings, CouplingFlow, FlowDetector


@pytest.fixture(autouse=True)
def one_thread():
    """Time and results on one thread (the machine may be busy); restores the caller's settings."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(before)


def lognormal(n: int, n_features: int, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mixing = np.eye(n_features) + 0.3 * rng.standard_normal((n_features, n_features)) / np.sqrt(n_features)
    return np.exp(2.0 + shift + 0.5 * rng.standard_normal((n, n_features)) @ mixing)


def three_clusters(n: int, seed: int = 0) -> np.ndarray:
    """2-D norms whose logarithms form three tight clusters: far from Gaussian, so training has work to do."""
    rng = np.random.default_rng(seed)
    centers = np.array([[0.0, 0.0], [3.0, 3.0], [0.0, 3.0]])
    return np.exp(centers[rng.integers(0, 3, n)] + 0.3 * rng.standard_normal((n, 2)))


def random_flow(n_features: int, dtype: torch.dtype, seed: int = 0) -> CouplingFlow:
    """A flow far from the identity: the zero-initialised output layers get random weights."""
    with torch.random.fork_rng(devices=[]), torch.no_grad():
        torch.manual_seed(seed)
        flow = CouplingFlow(n_features, n_blocks=4, hidden=16).to(dtype)
        for block in flow.blocks:
            block.out.weight.normal_(0.0, 0.5)
            block.out.bias.normal_(0.0, 0.5)
    return flow


@pytest.fixture(scope="module")
def fitted():
    """One FlowDetector fitted on 300 x 20 norms, with its fit time."""
    with threadpool_limits(limits=1):
        before = torch.get_num_threads()
        torch.set_num_threads(1)
        start = time.perf_counter()
        detector = FlowDetector().fit(lognormal(300, 20, seed=0))
        elapsed = time.perf_counter() - start
        torch.set_num_threads(before)
    return detector, elapsed


# --- the flow ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-10), (torch.float32, 1e-4)])
def test_log_det_is_log_abs_det_of_the_jacobian(dtype, tol):
    flow = random_flow(5, dtype)
    x = torch.randn(4, 5, dtype=dtype, generator=torch.Generator().manual_seed(1)) * 1.5
    _, log_det = flow(x)
    for i in range(len(x)):
        jacobian = torch.autograd.functional.jacobian(lambda row: flow(row[None])[0][0], x[i])
        sign, expected = torch.linalg.slogdet(jacobian.double())
        assert sign.item() == 1.0  # exp(s) > 0 on the diagonal of each triangular block
        assert abs(log_det[i].item() - expected.item()) < tol
    assert log_det.abs().max() > 0.5, "the test flow should be far from volume-preserving"


@pytest.mark.parametrize("n_features", [1, 2, 7])
def test_inverse_undoes_forward(n_features):
    flow = random_flow(n_features, torch.float64)
    x = torch.randn(50, n_features, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    z, _ = flow(x)
    assert not torch.allclose(z, x)
    torch.testing.assert_close(flow.inverse(z), x, rtol=0, atol=1e-10)


def test_a_new_flow_is_the_identity():
    flow = CouplingFlow(3)
    x = torch.randn(10, 3, generator=torch.Generator().manual_seed(3))
    z, log_det = flow(x)
    torch.testing.assert_close(z, x)
    assert torch.all(log_det == 0)
    expected = -0.5 * (x**2).sum(1) - 1.5 * math.log(2 * math.pi)
    torch.testing.assert_close(flow.log_prob(x), expected)


# --- FlowDetector ------------------------------------------------------------------------------------------------


def test_fit_returns_self_and_is_quick(fitted):
    detector, elapsed = fitted
    assert isinstance(detector, FlowDetector)
    assert elapsed < 30.0, f"fitting 300 x 20 took {elapsed:.1f} s"
    assert detector.center_.shape == detector.scale_.shape == (20,)
    assert detector.n_features_in_ == 20
    assert isinstance(detector.flow_, CouplingFlow) and not detector.flow_.training
    assert 1 <= detector.n_epochs_ <= 300 and 0 <= detector.best_epoch_ <= detector.n_epochs_
    assert len(detector.history_["step"]) == detector.n_epochs_


def test_early_stopping_keeps_the_best_epoch(fitted):
    detector, _ = fitted
    history = detector.history_["val_loss"]
    if detector.best_epoch_ > 0:
        assert history[detector.best_epoch_ - 1] == min(history)
    assert detector.n_epochs_ == 300 or detector.n_epochs_ - detector.best_epoch_ == detector.patience


def test_without_validation_rows_the_last_epoch_is_kept():
    X = lognormal(120, 3, seed=4)
    detector = FlowDetector(max_epochs=8, patience=100, validation_fraction=0.0).fit(X)
    assert detector.best_epoch_ == detector.n_epochs_ == 8
    assert all(math.isnan(value) for value in detector.history_["val_loss"])
    # With no validation rows the last epoch is kept: its training NLL is close to the final NLL of the rows.
    assert abs(detector.score_samples(X).mean() - detector.history_["train_loss"][-1]) < 0.2


def test_separates_shifted_outliers(fitted):
    detector, _ = fitted
    inliers = detector.score_samples(lognormal(100, 20, seed=1))
    outliers = detector.score_samples(lognormal(100, 20, shift=0.8, seed=2))
    assert inliers.shape == (100,) and inliers.dtype == np.float64
    assert auroc(inliers, outliers) > 0.9


def test_nll_of_gaussian_data_is_close_to_the_true_nll():
    rng = np.random.default_rng(3)
    train, held_out = np.exp(rng.standard_normal((400, 4))), np.exp(rng.standard_normal((1000, 4)))
    detector = FlowDetector(random_state=1).fit(train)
    # Exact density of the standardised z' = (log x - center) / scale when log x ~ N(0, I).
    log_x = np.log(held_out)
    true_nll = 0.5 * 4 * np.log(2 * np.pi) + 0.5 * (log_x**2).sum(axis=1) + np.log(detector.scale_).sum()
    assert abs(detector.score_samples(held_out).mean() - true_nll.mean()) < 0.3


def test_learns_a_multimodal_density_better_than_one_gaussian():
    train, held_out = three_clusters(600, seed=5), three_clusters(500, seed=6)
    flow = FlowDetector(batch_size=128).fit(train)
    assert flow.best_epoch_ > 0
    gaussian = GaussianMixtureDetector(max_components=1, n_init=1).fit(train)
    assert flow.score_samples(held_out).mean() < gaussian.score_samples(held_out).mean() - 0.5


def test_deterministic_given_random_state_and_leaves_global_rng_alone():
    X, query = three_clusters(200, seed=7), three_clusters(20, seed=8)
    torch_state, numpy_state = torch.get_rng_state(), np.random.get_state()  # noqa: NPY002 (the legacy global)
    fits = [FlowDetector(max_epochs=5, random_state=seed).fit(X) for seed in (3, 3, 4)]
    assert all(fit.best_epoch_ > 0 for fit in fits)
    a, b, c = (fit.score_samples(query) for fit in fits)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], numpy_state[1])  # noqa: NPY002


def test_init_stores_parameters_only():
    detector = FlowDetector(n_blocks=2, hidden=8)
    assert detector.get_params()["n_blocks"] == 2 and detector.get_params()["random_state"] == 0
    assert not [name for name in vars(detector) if name.endswith("_")]


def test_optimiser_settings_are_one_parameter_that_clone_keeps_and_that_checks_itself():
    detector = FlowDetector(optimiser=AdamSettings(lr=1e-2, weight_decay=0.0))
    assert clone(detector).get_params()["optimiser"] == AdamSettings(lr=1e-2, weight_decay=0.0)
    with pytest.raises(ValueError, match="lr must be a positive finite number; received 0"):
        AdamSettings(lr=0)
    with pytest.raises(ValueError, match="weight_decay must be >= 0"):
        AdamSettings(weight_decay=-1.0)


@pytest.mark.parametrize(
    ("detector", "X", "needle"),
    [
        (FlowDetector(), np.zeros((10, 3)), "strictly positive"),
        (FlowDetector(), np.ones(10), "2-D"),
        (FlowDetector(validation_fraction=1.0), np.ones((10, 3)), r"validation_fraction must be in \[0, 1\)"),
        (FlowDetector(validation_fraction=0.1), np.ones((2, 3)), r"too few rows \(2\)"),
        (FlowDetector(n_blocks=0), np.ones((10, 3)), "n_blocks must be an integer >= 1; received 0"),
        (FlowDetector(batch_size=2.5), np.ones((10, 3)), "batch_size must be an integer"),
    ],
)
def test_bad_input_is_rejected(detector, X, needle):
    with pytest.raises(ValueError, match=needle):
        detector.fit(X)


def test_scoring_checks_its_input():
    with pytest.raises(NotFittedError):
        FlowDetector().score_samples(np.ones((2, 3)))
    detector = FlowDetector(max_epochs=1).fit(lognormal(20, 3))
    with pytest.raises(ValueError, match=r"must have 3 columns .*received 4"):
        detector.score_samples(lognormal(5, 4))
    with pytest.raises(ValueError, match="finite"):
        detector.score_samples(np.full((1, 3), np.nan))
