"""Kohonen's batch training of a :class:`minisom.MiniSom`, vectorised over subjects, and the exact best-matching
units of a trained map (the map of :class:`analysis.exploration.som.SelfOrganizingMap` and every grid of the
stability sweep are trained and read here).

A sweep trains 169 maps of 200 iterations each, so every iteration is kept to the work its result needs: the
distances of all subjects to all units are one matrix product into a reused buffer, the neighbourhood takes one
exponential per distinct lattice offset, and the sums per unit are one weighted ``bincount``. Each step gives the
values the straightforward computation gives (bit for bit with numpy's bundled OpenBLAS; within round-off in
general), so the maps, their best-matching units and the sweep's members do not change.
"""

from __future__ import annotations

import numpy as np
from minisom import MiniSom

# Squared distances from the expanded formula ||x||^2 - 2 x.w + ||w||^2 are within about 1e-15 of
# ||x||^2 + ||w||^2 of the exact ones for 20 noise scales; units closer to the best than this much are
# re-measured exactly, so a best-matching unit never hinges on the formula's round-off.
_EXPANSION_TOLERANCE = 1e-9


def _unit_coordinates(som: MiniSom) -> tuple[np.ndarray, np.ndarray]:
    """Lattice coordinates of the units in row-major order, as minisom's neighbourhood functions see them."""
    return som._xx.T.ravel(), som._yy.T.ravel()


class _DistanceOffsets:
    """``||w_j||^2 - 2 x_i.w_j`` for one set of rows and successive weights, as one matrix product into one buffer.

    The rows carry a last column of ones and the weights their squared norms, so the product adds ``||w_j||^2``
    as the last term of each dot product instead of in a second pass over the (n_subjects, n_units) array (the
    same sum in the same order, hence the same bits with OpenBLAS's kernels); and the array is written in place, so
    a large map does not fault in fresh memory at every iteration.
    """

    def __init__(self, data: np.ndarray, n_units: int):
        self._rows = np.hstack([data, np.ones((len(data), 1))])
        self._offsets = np.empty((len(data), n_units))

    def __call__(self, weights: np.ndarray) -> np.ndarray:
        """(n_subjects, n_units) offsets for ``weights`` (n_units, L); overwritten by the next call."""
        columns = np.hstack([weights * -2.0, np.einsum("ij,ij->i", weights, weights)[:, None]])
        return np.matmul(self._rows, columns.T, out=self._offsets)


class _Neighbourhood:
    """minisom's Gaussian neighbourhood ``exp(-dx^2 / 2s^2) exp(-dy^2 / 2s^2)`` between every pair of units.

    Each entry is the same product of the same two exponentials as minisom's elementwise formula, but the
    exponentials are taken once per distinct offset: on a rectangular lattice ``dx`` depends on the two units'
    rows and ``dy`` on their columns only, so the (n_units, n_units) matrix is an outer product of a (rows, rows)
    and a (cols, cols) factor; on a hexagonal lattice the few distinct squared offsets are spread by indexing.
    """

    def __init__(self, som: MiniSom):
        x_coord, y_coord = _unit_coordinates(som)
        n_rows, n_cols = som._weights.shape[:2]
        x_grid, y_grid = x_coord.reshape(n_rows, n_cols), y_coord.reshape(n_rows, n_cols)
        self._n_units = x_coord.size
        self._outer = bool((x_grid == x_grid[:, :1]).all() and (y_grid == y_grid[:1, :]).all())
        if self._outer:
            self._dx2 = (x_grid[:, 0, None] - x_grid[None, :, 0]) ** 2  # (rows, rows)
            self._dy2 = (y_grid[0, :, None] - y_grid[None, 0, :]) ** 2  # (cols, cols)
        else:
            self._dx2, x_index = np.unique((x_coord[:, None] - x_coord[None, :]) ** 2, return_inverse=True)
            self._dy2, y_index = np.unique((y_coord[:, None] - y_coord[None, :]) ** 2, return_inverse=True)
            self._x_index = x_index.reshape(self._n_units, self._n_units)
            self._y_index = y_index.reshape(self._n_units, self._n_units)

    def __call__(self, sigma: float) -> np.ndarray:
        """(n_units, n_units) weights ``[bmu, unit]`` for the neighbourhood width ``sigma`` (grid units)."""
        d = 2 * sigma * sigma
        along_x, along_y = np.exp(-self._dx2 / d), np.exp(-self._dy2 / d)
        if self._outer:
            return (along_x[:, None, :, None] * along_y[None, :, None, :]).reshape(self._n_units, self._n_units)
        return along_x[self._x_index] * along_y[self._y_index]


class _UnitSums:
    """Per unit, the number of rows it is the best-matching unit of and the sum of those rows.

    One weighted ``bincount`` over (feature, row) slots sums every unit's rows in row order from zero, as a sparse
    one-hot product would, so the sums are the same to the bit. The slots run feature-major, which keeps that
    order for each (unit, feature) and lets numpy build them along the long (row) axis.
    """

    def __init__(self, data: np.ndarray, n_units: int):
        self._n_units = n_units
        self._n_features = data.shape[1]
        self._feature_offsets = np.arange(self._n_features)[:, None]
        self._values = np.ascontiguousarray(data.T).ravel()  # (L * n_subjects,), feature-major

    def __call__(self, bmu: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(sums, counts)`` of shapes (n_units, L) and (n_units,) for the units ``bmu`` (n_subjects,)."""
        slots = (bmu * self._n_features)[None, :] + self._feature_offsets
        sums = np.bincount(slots.ravel(), weights=self._values, minlength=self._n_units * self._n_features)
        counts = np.bincount(bmu, minlength=self._n_units).astype(float)
        return sums.reshape(self._n_units, self._n_features), counts


def train_batch_offline(som: MiniSom, data: np.ndarray, n_iterations: int) -> MiniSom:
    """minisom's ``train_batch_offline`` (Kohonen's batch algorithm), vectorised over subjects.

    Same decays, Gaussian neighbourhood and update ``w = (1 - lr) w + lr * sum_i h(bmu_i) x_i / sum_i h(bmu_i)`` as
    minisom 2.3.6, which loops over the subjects in Python (about 10 microseconds per subject and iteration); here
    each iteration is a few matrix products, so sweeps over many grid sizes and thousands of subjects stay fast.
    ``tests/analysis/exploration/test_som.py`` checks the weights against minisom's own loop.

    Parameters
    ----------
    som : minisom.MiniSom
        An initialised map with the Gaussian neighbourhood; its weights are replaced by the trained ones.
    data : ndarray, shape (n_subjects, L)
        Standardised rows, all of which train the map.
    n_iterations : int
        Batch iterations; each one assigns every row to its best-matching unit and updates every unit.

    Returns
    -------
    minisom.MiniSom
        ``som``, trained.
    """
    if som.neighborhood != som._gaussian:
        raise ValueError("the vectorised batch training supports the Gaussian neighbourhood only")
    weights = som._weights.reshape(-1, data.shape[1]).copy()
    n_units = len(weights)
    neighbourhood_of = _Neighbourhood(som)
    offsets_of = _DistanceOffsets(data, n_units)
    unit_sums = _UnitSums(data, n_units)
    for iteration in range(n_iterations):
        rate = som._learning_rate_decay_function(som._learning_rate, iteration, n_iterations)
        sigma = som._sigma_decay_function(som._sigma, iteration, n_iterations)
        neighbourhood = neighbourhood_of(sigma)  # [bmu, unit]
        # ||x - w||^2 = ||x||^2 - 2 x.w + ||w||^2; the first term is the same for every unit, so it is left out.
        sums, counts = unit_sums(offsets_of(weights).argmin(axis=1))
        numerator = neighbourhood.T @ sums
        denominator = neighbourhood.T @ counts
        update = denominator > 0
        if update.all():  # always, unless the neighbourhood underflows: skip the masked copies
            weights = (1 - rate) * weights + rate * numerator / denominator[:, None]
        else:
            weights[update] = (1 - rate) * weights[update] + rate * numerator[update] / denominator[update, None]
    som._weights = weights.reshape(som._weights.shape)
    return som


def best_matching_units(data: np.ndarray, codebook: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each row's best-matching unit by the exact Euclidean distance, its distance, and the runner-up unit.

    The best unit is the first minimum in row-major order of ``||x - w||`` computed as the norm of the difference
    (as a brute-force (n_subjects, n_units, L) difference would give, bit for bit), but only the units within
    round-off of the best by the expanded formula are measured that way, which keeps the memory at one
    (n_subjects, n_units) array.

    Parameters
    ----------
    data : ndarray, shape (n_subjects, L)
    codebook : ndarray, shape (n_units, L)

    Returns
    -------
    best : ndarray of int, shape (n_subjects,)
        Flat (row-major) index of each row's best-matching unit.
    distances : ndarray, shape (n_subjects,)
        ``||x - w_best||``.
    second : ndarray of int, shape (n_subjects,)
        The nearest other unit by the expanded formula, as minisom's topographic error picks it; ``best`` itself
        for a one-unit codebook.
    """
    offsets = _DistanceOffsets(data, len(codebook))(codebook)
    n_subjects = len(data)
    closest = offsets.min(axis=1)
    scale = np.einsum("ij,ij->i", data, data) + np.einsum("ij,ij->i", codebook, codebook).max()
    subject, unit = np.nonzero(offsets <= (closest + _EXPANSION_TOLERANCE * scale)[:, None])
    distance = np.linalg.norm(data[subject] - codebook[unit], axis=-1)
    # Per subject the smallest exact distance, ties to the lowest unit: np.lexsort sorts by its last key first.
    order = np.lexsort((unit, distance, subject))
    first = order[np.flatnonzero(np.r_[True, np.diff(subject[order]) > 0])]
    best, distances = unit[first], distance[first]
    if codebook.shape[0] > 1:
        offsets[np.arange(n_subjects), best] = np.inf
    second = offsets.argmin(axis=1)
    return best, distances, second
