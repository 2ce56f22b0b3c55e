"""Out-of-distribution detection metrics (dissertation ch. 3.3).

Conventions shared by every function here:

- ``inlier_scores`` (shape ``(n_inliers,)``) and ``outlier_scores`` (shape ``(n_outliers,)``) are anomaly scores;
  a higher score means more anomalous.
- In-distribution samples are the **positive** class. A threshold ``t`` accepts a sample as an inlier when its
  score is ``<= t`` (equivalently, the decision value ``-score`` is ``>= -t``, as in :func:`sklearn.metrics.roc_curve`
  with ``y_score = -score``).
- TPR is the fraction of inliers accepted, FPR the fraction of outliers accepted (wrongly, as inliers).

The ROC and precision-recall points are computed here with numpy over every distinct score value, without
interpolation, so they agree with :func:`sklearn.metrics.roc_curve` (``drop_intermediate=False``),
:func:`sklearn.metrics.roc_auc_score` and :func:`sklearn.metrics.average_precision_score`.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata

__all__ = [
    "aupr_in",
    "aupr_out",
    "auroc",
    "auroc_standard_error",
    "detection_error",
    "detection_metrics",
    "fpr_at_tpr",
]


def _check_scores(values, name: str) -> np.ndarray:
    """Return ``values`` as a finite, non-empty 1-D float array, or raise ValueError naming ``name``."""
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a 1-D array of numbers; could not convert it to float ({error})") from None
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of scores; received an array of shape {array.shape}")
    if array.size == 0:
        raise ValueError(f"{name} must hold at least one score; received an empty array")
    bad = ~np.isfinite(array)
    if bad.any():
        first = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"{name} must hold finite scores; received {int(bad.sum())} non-finite value(s), "
            f"the first at position {first} ({array[first]})"
        )
    return array


def _check_pair(inlier_scores, outlier_scores) -> tuple[np.ndarray, np.ndarray]:
    return _check_scores(inlier_scores, "inlier_scores"), _check_scores(outlier_scores, "outlier_scores")


def _curve(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """True- and false-positive counts at every distinct decision value, strictest threshold first.

    Parameters
    ----------
    positive, negative : ndarray, shapes (n_pos,) and (n_neg,)
        Decision values (higher = more positive) of the positive and negative samples.

    Returns
    -------
    tp, fp : ndarray of int, shape (n_thresholds,)
        ``tp[i]`` positives and ``fp[i]`` negatives have a decision value ``>= thresholds[i]``, with thresholds the
        distinct decision values in decreasing order. The trivial point (0, 0) is not included.
    """
    thresholds = np.unique(np.concatenate([positive, negative]))[::-1]
    tp = positive.size - np.searchsorted(np.sort(positive), thresholds, side="left")
    fp = negative.size - np.searchsorted(np.sort(negative), thresholds, side="left")
    return tp, fp


def _roc(inliers: np.ndarray, outliers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC points ``(fpr, tpr)`` with inliers positive and decision value ``-score``, starting at (0, 0).

    Returns
    -------
    fpr, tpr : ndarray, shape (n_distinct_scores + 1,)
        Non-decreasing; the last point is (1, 1).
    """
    tp, fp = _curve(-inliers, -outliers)
    return np.r_[0.0, fp / outliers.size], np.r_[0.0, tp / inliers.size]


def fpr_at_tpr(inlier_scores, outlier_scores, tpr: float = 0.95) -> float:
    """False-positive rate at the strictest threshold whose true-positive rate reaches ``tpr``.

    The score threshold ``t`` accepts samples with ``score <= t`` as inliers. Among the ROC points (one per distinct
    score, as :func:`sklearn.metrics.roc_curve` with positive = inlier, ``y_score = -score`` and
    ``drop_intermediate=False`` lists them), the first one, i.e. the smallest ``t``, with TPR ``>= tpr`` is taken,
    and its FPR is returned as is: there is no interpolation between ROC points.

    Parameters
    ----------
    inlier_scores : array_like, shape (n_inliers,)
        Anomaly scores of in-distribution samples (the positive class).
    outlier_scores : array_like, shape (n_outliers,)
        Anomaly scores of out-of-distribution samples.
    tpr : float, default 0.95
        Target true-positive rate, in (0, 1].

    Returns
    -------
    float
        Fraction of outliers with ``score <= t`` at that threshold.
    """
    inliers, outliers = _check_pair(inlier_scores, outlier_scores)
    if not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be in (0, 1]; received {tpr!r}")
    fpr_points, tpr_points = _roc(inliers, outliers)
    # The last ROC point has TPR exactly 1.0, so some point always reaches the target.
    return float(fpr_points[np.argmax(tpr_points >= tpr)])


def detection_error(inlier_scores, outlier_scores) -> float:
    """Minimum over thresholds of ``0.5 * (1 - TPR) + 0.5 * FPR``.

    The misclassification probability of the best threshold when inliers and outliers are equally likely. The
    thresholds are every distinct score plus the one that accepts nothing (error 0.5), so the result is in
    [0, 0.5].

    Parameters
    ----------
    inlier_scores : array_like, shape (n_inliers,)
    outlier_scores : array_like, shape (n_outliers,)

    Returns
    -------
    float
    """
    inliers, outliers = _check_pair(inlier_scores, outlier_scores)
    fpr_points, tpr_points = _roc(inliers, outliers)
    return float(np.min(0.5 * (1.0 - tpr_points) + 0.5 * fpr_points))


def auroc(inlier_scores, outlier_scores) -> float:
    """Area under the ROC curve with inliers positive and decision value ``-score``.

    Equal to the probability that a random outlier scores higher than a random inlier, ties counting 1/2: the
    Mann-Whitney U statistic of the outlier scores divided by ``n_inliers * n_outliers``.

    Parameters
    ----------
    inlier_scores : array_like, shape (n_inliers,)
    outlier_scores : array_like, shape (n_outliers,)

    Returns
    -------
    float
        In [0, 1]; 1 when every outlier scores above every inlier, 0.5 for uninformative scores.
    """
    inliers, outliers = _check_pair(inlier_scores, outlier_scores)
    ranks = rankdata(np.concatenate([inliers, outliers]))  # average ranks for ties
    n_in, n_out = inliers.size, outliers.size
    u_outliers = ranks[n_in:].sum() - n_out * (n_out + 1) / 2.0
    return float(u_outliers / (n_in * n_out))


def auroc_standard_error(auc: float, n_inliers: int, n_outliers: int) -> float:
    """Standard error of an AUROC (Hanley and McNeil, Radiology 143 (1982) 29-36, eq. 2).

    ``sqrt((A(1-A) + (n_in-1)(Q1-A^2) + (n_out-1)(Q2-A^2)) / (n_in n_out))`` with ``Q1 = A/(2-A)`` and
    ``Q2 = 2A^2/(1+A)``: how far an AUROC of a few dozen subjects can move by chance (0.045 for A = 0.8 and 50
    subjects in each group, as in the paper's table).
    """
    if not (0.0 <= auc <= 1.0) or n_inliers < 1 or n_outliers < 1:
        raise ValueError(f"expected an AUROC in [0, 1] and counts >= 1, got {auc}, {n_inliers}, {n_outliers}")
    q1, q2 = auc / (2.0 - auc), 2.0 * auc**2 / (1.0 + auc)
    variance = auc * (1 - auc) + (n_inliers - 1) * (q1 - auc**2) + (n_outliers - 1) * (q2 - auc**2)
    return float(np.sqrt(max(variance, 0.0) / (n_inliers * n_outliers)))


def _average_precision(positive: np.ndarray, negative: np.ndarray) -> float:
    """``sum_k (R_k - R_{k-1}) P_k`` over distinct decision values (higher = more positive), as sklearn defines it."""
    tp, fp = _curve(positive, negative)
    precision = tp / (tp + fp)
    recall = tp / positive.size
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def aupr_in(inlier_scores, outlier_scores) -> float:
    """Average precision with inliers as the positive class (decision value ``-score``).

    Same definition as :func:`sklearn.metrics.average_precision_score`: ``sum_k (R_k - R_{k-1}) P_k`` over the
    distinct thresholds, without interpolation.

    Parameters
    ----------
    inlier_scores : array_like, shape (n_inliers,)
    outlier_scores : array_like, shape (n_outliers,)

    Returns
    -------
    float
        In (0, 1]; its chance level is ``n_inliers / (n_inliers + n_outliers)``.
    """
    inliers, outliers = _check_pair(inlier_scores, outlier_scores)
    return _average_precision(-inliers, -outliers)


def aupr_out(inlier_scores, outlier_scores) -> float:
    """Average precision with outliers as the positive class (decision value ``+score``).

    Parameters
    ----------
    inlier_scores : array_like, shape (n_inliers,)
    outlier_scores : array_like, shape (n_outliers,)

    Returns
    -------
    float
        In (0, 1]; its chance level is ``n_outliers / (n_inliers + n_outliers)``.
    """
    inliers, outliers = _check_pair(inlier_scores, outlier_scores)
    return _average_precision(outliers, inliers)


def detection_metrics(inlier_scores, outlier_scores) -> dict[str, float | int]:
    """Every metric of this module for one pair of score arrays.

    Parameters
    ----------
    inlier_scores : array_like, shape (n_inliers,)
    outlier_scores : array_like, shape (n_outliers,)

    Returns
    -------
    dict
        ``fpr_at_95_tpr``, ``detection_error``, ``auroc``, ``auroc_se`` (its Hanley-McNeil standard error),
        ``aupr_in``, ``aupr_out`` (Python floats) and ``n_inliers``, ``n_outliers`` (Python ints).
    """
    inliers, outliers = _check_pair(inlier_scores, outlier_scores)
    area = auroc(inliers, outliers)
    return {
        "fpr_at_95_tpr": fpr_at_tpr(inliers, outliers, 0.95),
        "detection_error": detection_error(inliers, outliers),
        "auroc": area,
        "auroc_se": auroc_standard_error(area, inliers.size, outliers.size),
        "aupr_in": aupr_in(inliers, outliers),
        "aupr_out": aupr_out(inliers, outliers),
        "n_inliers": int(inliers.size),
        "n_outliers": int(outliers.size),
    }
