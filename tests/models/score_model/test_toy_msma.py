"""Toy replication of dissertation ch. 3.1 (fig. 3.3-3.4) with the real training machinery and an MLP.

A 1-D Gaussian mixture: inliers near 10 (weight 0.95), a local mode near 50 (weight 0.05) and, between them, the
low-density region near 30. Its VE-perturbed score is analytic (each component's variance grows by sigma^2), so the
learned norms can be checked against it, and the chapter's claim can be checked on the learned model:
low-density outliers separate from inliers at small and medium sigma, local-mode outliers only at the largest.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp
from sklearn.metrics import roc_auc_score
from torch import nn

from models.score_model.sde import VESchedule
from models.score_model.train import ScoreTrainingData, TrainConfig, train_score_model

WEIGHTS = np.array([0.95, 0.05])
MEANS = np.array([10.0, 50.0])
SDS = np.array([6.0, 6.0])
SIGMA_SMALL, SIGMA_MEDIUM, SIGMA_LARGE = 3.0, 10.0, 20.0
"""Small is half an inlier standard deviation; at smaller sigma the denoising target is mostly noise (its signal
variance is sigma^2 / (36 + sigma^2)), and a few seconds of training cannot learn the sparse low-density region."""


def analytic_score(x: np.ndarray, sigma: float) -> np.ndarray:
    """d/dx log of the mixture convolved with N(0, sigma^2)."""
    var = SDS**2 + sigma**2
    log_parts = np.log(WEIGHTS) - 0.5 * np.log(2 * np.pi * var) - 0.5 * (x[:, None] - MEANS) ** 2 / var
    responsibility = np.exp(log_parts - logsumexp(log_parts, axis=1, keepdims=True))
    return (responsibility * -(x[:, None] - MEANS) / var).sum(axis=1)


class ToyScoreMLP(nn.Module):
    """s(x, sigma) = net(x, log sigma) / sigma, the NCSN parameterisation, on inputs shaped (batch, 1)."""

    def __init__(self, hidden: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
            nn.SiLU(), nn.Linear(hidden, 1),
        )

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        features = torch.cat([(x - 30.0) / 30.0, torch.log(sigma)[:, None] / 3.0], dim=1)
        return self.net(features) / sigma[:, None]


@pytest.fixture(scope="module")
def toy_model():
    rng = np.random.default_rng(0)
    n = 6000
    component = rng.choice(2, size=n, p=WEIGHTS)
    samples = rng.normal(MEANS[component], SDS[component])
    data = torch.tensor(samples, dtype=torch.float32)[:, None]
    torch.manual_seed(0)
    model = ToyScoreMLP()
    schedule = VESchedule(0.5, 30.0)
    config = TrainConfig(max_steps=2500, batch_size=256, learning_rate=3e-3, validate_every=250, patience=50,
                         ema_decay=0.99, checkpoint_every=10**9)
    result = train_score_model(model, schedule, ScoreTrainingData(data[:5000], data[5000:]), config, progress=False)
    return result.model


def learned_norm(model: nn.Module, x: np.ndarray, sigma: float) -> np.ndarray:
    with torch.no_grad():
        xt = torch.tensor(x, dtype=torch.float32)[:, None]
        s = model(xt, torch.full((len(x),), sigma))
    return (sigma * s.abs()).numpy().ravel()


@pytest.mark.parametrize("sigma", [SIGMA_SMALL, SIGMA_MEDIUM, SIGMA_LARGE])
def test_learned_norms_match_the_analytic_perturbed_scores(toy_model, sigma):
    rng = np.random.default_rng(1)
    component = rng.choice(2, size=4000, p=WEIGHTS)
    x = rng.normal(MEANS[component], SDS[component]) + sigma * rng.standard_normal(4000)
    truth = sigma * np.abs(analytic_score(x, sigma))
    learned = learned_norm(toy_model, x, sigma)
    relative_rmse = np.sqrt(np.mean((learned - truth) ** 2)) / np.sqrt(np.mean(truth**2))
    assert relative_rmse < 0.15


def test_low_density_outliers_separate_at_small_and_medium_sigma_local_mode_only_at_large(toy_model):
    rng = np.random.default_rng(2)
    inliers = rng.normal(10.0, 6.0, 500)
    low_density = rng.uniform(24.0, 30.0, 200)
    local_mode = rng.normal(50.0, 6.0, 200)

    def auroc(outliers: np.ndarray, sigma: float) -> float:
        scores = np.r_[learned_norm(toy_model, inliers, sigma), learned_norm(toy_model, outliers, sigma)]
        return roc_auc_score(np.r_[np.zeros(len(inliers)), np.ones(len(outliers))], scores)

    for sigma in (SIGMA_SMALL, SIGMA_MEDIUM):
        assert auroc(low_density, sigma) > 0.95
        assert auroc(local_mode, sigma) < 0.75  # "separate" means AUROC > 0.95; these stay near chance
    assert auroc(local_mode, SIGMA_LARGE) > 0.95
    # The analytic scores tell the same story, so the test checks the chapter's claim, not an artefact of training.

    def analytic_auroc(outliers: np.ndarray, sigma: float) -> float:
        scores = np.abs(np.r_[analytic_score(inliers, sigma), analytic_score(outliers, sigma)])
        return roc_auc_score(np.r_[np.zeros(len(inliers)), np.ones(len(outliers))], scores)

    assert analytic_auroc(low_density, SIGMA_SMALL) > 0.95
    assert abs(analytic_auroc(local_mode, SIGMA_MEDIUM) - 0.5) < 0.15
    assert analytic_auroc(local_mode, SIGMA_LARGE) > 0.95
