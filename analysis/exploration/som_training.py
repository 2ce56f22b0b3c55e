"""Kohonen's batch training of a :class:`minisom.MiniSom`, vectorised over subjects (the map of
:class:`analysis.exploration.som.SelfOrganizingMap` and every grid of the stability sweep is trained here)."""

from __future__ import annotations

import numpy as np
from minisom import MiniSom
from scipy.sparse import csr_matrix


def _unit_coordinates(som: MiniSom) -> tuple[np.ndarray, np.ndarray]:
    """Lattice coordinates of the units in row-major order, as minisom's neighbourhood functions see them."""
    return som._xx.T.ravel(), som._yy.T.ravel()


def train_batch_offline(som: MiniSom, data: np.ndarray, n_iterations: int) -> MiniSom:
    """minisom's ``train_batch_offline`` (Kohonen's batch algorithm), vectorised over subjects.

    Same decays, Gaussian neighbourhood and update ``w = (1 - lr) w + lr * sum_i h(bmu_i) x_i / sum_i h(bmu_i)`` as
    minisom 2.3.6, which loops over the subjects in Python (about 10 microseconds per subject and iteration); here
    each iteration is a few matrix products, so sweeps over many grid sizes and thousands of subjects stay fast.
    ``tests/analysis/exploration/test_som.py`` checks the weights against minisom's own loop.
    """
    if som.neighborhood != som._gaussian:
        raise ValueError("the vectorised batch training supports the Gaussian neighbourhood only")
    weights = som._weights.reshape(-1, data.shape[1]).copy()
    x_coord, y_coord = _unit_coordinates(som)
    dx2 = (x_coord[:, None] - x_coord[None, :]) ** 2
    dy2 = (y_coord[:, None] - y_coord[None, :]) ** 2
    for iteration in range(n_iterations):
        rate = som._learning_rate_decay_function(som._learning_rate, iteration, n_iterations)
        sigma = som._sigma_decay_function(som._sigma, iteration, n_iterations)
        d = 2 * sigma * sigma
        neighbourhood = np.exp(-dx2 / d) * np.exp(-dy2 / d)  # [bmu, unit]
        # ||x - w||^2 = ||x||^2 - 2 x.w + ||w||^2; the first term is the same for every unit, so it is left out.
        distances = data @ weights.T
        distances *= -2.0
        distances += np.einsum("ij,ij->i", weights, weights)[None, :]
        bmu = distances.argmin(axis=1)
        counts = np.bincount(bmu, minlength=len(weights)).astype(float)
        sums = csr_matrix((np.ones(len(bmu)), (bmu, np.arange(len(bmu)))), shape=(len(weights), len(bmu))) @ data
        numerator = neighbourhood.T @ sums
        denominator = neighbourhood.T @ counts
        update = denominator > 0
        weights[update] = (1 - rate) * weights[update] + rate * numerator[update] / denominator[update, None]
    som._weights = weights.reshape(som._weights.shape)
    return som
