"""The analytic part of the score model: a Gaussian fitted to the reference training images.

``N(mean, W W^T + diag(d))``, a low-rank-plus-diagonal covariance over the brain voxels (probabilistic PCA with a
per-voxel residual variance). Perturbed by VE noise it stays Gaussian, ``C_sigma = W W^T + diag(d + sigma^2)``, so
its score ``-C_sigma^{-1} (x - mean)`` is exact at every sigma and cheap through the Woodbury identity (a k x k solve
per image). The rank k is chosen by the log-likelihood of the validation images, so the model keeps the
spatially coherent modes of normal variation (overall size, tissue contrast) that a per-voxel Gaussian (k = 0)
treats as anomalies.

The score network adds a learned residual to this score (:mod:`models.score_model.network`); with no network the
Gaussian alone gives the baselines of the README (k = 0: "per-voxel Gaussian", chosen k: "low-rank Gaussian").
"""

from __future__ import annotations

import numpy as np

DEFAULT_RANKS = (0, 5, 10, 20, 40, 80)
MIN_RESIDUAL_FRACTION = 0.05
"""The residual variance of a voxel is kept at least this fraction of its total variance."""


class LowRankGaussian:
    """Low-rank-plus-diagonal Gaussian of brain images; sklearn-style (``fit`` returns self, fitted ``*_``).

    Parameters
    ----------
    ranks : tuple of int
        Candidate ranks k; those >= the number of training images are skipped.
    """

    def __init__(self, ranks: tuple[int, ...] = DEFAULT_RANKS):
        self.ranks = ranks

    def fit(self, train: np.ndarray, val: np.ndarray) -> LowRankGaussian:
        """Fit on ``train`` (n, V) and choose the rank by the mean log-likelihood of ``val`` (m, V)."""
        train = np.asarray(train, dtype=np.float64)
        val = np.asarray(val, dtype=np.float64)
        if train.ndim != 2 or val.ndim != 2 or train.shape[1] != val.shape[1] or len(train) < 2 or len(val) < 1:
            raise ValueError(
                f"expected train (n >= 2, V) and val (m >= 1, V) images, got {train.shape} and {val.shape}"
            )
        self.mean_ = train.mean(axis=0)
        variance = train.var(axis=0) + 1e-8
        ranks = sorted({int(r) for r in self.ranks if 0 <= r < len(train)})
        if max(ranks, default=0) > 0:
            _, singular, vt = np.linalg.svd(train - self.mean_, full_matrices=False)
        else:  # a per-voxel Gaussian needs no decomposition
            singular, vt = np.zeros(0), np.zeros((0, train.shape[1]))
        self.val_log_likelihood_: dict[int, float] = {}
        best = None
        for k in ranks:
            components = vt[:k].T * (singular[:k] / np.sqrt(len(train)))
            diagonal = np.maximum(variance - (components**2).sum(axis=1), MIN_RESIDUAL_FRACTION * variance)
            ll = float(_log_likelihood(val - self.mean_, components, diagonal).mean())
            self.val_log_likelihood_[k] = ll
            if best is None or ll > best[0]:
                best = (ll, k, components, diagonal)
        _, self.rank_, self.components_, self.diagonal_ = best
        return self

    @property
    def finest_sd_(self) -> float:
        """1st percentile over voxels of the residual standard deviation: the finest intensity variation of the
        reference images. Below it, a smaller sigma only rescales the perturbed score, so it is ``sigma_min``."""
        return float(np.percentile(np.sqrt(self.diagonal_), 1))

    def scaled_scores(self, images: np.ndarray, sigma: float) -> np.ndarray:
        """``sigma * s(x, sigma)`` of the perturbed Gaussian for ``images`` (n, V) -> (n, V)."""
        deviation = np.asarray(images, dtype=np.float64) - self.mean_
        return -sigma * _precision_times(deviation, self.components_, self.diagonal_ + sigma**2)

    def score_norms(self, images: np.ndarray, sigmas: np.ndarray) -> np.ndarray:
        """``||sigma_i s(x, sigma_i)||_2`` for ``images`` (n, V) at each sigma -> (n, L)."""
        return np.stack([np.linalg.norm(self.scaled_scores(images, s), axis=1) for s in sigmas], axis=1)


def _precision_times(deviation: np.ndarray, components: np.ndarray, diagonal: np.ndarray) -> np.ndarray:
    """(W W^T + diag(d))^{-1} a for each row a of ``deviation`` (Woodbury)."""
    y = deviation / diagonal
    if components.shape[1] == 0:
        return y
    inner = np.eye(components.shape[1]) + (components.T / diagonal) @ components
    return y - (np.linalg.solve(inner, (y @ components).T).T @ components.T) / diagonal


def _log_likelihood(deviation: np.ndarray, components: np.ndarray, diagonal: np.ndarray) -> np.ndarray:
    """Gaussian log-density of each row of ``deviation`` under covariance W W^T + diag(d)."""
    k = components.shape[1]
    inner = np.eye(k) + (components.T / diagonal) @ components
    quadratic = np.einsum("ij,ij->i", deviation, _precision_times(deviation, components, diagonal))
    log_det = np.linalg.slogdet(inner)[1] + np.log(diagonal).sum()
    return -0.5 * (quadratic + log_det + deviation.shape[1] * np.log(2 * np.pi))
