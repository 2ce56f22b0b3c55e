"""Spearman correlations between ROI anomaly scores and behavioural scores, with permutation p-values.

For every (ROI, behaviour) pair: Spearman's rho on the subjects where both are present (each pair keeps its own
complete cases; pairs with fewer than ``min_complete`` are reported as untestable, never dropped), a two-sided
permutation p-value from permuting the pairing of the two, Benjamini-Hochberg FDR over all testable pairs, and a
max-statistic (maxT) family-wise p-value from the same permutations (dissertation ch. 6.3).

Speed: the permutations are random keys, one per subject, sorted once and shared by all pairs (so maxT sees the
dependence between pairs); the key order restricted to a pair's complete cases is its permutation. Pairs with the
same complete cases form one block, whose permuted correlations come from one matrix product of integer-valued
ranks; each thread takes a share of the permutations. With ``P`` permutations the smallest attainable
p-value is ``1 / (P + 1)``; it is returned as ``p_floor``.
"""

from __future__ import annotations

import functools
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.stats import rankdata
from threadpoolctl import ThreadpoolController


@dataclass
class CorrelationResult:
    """One row per (ROI, behaviour) pair in ``table``, and the permutation floor."""

    table: pd.DataFrame
    """Columns: roi, behaviour, n (complete cases), rho, p_perm, p_bh, p_maxt, testable."""
    n_permutations: int
    p_floor: float


@dataclass(frozen=True, eq=False)
class PermutationTable:
    """Per-pair permutation counts of ROIs x behaviour scores, from which the correlations of any subset of the
    ROIs are read without permuting again (:meth:`result`).

    Each pair's null distribution depends only on the pair (its complete cases and the shared keys), so a subset's
    p-values, BH adjustment and maxT (through the per-ROI maxima) equal those computed on the subset alone.
    """

    rois: list[str]
    behaviours: list[str]
    n: np.ndarray
    """(R, K) complete cases of each pair."""
    rho: np.ndarray
    """(R, K) Spearman rho; NaN where a pair has fewer than ``min_complete`` complete cases."""
    exceed: np.ndarray
    """(R, K) permutations with ``|rho*| >= |rho|``."""
    roi_max_null: np.ndarray
    """(R, P) per ROI, the largest |rho*| over its behaviour scores in each permutation (float32)."""
    n_permutations: int

    def result(self, rois: list[str] | None = None) -> CorrelationResult:
        """The correlation table of ``rois`` (default all, in table order) x every behaviour score: permutation p,
        BH across the subset's testable pairs, and maxT over the subset's pairs."""
        index = {roi: k for k, roi in enumerate(self.rois)}
        rows = np.arange(len(self.rois)) if rois is None else np.array([index[str(r)] for r in rois], dtype=int)
        rho, exceed, counts = self.rho[rows], self.exceed[rows], self.n[rows]
        p = self.n_permutations
        testable = ~np.isnan(rho)
        p_perm = np.where(testable, (1.0 + exceed) / (p + 1.0), np.nan)
        max_null = self.roi_max_null[rows].max(axis=0) if len(rows) else np.zeros(p, dtype=np.float32)
        sorted_max = np.sort(max_null.astype(np.float64))
        at_least = p - np.searchsorted(sorted_max, np.abs(np.nan_to_num(rho)) - MAXT_TOLERANCE, side="left")
        p_maxt = np.where(testable, (1.0 + at_least) / (p + 1.0), np.nan)
        p_bh = benjamini_hochberg(p_perm.ravel()).reshape(p_perm.shape)
        names = np.array(self.rois, dtype=object)[rows]
        roi_names, score_names = np.meshgrid(names, np.array(self.behaviours, dtype=object), indexing="ij")
        table = pd.DataFrame(
            {
                "roi": roi_names.ravel().astype(str),
                "behaviour": score_names.ravel().astype(str),
                "n": counts.ravel(),
                "rho": rho.ravel(),
                "p_perm": p_perm.ravel(),
                "p_bh": p_bh.ravel(),
                "p_maxt": p_maxt.ravel(),
                "testable": testable.ravel(),
            }
        )
        return CorrelationResult(table=table, n_permutations=p, p_floor=1.0 / (p + 1))


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

CHUNK_ELEMENTS = 1 << 21
"""Permuted correlations (permutations x pairs of a block) computed at once, at most."""


def permutation_table(
    rois: pd.DataFrame,
    behaviour: pd.DataFrame,
    *,
    n_permutations: int = 10_000,
    min_complete: int = 10,
    covariates: pd.DataFrame | None = None,
    random_state: int = 0,
) -> PermutationTable:
    """Spearman rho and permutation counts for every (ROI, behaviour) pair.

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
    order = _key_order(n_permutations, n, random_state)
    rho = np.full((n_rois, y.shape[1]), np.nan)
    exceed = np.zeros(rho.shape, dtype=np.int64)
    counts = np.zeros(rho.shape, dtype=int)
    blocks = []
    for mask, columns, scores in _complete_blocks(~np.isnan(y), ~np.isnan(x)):
        counts[np.ix_(columns, scores)] = mask.sum()
        if mask.sum() >= min_complete:
            blocks.append((mask, columns, scores))

    ranker = _BlockRanks(x, y, z)
    prepared = [_Block(*ranker(mask, columns, scores), mask, exact=z is None and mask.sum() <= EXACT_FLOAT32_SUBJECTS)
                for mask, columns, scores in blocks]
    for (_, columns, scores), block in zip(blocks, prepared, strict=True):
        rho[np.ix_(columns, scores)] = block.rho
    roi_max_null = np.zeros((n_rois, n_permutations), dtype=np.float32)
    workers = max(1, min(n_permutations, len(os.sched_getaffinity(0)), MAX_THREADS))
    starts = range(0, n_permutations, -(-n_permutations // workers))  # one share of the permutations per worker

    def run(start: int) -> list[np.ndarray]:
        share = order[start : start + starts.step]
        exceeding = [np.zeros(block.shape, dtype=np.int64) for block in prepared]
        for (_, columns, _), block, block_counts in zip(blocks, prepared, exceeding, strict=True):
            step = max(1, CHUNK_ELEMENTS // (block.shape[0] * block.shape[1]))
            for offset in range(0, len(share), step):
                block_exceed, block_max = block.permute(share[offset : offset + step])
                block_counts += block_exceed
                where = (columns, slice(start + offset, start + offset + block_max.shape[1]))
                roi_max_null[where] = np.maximum(roi_max_null[where], block_max)
        return exceeding

    # numpy releases the GIL in the heavy steps, so the shares of the permutations run side by side (each writes its
    # own permutations of roi_max_null); each product is small, and BLAS threads inside the workers would only
    # compete with them (measured on 2 cores: 33 ms with one share per worker, 35-41 ms with more, smaller shares).
    with _blas().limit(limits=1 if workers > 1 else None), ThreadPoolExecutor(max_workers=workers) as pool:
        for exceeding in pool.map(run, starts if prepared else []):
            for (_, columns, scores), block_exceed in zip(blocks, exceeding, strict=True):
                exceed[np.ix_(columns, scores)] += block_exceed
    return PermutationTable(
        rois=[str(r) for r in rois.columns], behaviours=[str(b) for b in behaviour.columns], n=counts, rho=rho,
        exceed=exceed, roi_max_null=roi_max_null, n_permutations=n_permutations,
    )


def spearman_permutation(rois: pd.DataFrame, behaviour: pd.DataFrame, **options) -> CorrelationResult:
    """Spearman rho and permutation p-values for every (ROI, behaviour) pair: :func:`permutation_table` (same
    arguments) read for all its ROIs."""
    return permutation_table(rois, behaviour, **options).result()


class _BlockRanks:
    """The centred ranks of a block's ROI and behaviour values over its complete cases (:func:`_centred_ranks`).

    Without covariates and without missing ROI values (the usual case), every column is ranked once over all its
    subjects, and a block's ranks follow by discounting the few subjects it leaves out: an average rank over a
    subset is the rank over the whole minus the left-out values below it (and half of those equal to it). Otherwise
    each block is ranked afresh.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray, covariates: np.ndarray | None):
        self.x, self.y, self.covariates = x, y, covariates
        self.shortcut = covariates is None and not np.isnan(x).any()
        if self.shortcut:
            self.x_ranks = rankdata(x, axis=0)
            self.y_ranks = rankdata(y, axis=0, nan_policy="omit")  # among each score's present subjects

    def __call__(self, mask: np.ndarray, columns: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``rx`` (m, C) and ``ry`` (m, K) of the subjects in ``mask``, in index order."""
        m = int(mask.sum())
        if not self.shortcut:
            cov = None if self.covariates is None else self.covariates[mask]
            return (_centred_ranks(self.x[mask][:, columns], cov), _centred_ranks(self.y[mask][:, scores], cov))
        x_in, x_out = self.x[mask][:, columns], self.x[~mask][:, columns]  # (m, C), (e, C)
        below = (x_out[None, :, :] < x_in[:, None, :]).sum(axis=1) + 0.5 * (x_out[None, :, :] == x_in[:, None, :]).sum(
            axis=1)
        rx = 2.0 * (self.x_ranks[mask][:, columns] - below) - (m + 1.0)
        ry = 2.0 * self.y_ranks[mask][:, scores] - (m + 1.0)  # x is complete: the block's cases are y's own
        return rx, ry


class _Block:
    """The pairs of one block: their complete cases ``mask`` (n,) and the centred ranks ``rx`` (m, C) of the ROI
    and ``ry`` (m, K) of the behaviour values of those subjects in index order; :meth:`permute` counts, for a chunk
    of permutations, how often ``|rho*| >= |rho|`` and the largest |rho*| of each permutation. ``exact``: the ranks
    are integers whose products float32 sums exactly."""

    def __init__(self, rx: np.ndarray, ry: np.ndarray, mask: np.ndarray, exact: bool):
        self.m, self.mask = len(rx), mask
        dtype = np.float32 if exact else np.float64
        observed = rx.T @ ry  # (C, K)
        with np.errstate(divide="ignore"):
            scale = 1.0 / np.outer(np.sqrt((rx**2).sum(axis=0)), np.sqrt((ry**2).sum(axis=0)))
        scale[~np.isfinite(scale)] = 0.0  # a constant column: rho 0, never significant
        self.rho = observed * scale
        threshold = np.abs(observed)
        if not exact:  # residualised ranks are not integers: a tolerance of 1e-12 on rho
            threshold -= 1e-12 / np.where(scale > 0, scale, 1.0)
        self.shape = observed.shape
        self.ry_by_subject = np.full((ry.shape[1], mask.size), np.nan, dtype=dtype)  # (K, n), NaN outside
        self.ry_by_subject[:, mask] = ry.T
        self.rx_t = np.ascontiguousarray(rx.T, dtype=dtype)  # (C, m)
        self.threshold = threshold.astype(dtype)[:, :, None]
        self.scale = scale.astype(dtype)[:, :, None]

    def permute(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``rows`` (chunk, n): all subjects in each permutation's key order. Returns the exceedance counts (C, K)
        and, per ROI of the block, the largest |rho*| over its behaviour scores in each permutation (C, chunk)."""
        n_rois, n_scores = self.shape
        chunk, m = len(rows), self.m
        if n_scores == 1:  # every subject's rank in key order, then the complete cases (NaN marks the others)
            permuted_y = np.take(self.ry_by_subject[0], rows)
            permuted_y = permuted_y[permuted_y == permuted_y]
        else:  # the complete cases in key order, then their ranks
            permuted_y = np.take(self.ry_by_subject, rows[np.take(self.mask, rows)], axis=1)
        null = (self.rx_t @ permuted_y.reshape(n_scores * chunk, m).T).reshape(n_rois, n_scores, chunk)
        np.abs(null, out=null)
        counts = np.count_nonzero(null >= self.threshold, axis=2)
        null *= self.scale
        return counts, null.max(axis=1)


KEY_ROWS = 1 << 14
"""Permutations whose random keys are drawn and sorted at once (the keys of all of them are never held together)."""

SMALL_ORDER = 1 << 23
"""Up to this many permutations x subjects the key order is kept as intp (no index casts when gathering); beyond,
as int32, which halves its memory (100,000 permutations of 700 subjects: 280 MB)."""


def _key_order(n_permutations: int, n: int, random_state: int) -> np.ndarray:
    """(P, n): the subjects in the order of P rows of uniform random keys, drawn from ``random_state`` in row
    order (the same keys as one draw of shape (P, n)), each subject's key sorted once."""
    rng = np.random.default_rng(random_state)
    order = np.empty((n_permutations, n), dtype=np.intp if n_permutations * n <= SMALL_ORDER else np.int32)
    for start in range(0, n_permutations, KEY_ROWS):
        stop = min(start + KEY_ROWS, n_permutations)
        order[start:stop] = np.argsort(rng.random((stop - start, n)), axis=1)
    return order


@functools.cache
def _blas() -> ThreadpoolController:
    """The process's BLAS and OpenMP libraries, found once (a search of the loaded libraries costs milliseconds)."""
    return ThreadpoolController()


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
