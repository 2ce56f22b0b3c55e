"""MSMA auxiliary models: density and distance models on the L-vectors of multiscale score norms.

Each subject is one row of ``X`` (shape ``(n_subjects, L)``): the norms of the score network's output at ``L``
noise scales, all positive. The detectors work on ``log X``, standardised per column with the mean and standard
deviation of the training rows (:func:`fit_log_standardisation`, :func:`log_standardise`), and return anomaly
scores where higher means more anomalous.

- :class:`GaussianMixtureDetector`: negative log-likelihood under a Gaussian mixture whose number of components is
  chosen by cross-validated held-out log-likelihood.
- :class:`KNNDetector`: Euclidean distance to the k-th nearest training row.

Both follow the scikit-learn estimator conventions: ``__init__`` stores parameters only, ``fit`` returns ``self``,
fitted attributes end in ``_``.
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.mixture import GaussianMixture
from sklearn.model_selection import KFold
from sklearn.neighbors import NearestNeighbors
from sklearn.utils.validation import check_is_fitted

from analysis.checks import check_int

__all__ = [
    "GaussianMixtureDetector",
    "KNNDetector",
    "check_score_norms",
    "fit_log_standardisation",
    "log_standardise",
]


def check_score_norms(X, n_features: int | None = None, name: str = "X", positive: bool = True) -> np.ndarray:
    """Return ``X`` as a 2-D float array of finite (and, with ``positive``, strictly positive) values, or raise
    ValueError.

    Parameters
    ----------
    X : array_like, shape (n_subjects, L)
        Score norms, one row per subject and one column per noise scale.
    n_features : int, optional
        Required number of columns (the ``L`` seen in ``fit``).
    name : str, default "X"
        How error messages call the array.

    Returns
    -------
    ndarray of float64, shape (n_subjects, L)
    """
    try:
        array = np.asarray(X, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a 2-D array of numbers; could not convert it to float ({error})") from None
    if array.ndim != 2:
        raise ValueError(
            f"{name} must be 2-D with shape (n_subjects, n_scales); received an array of shape {array.shape}"
        )
    if array.shape[0] == 0 or array.shape[1] == 0:
        raise ValueError(f"{name} must have at least one row and one column; received shape {array.shape}")
    if n_features is not None and array.shape[1] != n_features:
        raise ValueError(
            f"{name} must have {n_features} columns (one per noise scale, as in the training data); "
            f"received {array.shape[1]}"
        )
    finite = np.isfinite(array)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        raise ValueError(
            f"{name} must hold finite score norms; received {int((~finite).sum())} non-finite value(s), "
            f"the first at row {row}, column {col} ({array[row, col]})"
        )
    above_zero = array > 0
    if positive and not above_zero.all():
        row, col = np.argwhere(~above_zero)[0]
        raise ValueError(
            f"{name} must hold strictly positive score norms (they are log-transformed); received "
            f"{int((~above_zero).sum())} value(s) <= 0, the first at row {row}, column {col} ({array[row, col]})"
        )
    return array


def fit_log_standardisation(X) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations of ``log X``, the parameters of :func:`log_standardise`.

    Parameters
    ----------
    X : array_like, shape (n_subjects, L)
        Positive training score norms.

    Returns
    -------
    center : ndarray, shape (L,)
        Mean of ``log X`` per column.
    scale : ndarray, shape (L,)
        Standard deviation (``ddof=0``) of ``log X`` per column; 1.0 where a column is constant (std below
        ``1e-12 * max(1, |center|)``), so that standardising never divides by zero.
    """
    return fit_standardisation(np.log(check_score_norms(X)))


def fit_standardisation(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (``ddof=0``) of ``values`` (n, L); 1.0 for a constant column."""
    center = values.mean(axis=0)
    scale = values.std(axis=0)
    # A constant column's std is a rounding residue (~1e-16), not 0: treat anything that small as constant.
    scale[~(scale > 1e-12 * np.maximum(1.0, np.abs(center)))] = 1.0
    return center, scale


def log_standardise(X, center, scale) -> np.ndarray:
    """``(log X - center) / scale`` after checking that ``X`` holds positive, finite score norms.

    Parameters
    ----------
    X : array_like, shape (n_subjects, L)
        Score norms, all finite and > 0.
    center, scale : array_like, shape (L,)
        From :func:`fit_log_standardisation` on the training rows; ``scale`` must be positive.

    Returns
    -------
    ndarray of float64, shape (n_subjects, L)
    """
    center = np.asarray(center, dtype=float)
    scale = np.asarray(scale, dtype=float)
    if center.ndim != 1 or center.shape != scale.shape:
        raise ValueError(
            f"center and scale must be 1-D arrays of the same length; received shapes {center.shape} and {scale.shape}"
        )
    array = check_score_norms(X, n_features=center.size)
    return (np.log(array) - center) / scale


class GaussianMixtureDetector(BaseEstimator):
    """Negative log-likelihood under a Gaussian mixture on log-standardised score norms.

    The number of components ``k`` is chosen in ``1..max_components`` by the mean held-out per-sample
    log-likelihood over a shuffled ``KFold(n_folds)`` split of the training rows; a ``k`` is only tried when every
    training fold has at least ``k * (L + 1)`` rows (``k = 1`` is always tried). The mixture with the chosen ``k``
    is then refitted on all training rows. The standardisation is learnt once on all training rows; it is affine,
    so it shifts every held-out log-likelihood of a fold by the same constant and does not change which ``k`` wins.

    Parameters
    ----------
    max_components : int, default 5
        Largest number of mixture components tried.
    covariance_type : {"full", "tied", "diag", "spherical"}, default "full"
        Passed to :class:`sklearn.mixture.GaussianMixture`.
    n_folds : int, default 5
        Folds of the cross-validation choosing ``k``; at least 2 and at most the number of training rows.
    n_init : int, default 3
        Initialisations per mixture fit; the best is kept.
    reg_covar : float, default 1e-4
        Added to the covariance diagonals (in standardised units).
    random_state : int, RandomState instance or None, default 0
        Seeds the fold shuffle and the mixture initialisations.

    Attributes
    ----------
    center_, scale_ : ndarray, shape (L,)
        Standardisation of ``log X`` learnt on the training rows.
    cv_log_likelihood_ : dict[int, float]
        For each ``k`` tried, the mean over folds of the mean held-out per-sample log-likelihood.
    n_components_ : int
        The chosen ``k`` (the one with the highest ``cv_log_likelihood_``).
    mixture_ : sklearn.mixture.GaussianMixture
        The mixture with ``n_components_`` components fitted on all training rows.
    n_features_in_ : int
        ``L``.
    """

    def __init__(
        self,
        max_components: int = 5,
        covariance_type: str = "full",
        n_folds: int = 5,
        n_init: int = 3,
        reg_covar: float = 1e-4,
        random_state=0,
    ):
        self.max_components = max_components
        self.covariance_type = covariance_type
        self.n_folds = n_folds
        self.n_init = n_init
        self.reg_covar = reg_covar
        self.random_state = random_state

    def _mixture(self, k: int) -> GaussianMixture:
        return GaussianMixture(
            n_components=k,
            covariance_type=self.covariance_type,
            n_init=self.n_init,
            reg_covar=self.reg_covar,
            random_state=self.random_state,
        )

    def fit(self, X, y=None) -> GaussianMixtureDetector:
        """Choose the number of components by cross-validation and fit the mixture on all rows.

        Parameters
        ----------
        X : array_like, shape (n_subjects, L)
            Positive training score norms.
        y : ignored

        Returns
        -------
        self
        """
        max_components = check_int(self.max_components, "max_components")
        n_folds = check_int(self.n_folds, "n_folds", minimum=2)
        check_int(self.n_init, "n_init")
        if self.covariance_type not in ("full", "tied", "diag", "spherical"):
            raise ValueError(
                f"covariance_type must be 'full', 'tied', 'diag' or 'spherical'; received {self.covariance_type!r}"
            )
        X = check_score_norms(X)
        n, n_features = X.shape
        if n < n_folds:
            raise ValueError(f"X must have at least n_folds={n_folds} rows to choose the mixture size; received {n}")
        self.center_, self.scale_ = fit_log_standardisation(X)
        Z = log_standardise(X, self.center_, self.scale_)

        folds = list(KFold(n_splits=n_folds, shuffle=True, random_state=self.random_state).split(Z))
        smallest_train = min(len(train) for train, _ in folds)
        candidates = [k for k in range(1, max_components + 1) if k == 1 or smallest_train >= k * (n_features + 1)]
        self.cv_log_likelihood_ = {}
        for k in candidates:
            held_out = [self._mixture(k).fit(Z[train]).score(Z[test]) for train, test in folds]
            self.cv_log_likelihood_[k] = float(np.mean(held_out))
        self.n_components_ = max(self.cv_log_likelihood_, key=self.cv_log_likelihood_.get)
        self.mixture_ = self._mixture(self.n_components_).fit(Z)
        self.n_features_in_ = n_features
        return self

    def score_samples(self, X) -> np.ndarray:
        """Negative log-likelihood of each row under the fitted mixture, in log-standardised space.

        Parameters
        ----------
        X : array_like, shape (n_subjects, L)
            Positive score norms.

        Returns
        -------
        ndarray, shape (n_subjects,)
            Anomaly score: higher = more anomalous.
        """
        check_is_fitted(self, "mixture_")
        return -self.mixture_.score_samples(log_standardise(X, self.center_, self.scale_))


class KNNDetector(BaseEstimator):
    """Distance to the k-th nearest training row in log-standardised space.

    Parameters
    ----------
    n_neighbors : int, default 5
        ``k``. Fitting needs more than ``k`` training rows, so that leave-self-out scores exist.

    Attributes
    ----------
    center_, scale_ : ndarray, shape (L,)
        Standardisation of ``log X`` learnt on the training rows.
    nn_ : sklearn.neighbors.NearestNeighbors
        Euclidean neighbour index of the standardised training rows.
    n_features_in_ : int
        ``L``.
    """

    def __init__(self, n_neighbors: int = 5):
        self.n_neighbors = n_neighbors

    def fit(self, X, y=None) -> KNNDetector:
        """Index the log-standardised training rows.

        Parameters
        ----------
        X : array_like, shape (n_subjects, L)
            Positive training score norms; more than ``n_neighbors`` rows.
        y : ignored

        Returns
        -------
        self
        """
        k = check_int(self.n_neighbors, "n_neighbors")
        X = check_score_norms(X)
        if X.shape[0] <= k:
            raise ValueError(f"X must have more than n_neighbors={k} rows; received {X.shape[0]}")
        self.center_, self.scale_ = fit_log_standardisation(X)
        self.nn_ = NearestNeighbors(n_neighbors=k).fit(log_standardise(X, self.center_, self.scale_))
        self.n_features_in_ = X.shape[1]
        return self

    def score_samples(self, X) -> np.ndarray:
        """Distance of each row to its ``n_neighbors``-th nearest training row.

        A training row scored this way counts itself as its nearest neighbour (distance 0); use
        :meth:`score_training_samples` for the training rows.

        Parameters
        ----------
        X : array_like, shape (n_subjects, L)
            Positive score norms.

        Returns
        -------
        ndarray, shape (n_subjects,)
            Anomaly score: higher = more anomalous.
        """
        check_is_fitted(self, "nn_")
        distances, _ = self.nn_.kneighbors(log_standardise(X, self.center_, self.scale_))
        return distances[:, -1]

    def score_training_samples(self) -> np.ndarray:
        """Leave-self-out scores of the training rows: distance to the k-th nearest *other* training row.

        Returns
        -------
        ndarray, shape (n_train,)
            In the order of the rows given to ``fit``. Duplicated rows still count each other (distance 0).
        """
        check_is_fitted(self, "nn_")
        distances, _ = self.nn_.kneighbors()
        return distances[:, -1]
