"""The tabular benchmark's protocol (dissertation ch. 4.3, the GNSM paper's section 5): split the inliers 80/10/10
into train, validation and test; the test rows are the test inliers and every anomaly; detectors are fitted on the
train inliers only (the validation inliers serve early stopping) and scored on the test rows by average precision,
higher scores meaning more anomalous; each result is repeated over seeds and reported as mean and SD.

Because the test set holds a tenth of the inliers and all the anomalies, its anomaly ratio is far above the
table's: 200 anomalies among 4,000 inliers (4.8 %) make a test set of 400 inliers and 200 anomalies (33 %), the
chance-level AP.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score

from analysis.checks import check_same_shape

__all__ = ["FRACTIONS", "Split", "average_precision", "split", "summarise"]

FRACTIONS = (0.8, 0.1, 0.1)  # train, validation, test shares of the inliers


@dataclass(frozen=True, eq=False)
class Split:
    """Row indices (sorted, int64) into the table: ``train`` and ``val`` hold inliers only, ``test`` the remaining
    inliers and every anomaly. The three are disjoint and together cover every row."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def split(is_anomaly, seed: int) -> Split:
    """Split the inliers at random 80/10/10 (train and validation rounded half up to whole rows, test the rest) with a
    generator seeded by ``seed``; the test rows add every anomaly. No stratification."""
    is_anomaly = np.asarray(is_anomaly)
    if is_anomaly.dtype != bool or is_anomaly.ndim != 1:
        raise ValueError(f"is_anomaly must be a 1-D boolean array; received dtype {is_anomaly.dtype}, "
                         f"shape {is_anomaly.shape}")
    inliers = np.flatnonzero(~is_anomaly)
    n_train = int(np.floor(FRACTIONS[0] * len(inliers) + 0.5))
    n_val = int(np.floor(FRACTIONS[1] * len(inliers) + 0.5))
    if n_train < 1 or n_val < 1 or len(inliers) - n_train - n_val < 1:
        raise ValueError(f"need enough inliers for non-empty train, validation and test sets; received {len(inliers)}")
    shuffled = np.random.default_rng(seed).permutation(inliers)
    test = np.concatenate([shuffled[n_train + n_val:], np.flatnonzero(is_anomaly)])
    return Split(
        train=np.sort(shuffled[:n_train]).astype(np.int64),
        val=np.sort(shuffled[n_train:n_train + n_val]).astype(np.int64),
        test=np.sort(test).astype(np.int64),
    )


def average_precision(scores, is_anomaly) -> float:
    """Average precision of ``scores`` (higher = more anomalous) against the labels, by scikit-learn's
    ``average_precision_score`` (the step-wise area under the precision-recall curve, anomalies the positive
    class). Between 0 and 1; chance is the anomaly ratio."""
    scores = np.asarray(scores, dtype=np.float64)
    is_anomaly = np.asarray(is_anomaly)
    check_same_shape(scores, is_anomaly, "scores", "is_anomaly")
    if is_anomaly.dtype != bool or scores.ndim != 1:
        raise ValueError("scores and is_anomaly must be 1-D, is_anomaly boolean")
    if not np.isfinite(scores).all():
        raise ValueError("scores must be finite")
    if is_anomaly.all() or not is_anomaly.any():
        raise ValueError("average precision needs both anomalies and inliers among the scored rows")
    return float(average_precision_score(is_anomaly, scores))


def summarise(results: Iterable[Mapping] | pd.DataFrame, value: str = "ap") -> pd.DataFrame:
    """Mean and SD over seeds of ``value`` per (data set, method).

    ``results`` has one record per run with at least the keys ``dataset``, ``method``, ``seed`` and ``value``; each
    (dataset, method, seed) must appear once. Returns a frame indexed by (dataset, method), in order of first
    appearance, with columns ``mean``, ``sd`` (the sample SD, ddof=1; 0 for a single seed) and ``n_seeds``.
    """
    frame = pd.DataFrame(results) if not isinstance(results, pd.DataFrame) else results
    missing = {"dataset", "method", "seed", value} - set(frame.columns)
    if missing:
        raise ValueError(f"results lack the keys {sorted(missing)}")
    if frame.duplicated(["dataset", "method", "seed"]).any():
        raise ValueError("each (dataset, method, seed) must appear once in results")
    grouped = frame.groupby(["dataset", "method"], sort=False)[value]
    summary = pd.DataFrame({"mean": grouped.mean(), "sd": grouped.std(ddof=1).fillna(0.0), "n_seeds": grouped.size()})
    return summary
