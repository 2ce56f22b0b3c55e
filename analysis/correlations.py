"""Spearman correlations between ROI anomaly scores and behavioural scores, with permutation p-values.

For every (ROI, behaviour) pair: Spearman's rho on the subjects where both are present (each pair keeps its own
complete cases; pairs with fewer than ``min_complete`` are reported as untestable, never dropped), a two-sided
permutation p-value from permuting the pairing of the two, Benjamini-Hochberg FDR over all testable pairs, and a
max-statistic (maxT) family-wise p-value from the same permutations (dissertation ch. 6.3; DESIGN.md section 4).

Speed: the permutations are random keys, one per subject, sorted once and shared by all pairs (so maxT sees the
dependence between pairs); the key order restricted to a pair's complete cases is its permutation. Pairs with the
same complete cases form one block, whose permuted correlations come from one matrix product of integer-valued
ranks per chunk of permutations; blocks run on parallel threads. With ``P`` permutations the smallest attainable
p-value is ``1 / (P + 1)``; it is returned as ``p_floor``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from threadpoolctl import threadpool_limits


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


def _centred_ranks(values: np.ndarray, covariates: np.ndarray | None = None) -> np.ndarray:
    """Average ranks along axis 0, centred: twice the rank minus (n + 1), an integer for any ties, so products
    of two such columns sum exactly in floating point; with ``covariates`` (n, c), the ranks' least-squares
    residuals on them and an intercept instead (partial Spearman)."""
    ranks = rankdata(values, axis=0)
    if covariates is None:
        return 2.0 * ranks - (len(ranks) + 1.0)
    design = np.column_stack([np.ones(len(ranks)), covariates])
    return ranks - design @ np.linalg.lstsq(design, ranks, rcond=None)[0]


EXACT_FLOAT32_SUBJECTS = 256
"""Up to this many complete cases, sums of products of centred doubled ranks (integers below 2**24) are exact in
float32, so the permuted products run in float32 and tie exactly with the observed ones."""

MAX_THREADS = 4
"""Blocks of pairs run on this many threads at most."""

MAXT_TOLERANCE = 1e-6
"""maxT counts a permutation's largest |rho*| over all pairs as at least a pair's |rho| within this tolerance (the
permuted rho values are rounded in float32)."""

CHUNK_ELEMENTS = 1 << 18
"""Permuted correlations computed at once (permutations x pairs): small enough to stay in cache."""


def spearman_permutation(
    rois: pd.DataFrame,
    behaviour: pd.DataFrame,
    *,
    n_permutations: int = 10_000,
    min_complete: int = 10,
    covariates: pd.DataFrame | None = None,
    random_state: int = 0,
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

    Notes
    -----
    The permutations are ``P`` rows of random keys, one per subject, sorted once: the key order restricted to a
    pair's complete cases is a uniform random permutation of them, the same one ``argsort`` of the restricted keys
    gives, and every pair sees the same keys (so maxT sees the dependence between pairs). Behaviours with the same
    complete cases share one pass; the ranks are integer-valued, so the permuted products are exact (float32 up to
    :data:`EXACT_FLOAT32_SUBJECTS` complete cases, float64 beyond) and ``|rho*| >= |rho|`` counts ties exactly.
    maxT compares rho values of different pairs with a tolerance of :data:`MAXT_TOLERANCE`.
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
    order = np.argsort(keys, axis=1).astype(np.int32)  # (P, n): subjects in key order, one row per permutation
    del keys
    rho = np.full((n_rois, y.shape[1]), np.nan)
    exceed = np.zeros(rho.shape, dtype=np.int64)
    counts = np.zeros(rho.shape, dtype=int)
    blocks = []
    for mask, columns, scores in _complete_blocks(~np.isnan(y), ~np.isnan(x)):
        counts[np.ix_(columns, scores)] = mask.sum()
        if mask.sum() >= min_complete:
            blocks.append((mask, columns, scores))

    def run(block):
        mask, columns, scores = block
        cov = None if z is None else z[mask]
        return _permuted_block(x[mask][:, columns], y[mask][:, scores], cov, mask, order)

    workers = max(1, min(len(blocks), os.cpu_count() or 1, MAX_THREADS))
    # numpy releases the GIL in the heavy steps, so blocks run side by side; each block's products are small, and
    # BLAS threads inside the workers only compete with them (measured: 41 ms with one BLAS thread, 55 ms with two).
    with threadpool_limits(1 if workers > 1 else None), ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(run, blocks))
    max_null = np.zeros(n_permutations)
    for (_, columns, scores), (block_rho, block_exceed, block_max) in zip(blocks, results, strict=True):
        rho[np.ix_(columns, scores)] = block_rho
        exceed[np.ix_(columns, scores)] = block_exceed
        np.maximum(max_null, block_max, out=max_null)
    testable = ~np.isnan(rho)
    p_perm = np.where(testable, (1.0 + exceed) / (n_permutations + 1.0), np.nan)
    sorted_max = np.sort(max_null)
    at_least = n_permutations - np.searchsorted(sorted_max, np.abs(np.nan_to_num(rho)) - MAXT_TOLERANCE, side="left")
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


def _permuted_block(x: np.ndarray, y: np.ndarray, covariates: np.ndarray | None, mask: np.ndarray,
                    order: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Observed rho, exceedance counts and each permutation's largest |rho*| for the pairs of one block.

    ``x`` (m, C) and ``y`` (m, K) hold the block's complete cases (the subjects in ``mask``, in index order);
    ``order`` (P, n) lists all subjects in each permutation's key order. Returns rho (C, K), counts of
    ``|rho*| >= |rho|`` (C, K) and the maximum of |rho*| over the block's pairs per permutation (P,).
    """
    m, n_permutations = len(x), len(order)
    exact = covariates is None and m <= EXACT_FLOAT32_SUBJECTS
    dtype = np.float32 if exact else np.float64
    rx = _centred_ranks(x, covariates)  # (m, C)
    ry = _centred_ranks(y, covariates)  # (m, K)
    observed = rx.T @ ry  # (C, K)
    with np.errstate(divide="ignore"):
        scale = 1.0 / np.outer(np.sqrt((rx**2).sum(axis=0)), np.sqrt((ry**2).sum(axis=0)))
    scale[~np.isfinite(scale)] = 0.0  # a constant column: rho 0, never significant
    threshold = np.abs(observed)
    if not exact:  # residualised ranks are not integers: a tolerance of 1e-12 on rho
        threshold -= 1e-12 / np.where(scale > 0, scale, 1.0)
    n_rois, n_scores = observed.shape
    ry_by_subject = np.zeros((n_scores, mask.size), dtype=dtype)  # (K, n), zero outside the complete cases
    ry_by_subject[:, mask] = ry.T
    rx_t = np.ascontiguousarray(rx.T, dtype=dtype)  # (C, m)
    threshold = threshold.astype(dtype)[:, :, None]
    scale_t = scale.astype(dtype)[:, :, None]
    exceed = np.zeros(observed.shape, dtype=np.int64)
    max_null = np.zeros(n_permutations, dtype=dtype)
    step = max(1, CHUNK_ELEMENTS // (n_rois * n_scores))
    for start in range(0, n_permutations, step):
        rows = order[start : start + step]
        chunk = len(rows)
        picked = rows[np.take(mask, rows)].reshape(chunk, m)  # complete cases in key order
        permuted_y = np.take(ry_by_subject, picked, axis=1)  # (K, chunk, m)
        null = (rx_t @ permuted_y.reshape(n_scores * chunk, m).T).reshape(n_rois, n_scores, chunk)
        np.abs(null, out=null)
        exceed += np.count_nonzero(null >= threshold, axis=2)
        null *= scale_t
        max_null[start : start + step] = null.reshape(-1, chunk).max(axis=0)
    return observed * scale, exceed, max_null


def _complete_blocks(present_y: np.ndarray, present_x: np.ndarray):
    """Group the pairs by their complete cases: ``(mask, roi columns, behaviour columns)`` triples whose pairs all
    have exactly the subjects in ``mask`` (one pass of permutations each)."""
    blocks: dict[tuple[bytes, tuple[int, ...]], list[int]] = {}
    masks: dict[bytes, np.ndarray] = {}
    for k in range(present_y.shape[1]):
        complete = present_x & present_y[:, k][:, None]
        by_mask: dict[bytes, list[int]] = {}
        for column in range(complete.shape[1]):
            key = complete[:, column].tobytes()
            masks.setdefault(key, complete[:, column])
            by_mask.setdefault(key, []).append(column)
        for key, columns in by_mask.items():
            blocks.setdefault((key, tuple(columns)), []).append(k)
    for (key, columns), scores in blocks.items():
        yield masks[key], np.array(columns), np.array(scores)
