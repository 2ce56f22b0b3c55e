"""Self-Organizing Map on subjects' L-vectors of multiscale score norms, with cohort prototypes (dissertation 6.2-6.3).

Each subject is one row of ``X`` (shape ``(n_subjects, L)``): the norms of the score network's output at ``L`` noise
scales. :class:`SelfOrganizingMap` takes ``log X`` (the norms are positive and span orders of magnitude), standardises
each column with the mean and standard deviation of a reference cohort, and trains a ``n_rows x n_cols`` map with
:mod:`minisom`'s batch algorithm (Kohonen 2013, ``MiniSom.train_batch_offline``, vectorised in
:mod:`analysis.exploration.som_training`) from a PCA initialisation, so a fit is deterministic.

A cohort's *maximal prototype* (:meth:`SelfOrganizingMap.maximal_prototype`) is the map unit that is the
best-matching unit (BMU) of the most subjects of that cohort; its members are the subgroup the map singles out.

Unit coordinates are ``(row, col)`` with ``0 <= row < n_rows`` and ``0 <= col < n_cols``, i.e. indices into
``weights_[row, col]`` and the ``(n_rows, n_cols)`` arrays returned here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from minisom import MiniSom
from sklearn.base import BaseEstimator
from sklearn.utils.validation import check_is_fitted

from analysis.checks import check_int, check_positive_float
from analysis.detection.detectors import check_score_norms, fit_standardisation
from analysis.exploration.som_training import best_matching_units, train_batch_offline

__all__ = [
    "Prototype",
    "SelfOrganizingMap",
    "StandardisedNorms",
    "fit_cohort_map",
    "standardise_norms",
    "unit_positions",
]

TOPOLOGIES = ("rectangular", "hexagonal")
DEFAULT_ITERATIONS = 200


@dataclass(frozen=True)
class Prototype:
    """The map unit holding the most subjects of one cohort.

    Attributes
    ----------
    cohort : str
        The cohort label.
    unit : tuple of (int, int)
        ``(row, col)`` of the unit.
    members : ndarray of int, shape (size,)
        Row indices (into the rows given to ``fit``) of the cohort's subjects whose BMU is ``unit``, ascending.
    size : int
        ``len(members)``.
    cohort_size : int
        Number of fitted subjects in the cohort.
    """

    cohort: str
    unit: tuple[int, int]
    members: np.ndarray
    size: int
    cohort_size: int

    @property
    def fraction(self) -> float:
        """Share of the cohort in the prototype, ``size / cohort_size``."""
        return self.size / self.cohort_size


def _reference_mask(reference, n_subjects: int) -> np.ndarray:
    """Boolean mask of shape ``(n_subjects,)`` from ``None``, a boolean mask or an integer index array."""
    if reference is None:
        return np.ones(n_subjects, dtype=bool)
    ref = np.asarray(reference)
    if ref.ndim != 1:
        raise ValueError(f"reference must be a 1-D boolean mask or index array; received shape {ref.shape}")
    if ref.dtype == bool:
        if ref.size != n_subjects:
            raise ValueError(
                f"reference as a boolean mask must have one entry per row of X ({n_subjects}); received {ref.size}"
            )
        mask = ref.copy()
    elif ref.size == 0 or np.issubdtype(ref.dtype, np.integer):
        index = ref.astype(int)
        bad = (index < -n_subjects) | (index >= n_subjects)
        if bad.any():
            raise ValueError(
                f"reference indices must lie in [0, {n_subjects}) for X with {n_subjects} rows; "
                f"received {index[bad][0]}"
            )
        mask = np.zeros(n_subjects, dtype=bool)
        mask[index] = True
    else:
        raise ValueError(f"reference must be a boolean mask or an integer index array; received dtype {ref.dtype}")
    if mask.sum() < 2:
        raise ValueError(
            f"reference must select at least 2 rows to estimate a standard deviation; received {int(mask.sum())}"
        )
    return mask


@dataclass(frozen=True)
class StandardisedNorms:
    """Score norms in the map's input space, and the standardisation that took them there.

    Attributes
    ----------
    values : ndarray, shape (n_subjects, L)
        ``(log X - center) / scale`` (no log when the map is fitted with ``log_transform=False``).
    center, scale : ndarray, shape (L,)
        Mean and standard deviation (``ddof=0``) of the reference rows; ``scale`` is 1.0 for a constant column.
    reference_mask : ndarray of bool, shape (n_subjects,)
        The reference rows.
    """

    values: np.ndarray
    center: np.ndarray
    scale: np.ndarray
    reference_mask: np.ndarray


def standardise_norms(X, reference=None, log_transform: bool = True) -> StandardisedNorms:
    """Check score norms and standardise every column by the reference rows, as :meth:`SelfOrganizingMap.fit` does.

    Parameters
    ----------
    X : array_like, shape (n_subjects, L)
        Score norms (strictly positive when ``log_transform``); ``L >= 2`` and ``n_subjects >= 2``.
    reference : array_like of bool, shape (n_subjects,), or array_like of int, optional
        Rows whose mean and standard deviation standardise every column; default all rows.
    log_transform : bool, default True
        Take ``log X`` first.

    Returns
    -------
    StandardisedNorms
    """
    X = check_score_norms(X, positive=log_transform)
    n_subjects, n_features = X.shape
    if n_features < 2:
        raise ValueError(
            f"X must have at least 2 columns (noise scales): minisom's PCA initialisation spans the first two "
            f"principal components; received {n_features}"
        )
    if n_subjects < 2:
        raise ValueError(f"X must have at least 2 rows (subjects) to train a map; received {n_subjects}")
    mask = _reference_mask(reference, n_subjects)
    values = np.log(X) if log_transform else X
    center, scale = fit_standardisation(values[mask])
    return StandardisedNorms(values=(values - center) / scale, center=center, scale=scale, reference_mask=mask)


class SelfOrganizingMap(BaseEstimator):
    """Self-Organizing Map (minisom, batch training) on log-standardised L-vectors of score norms.

    Parameters
    ----------
    n_rows, n_cols : int, default 7 and 9
        Grid size, each >= 2 (minisom's PCA initialisation needs a 2-D grid).
    topology : {"rectangular", "hexagonal"}, default "rectangular"
        Unit lattice; it shapes the neighbourhood function, the U-matrix and the topographic error.
    sigma : float, optional
        Initial width of the Gaussian neighbourhood, in grid units. Default ``max(1, max(n_rows, n_cols) / 2)``:
        at first a unit pulls half the map along, which orders the map globally. minisom's asymptotic decay
        shrinks it to about a third by the last iteration (``sigma / (1 + 2 t / n_iterations)``), e.g. 4.5 -> 1.5
        on the default 7 x 9 grid.
    learning_rate : float, default 0.5
        Initial blend in ``(0, 1]`` between the old weights and each batch update (``w <- (1 - a) w + a w_batch``);
        decays the same way as ``sigma``.
    n_iterations : int, optional
        Number of batch iterations (epochs: each one visits every subject). Default 200, enough for the batch
        algorithm to settle on a few hundred subjects; each iteration costs ``n_subjects`` BMU searches.
    log_transform : bool, default True
        Take ``log X`` before standardising; ``X`` must then be strictly positive.
    random_state : int or None, default 0
        Seed handed to ``MiniSom(random_seed=...)``. With PCA initialisation and batch training no random draw
        reaches the result, so fits are deterministic for any value; it is kept for estimator-API parity.

    Attributes
    ----------
    center_, scale_ : ndarray, shape (L,)
        Mean and standard deviation (``ddof=0``) of the (log-)columns over the reference rows; ``scale_`` is 1.0
        where a column is constant on the reference rows.
    reference_mask_ : ndarray of bool, shape (n_subjects,)
        The reference rows of the data given to ``fit``.
    n_features_in_ : int
        ``L``.
    weights_ : ndarray, shape (n_rows, n_cols, L)
        Codebook vectors in standardised space.
    bmu_ : ndarray of int, shape (n_subjects, 2)
        ``(row, col)`` of each fitted subject's best-matching unit (Euclidean, first minimum in row-major order).
    quantization_distances_ : ndarray, shape (n_subjects,)
        Euclidean distance of each standardised fitted row to its BMU's weight.
    quantization_error_ : float
        Mean of ``quantization_distances_`` (minisom ``quantization_error``).
    topographic_error_ : float
        Share of fitted rows whose first and second BMU are not adjacent (minisom ``topographic_error``;
        rectangular adjacency includes diagonals).
    u_matrix_ : ndarray, shape (n_rows, n_cols)
        minisom ``distance_map()``: per unit the summed distance to its lattice neighbours, divided by the maximum.
    som_ : minisom.MiniSom
        The trained map.
    """

    def __init__(
        self,
        n_rows: int = 7,
        n_cols: int = 9,
        topology: str = "rectangular",
        sigma: float | None = None,
        learning_rate: float = 0.5,
        n_iterations: int | None = None,
        log_transform: bool = True,
        random_state: int | None = 0,
    ):
        self.n_rows = n_rows
        self.n_cols = n_cols
        self.topology = topology
        self.sigma = sigma
        self.learning_rate = learning_rate
        self.n_iterations = n_iterations
        self.log_transform = log_transform
        self.random_state = random_state

    def _checked_params(self) -> tuple[int, int, float, float, int]:
        n_rows = check_int(self.n_rows, "n_rows", 2)
        n_cols = check_int(self.n_cols, "n_cols", 2)
        if self.topology not in TOPOLOGIES:
            raise ValueError(f"topology must be one of {TOPOLOGIES}; received {self.topology!r}")
        sigma = max(1.0, max(n_rows, n_cols) / 2) if self.sigma is None else check_positive_float(self.sigma, "sigma")
        learning_rate = check_positive_float(self.learning_rate, "learning_rate")
        if learning_rate > 1:
            raise ValueError(f"learning_rate must lie in (0, 1]; received {self.learning_rate!r}")
        n_iterations = (
            DEFAULT_ITERATIONS if self.n_iterations is None else check_int(self.n_iterations, "n_iterations", 1)
        )
        if not (self.random_state is None or isinstance(self.random_state, int | np.integer)):
            raise ValueError(f"random_state must be an int or None; received {self.random_state!r}")
        return n_rows, n_cols, sigma, learning_rate, n_iterations

    def fit(self, X, reference=None) -> SelfOrganizingMap:
        """Standardise on the reference rows, initialise the map by PCA and train it with the batch algorithm.

        Parameters
        ----------
        X : array_like, shape (n_subjects, L)
            Score norms (strictly positive when ``log_transform``); ``L >= 2`` and ``n_subjects >= 2``.
        reference : array_like of bool, shape (n_subjects,), or array_like of int, optional
            Rows whose mean and standard deviation standardise every column (e.g. the typically developing
            cohort); default all rows. All rows train the map.

        Returns
        -------
        self
        """
        self._checked_params()
        return self._fit_standardised(standardise_norms(X, reference, self.log_transform))

    def _fit_standardised(self, norms: StandardisedNorms) -> SelfOrganizingMap:
        """The training half of :meth:`fit`, on norms already standardised (the grid-stability sweep standardises
        once for all its grids)."""
        n_rows, n_cols, sigma, learning_rate, n_iterations = self._checked_params()
        Z = norms.values
        self.center_, self.scale_ = norms.center, norms.scale
        self.reference_mask_ = norms.reference_mask
        self.n_features_in_ = Z.shape[1]
        som = MiniSom(
            n_rows,
            n_cols,
            Z.shape[1],
            sigma=sigma,
            learning_rate=learning_rate,
            topology=self.topology,
            random_seed=self.random_state,
        )
        som.pca_weights_init(Z)
        train_batch_offline(som, Z, n_iterations)

        self.som_ = som
        self.weights_ = np.array(som.get_weights(), dtype=float, copy=True)
        flat, self.quantization_distances_, runner_up = best_matching_units(Z, self._codebook())
        self.bmu_ = self._grid_units(flat)
        self.quantization_error_ = float(self.quantization_distances_.mean())
        self.topographic_error_ = _topographic_error(som, flat, runner_up)
        self.u_matrix_ = np.asarray(som.distance_map(), dtype=float)
        return self

    def _codebook(self) -> np.ndarray:
        """The weights as (n_rows * n_cols, L), units in row-major order."""
        return self.weights_.reshape(-1, self.weights_.shape[-1])

    def _grid_units(self, flat: np.ndarray) -> np.ndarray:
        """``(row, col)`` pairs (n, 2) of flat row-major unit indices (n,)."""
        rows, cols = np.unravel_index(flat, self.weights_.shape[:2])
        return np.column_stack([rows, cols]).astype(int)

    def standardise(self, X) -> np.ndarray:
        """Map score norms into the map's input space: ``(log X - center_) / scale_`` (no log if disabled).

        Parameters
        ----------
        X : array_like, shape (n, L)

        Returns
        -------
        ndarray, shape (n, L)
        """
        check_is_fitted(self, "weights_")
        X = check_score_norms(X, n_features=self.n_features_in_, positive=self.log_transform)
        values = np.log(X) if self.log_transform else X
        return (values - self.center_) / self.scale_

    def bmus(self, X) -> np.ndarray:
        """Best-matching units of new rows, standardised with the fitted ``center_`` and ``scale_``.

        Parameters
        ----------
        X : array_like, shape (n, L)

        Returns
        -------
        ndarray of int, shape (n, 2)
            ``(row, col)`` per row of ``X``.
        """
        return self._grid_units(best_matching_units(self.standardise(X), self._codebook())[0])

    def _check_labels(self, labels) -> np.ndarray:
        check_is_fitted(self, "bmu_")
        labels = np.asarray(labels)
        n_subjects = self.bmu_.shape[0]
        if labels.ndim != 1 or labels.size != n_subjects:
            raise ValueError(
                f"labels must be 1-D with one cohort label per row given to fit ({n_subjects}); "
                f"received shape {labels.shape}"
            )
        return labels

    def hit_map(self, labels) -> dict:
        """Per cohort, how many fitted subjects have each unit as BMU.

        Parameters
        ----------
        labels : array_like, shape (n_subjects,)
            Cohort label of each row given to ``fit``.

        Returns
        -------
        dict
            Label -> ndarray of int, shape (n_rows, n_cols); keys in sorted order. The maps of all labels sum to
            the cohort sizes.
        """
        labels = self._check_labels(labels)
        shape = self.weights_.shape[:2]
        hits = {}
        for label in np.unique(labels):
            counts = np.zeros(shape, dtype=int)
            rows = self.bmu_[labels == label]
            np.add.at(counts, (rows[:, 0], rows[:, 1]), 1)
            hits[label.item() if isinstance(label, np.generic) else label] = counts
        return hits

    def maximal_prototype(self, labels, cohort) -> Prototype:
        """The unit that is BMU of the most subjects of ``cohort``, and those subjects.

        Ties in member count are broken by the smaller mean quantisation distance of the members (the tighter
        subgroup), then by the lowest ``(row, col)`` in row-major order.

        Parameters
        ----------
        labels : array_like, shape (n_subjects,)
            Cohort label of each row given to ``fit``.
        cohort : str
            The cohort whose prototype is wanted.

        Returns
        -------
        Prototype
        """
        labels = self._check_labels(labels)
        in_cohort = labels == cohort
        cohort_size = int(in_cohort.sum())
        if cohort_size == 0:
            present = ", ".join(repr(label) for label in np.unique(labels).tolist())
            raise ValueError(f"cohort {cohort!r} has no members among the fitted rows; labels present: {present}")
        index = np.flatnonzero(in_cohort)
        n_cols = self.weights_.shape[1]
        flat = self.bmu_[index, 0] * n_cols + self.bmu_[index, 1]
        units, counts = np.unique(flat, return_counts=True)
        mean_distance = np.array([self.quantization_distances_[index[flat == unit]].mean() for unit in units])
        # np.lexsort sorts by the last key first: most members, then smallest mean distance, then lowest unit.
        best = units[np.lexsort((units, mean_distance, -counts))[0]]
        members = index[flat == best]
        return Prototype(
            cohort=cohort,
            unit=(int(best // n_cols), int(best % n_cols)),
            members=members,
            size=int(members.size),
            cohort_size=cohort_size,
        )


def _topographic_error(som: MiniSom, best: np.ndarray, second: np.ndarray) -> float:
    """minisom's ``topographic_error`` from each row's best and second-best flat unit indices (n_subjects,).

    A row counts as an error when its two best units are not lattice neighbours: on a rectangular lattice when
    their row and column offsets are more than a diagonal step (1.42) apart, on a hexagonal one when their centres
    are not one unit apart.
    """
    if som.topology == "hexagonal":
        x_coord, y_coord = som._xx.T.ravel(), som._yy.T.ravel()
        gap = np.hypot(x_coord[best] - x_coord[second], y_coord[best] - y_coord[second])
        return float(1 - np.mean(np.isclose(1, gap)))
    n_cols = som._weights.shape[1]
    gap = np.hypot(best // n_cols - second // n_cols, best % n_cols - second % n_cols)
    return float((gap > 1.42).mean())


def unit_positions(n_rows: int, n_cols: int, topology: str = "rectangular") -> tuple[np.ndarray, np.ndarray]:
    """Where minisom places each unit, as drawn: ``(across, up)`` arrays of shape ``(n_rows, n_cols)``.

    ``across`` runs along the columns and ``up`` along the rows. A rectangular lattice sits on integers; on a
    hexagonal one, minisom's columns are ``sqrt(3) / 2`` apart and every other column is shifted by half a row, so
    that flat-topped hexagons of circumradius ``1 / sqrt(3)`` tile the map and each unit touches its six lattice
    neighbours (the ones of ``MiniSom.distance_map``).
    """
    if topology not in TOPOLOGIES:
        raise ValueError(f"topology must be one of {TOPOLOGIES}; received {topology!r}")
    som = MiniSom(check_int(n_rows, "n_rows", 1), check_int(n_cols, "n_cols", 1), 1, topology=topology)
    rows, cols = som.get_euclidean_coordinates()  # minisom's x runs along rows, y along columns
    return np.asarray(cols, dtype=float), np.asarray(rows, dtype=float)


def fit_cohort_map(norms: np.ndarray, ids: list, cohorts: np.ndarray, reference_cohort: str):
    """A run's map: the default 7 x 9 SOM of the score norms standardised by the reference cohort, and every
    cohort's maximal prototype.

    Returns the run record's ``som`` section, the per-subject table of ``som.parquet`` (subject_id, cohort,
    bmu_row, bmu_col, quantization_distance) and the fitted :class:`SelfOrganizingMap`.
    """
    cohorts = np.asarray(cohorts)
    som = SelfOrganizingMap().fit(norms, reference=cohorts == reference_cohort)
    prototypes = {}
    for cohort in sorted(set(cohorts.tolist())):
        p = som.maximal_prototype(cohorts, cohort)
        prototypes[cohort] = {
            "unit": list(p.unit), "size": p.size, "cohort_size": p.cohort_size, "members": [ids[i] for i in p.members]
        }
    record = {
        "grid": [som.n_rows, som.n_cols],
        "topology": som.topology,
        "quantization_error": som.quantization_error_,
        "topographic_error": som.topographic_error_,
        "prototypes": prototypes,
        "tables": {"bmus": "som.parquet", "weights": "som_weights.npy", "u_matrix": "som_u_matrix.npy"},
    }
    table = pd.DataFrame(
        {
            "subject_id": ids,
            "cohort": cohorts,
            "bmu_row": som.bmu_[:, 0],
            "bmu_col": som.bmu_[:, 1],
            "quantization_distance": som.quantization_distances_,
        }
    )
    return record, table, som
