"""Spearman correlations between ROI anomaly scores and behavioural scores, with permutation p-values.

For every (ROI, behaviour) pair: Spearman's rho on the subjects where both are present (each pair keeps its own
complete cases; pairs with fewer than ``min_complete`` are reported as untestable, never dropped), a two-sided
permutation p-value from permuting the pairing of the two, Benjamini-Hochberg FDR over all testable pairs, and a
max-statistic (maxT) family-wise p-value from the same permutations (dissertation ch. 6.3; DESIGN.md section 4).

Speed: the data are ranked once per behaviour; the permutations are random keys shared by all pairs (so maxT sees
the dependence between pairs), turned into a permutation of each behaviour's complete cases by sorting, and the
permuted correlations of all ROIs come from one matrix product per chunk of permutations. With ``P``
permutations the smallest attainable p-value is ``1 / (P + 1)``; it is returned as ``p_floor``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata


@dataclass
class CorrelationResult:
    """One row per (ROI, behaviour) pair in ``table``, and the permutation floor."""

    table: pd.DataFrame
    """Columns: roi, behaviour, n (complete cases), rho, p_perm, p_bh, p_maxt, testable."""
    n_permutations: int
    p_floor: float


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """BH-adjusted p-values (step-up, monotone, capped at 1); NaN entries stay NaN and are not counted."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    if valid.size == 0:
        return out
    order = valid[np.argsort(p[valid], kind="mergesort")]
    m = order.size
    scaled = p[order] * m / np.arange(1, m + 1)
    out[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    return out


def _standardised_ranks(values: np.ndarray, covariates: np.ndarray | None = None) -> np.ndarray:
    """Average ranks along axis 0, centred (or, with ``covariates`` (n, c), residualised on them by least squares)
    and scaled so that the dot product of two columns / n is Pearson's r of the (residual) ranks."""
    ranks = rankdata(values, axis=0)
    if covariates is None:
        ranks = ranks - ranks.mean(axis=0)
    else:
        design = np.column_stack([np.ones(len(ranks)), covariates])
        ranks = ranks - design @ np.linalg.lstsq(design, ranks, rcond=None)[0]
    norm = np.sqrt((ranks**2).mean(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, ranks / norm, 0.0)


def spearman_permutation(
    rois: pd.DataFrame,
    behaviour: pd.DataFrame,
    *,
    n_permutations: int = 10_000,
    min_complete: int = 10,
    covariates: pd.DataFrame | None = None,
    random_state: int = 0,
    chunk_size: int = 2_000,
) -> CorrelationResult:
    """Spearman rho and permutation p-values for every (ROI, behaviour) pair.

    Parameters
    ----------
    rois : DataFrame (subjects x ROIs)
        ROI anomaly scores; NaN = missing.
    behaviour : DataFrame (subjects x scores), same index as ``rois`` (rows are aligned by index)
        Behavioural scores; NaN = missing.
    n_permutations : int
        Permutations P of the pairing; p-values are ``(1 + #{|rho*| >= |rho|}) / (P + 1)``.
    min_complete : int
        Pairs with fewer complete cases are reported with ``testable = False`` and NaN p-values.
    covariates : DataFrame (subjects x c), optional
        Numeric covariates (e.g. age, sex coded 0/1) for partial Spearman correlations: the ranks of both variables
        are residualised on them (with an intercept) before correlating; subjects missing a covariate are left out.
        Permutations then permute the behaviour's residual ranks.
    """
    if n_permutations < 1 or min_complete < 3:
        raise ValueError(f"expected n_permutations >= 1 and min_complete >= 3, got {n_permutations}, {min_complete}")
    if not rois.index.equals(behaviour.index):
        behaviour = behaviour.reindex(rois.index)
    x = rois.to_numpy(dtype=float)
    y = behaviour.to_numpy(dtype=float)
    n, n_rois = x.shape
    z = None if covariates is None else covariates.reindex(rois.index).to_numpy(dtype=float)
    if z is not None:
        y = np.where(np.isnan(z).any(axis=1)[:, None], np.nan, y)
    keys = np.random.default_rng(random_state).random((n_permutations, n))
    rho = np.full((n_rois, y.shape[1]), np.nan)
    exceed = np.zeros_like(rho)
    counts = np.zeros(rho.shape, dtype=int)
    max_null = np.zeros(n_permutations)
    for k in range(y.shape[1]):
        present_y = ~np.isnan(y[:, k])
        for mask, columns in _complete_groups(present_y, ~np.isnan(x)):
            counts[columns, k] = mask.sum()
            if mask.sum() < min_complete:
                continue
            cov = None if z is None else z[mask]
            rx = _standardised_ranks(x[mask][:, columns], cov)
            ry = _standardised_ranks(y[mask, k], cov)
            m = int(mask.sum())
            observed = ry @ rx / m
            rho[columns, k] = observed
            sub_keys = keys[:, mask]
            for start in range(0, n_permutations, chunk_size):
                order = np.argsort(sub_keys[start : start + chunk_size], axis=1)
                null = np.abs(ry[order] @ rx / m)  # (chunk, ROIs)
                exceed[columns, k] += (null >= np.abs(observed) - 1e-12).sum(axis=0)
                block = max_null[start : start + chunk_size]
                np.maximum(block, null.max(axis=1), out=block)
    testable = ~np.isnan(rho)
    p_perm = np.where(testable, (1.0 + exceed) / (n_permutations + 1.0), np.nan)
    sorted_max = np.sort(max_null)
    at_least = n_permutations - np.searchsorted(sorted_max, np.abs(np.nan_to_num(rho)) - 1e-12, side="left")
    p_maxt = np.where(testable, (1.0 + at_least) / (n_permutations + 1.0), np.nan)
    p_bh = benjamini_hochberg(p_perm.ravel()).reshape(p_perm.shape)
    roi_names, score_names = np.meshgrid(rois.columns.astype(str), behaviour.columns.astype(str), indexing="ij")
    table = pd.DataFrame(
        {
            "roi": roi_names.ravel(),
            "behaviour": score_names.ravel(),
            "n": counts.ravel(),
            "rho": rho.ravel(),
            "p_perm": p_perm.ravel(),
            "p_bh": p_bh.ravel(),
            "p_maxt": p_maxt.ravel(),
            "testable": testable.ravel(),
        }
    )
    return CorrelationResult(table=table, n_permutations=n_permutations, p_floor=1.0 / (n_permutations + 1))


def _complete_groups(present_y: np.ndarray, present_x: np.ndarray):
    """Group the ROI columns by their set of complete cases with one behaviour column: (mask, columns) pairs."""
    complete = present_x & present_y[:, None]
    patterns: dict[bytes, list[int]] = {}
    for column in range(complete.shape[1]):
        patterns.setdefault(complete[:, column].tobytes(), []).append(column)
    for columns in patterns.values():
        yield complete[:, columns[0]], np.array(columns)
