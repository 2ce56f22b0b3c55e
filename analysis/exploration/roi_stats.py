"""ROI anomaly scores, and which brain regions make a cohort's prototype atypical (dissertation ch. 6.3, fig. 6.4
and 6.7).

0. :func:`roi_scores`: the mean Spatial-MSMA heatmap value inside each atlas label, per subject, and
   :func:`percentile_of_reference`: where each score falls among the reference cohort's scores of that ROI.

1. :func:`atypical_rois`: keep the ROIs whose mean anomaly score in the cohort exceeds the reference cohort's 90th
   percentile of that ROI (the red dashed line of the box plots).
2. :func:`prototype_vs_rest`: for each kept ROI, a two-sided Mann-Whitney U test between the cohort's prototype
   members and its other members, with raw, Bonferroni and Benjamini-Hochberg p-values (over the kept ROIs) and the
   rank-biserial correlation as effect size (+1: every prototype member scores above every other member).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.stats import mannwhitneyu

from analysis.exploration.correlations import benjamini_hochberg


def roi_scores(heatmaps: np.ndarray, labels: np.ndarray, label_names: pd.DataFrame, subject_ids) -> pd.DataFrame:
    """Mean heatmap value inside each atlas label.

    Parameters
    ----------
    heatmaps : array (n_subjects, n_brain_voxels)
        Per-voxel anomaly scores inside the brain mask.
    labels : int array (n_brain_voxels,)
        The atlas label of each brain voxel (0 = unlabelled).
    label_names : DataFrame with columns ``index``, ``name``
    subject_ids : sequence of n_subjects ids

    Returns
    -------
    DataFrame indexed by subject id, one column per named label with at least one brain voxel (in label order);
    labels that share a name are told apart as ``"name (index)"``.
    """
    heatmaps = np.asarray(heatmaps, dtype=np.float64)
    labels = np.asarray(labels).ravel()
    if heatmaps.ndim != 2 or heatmaps.shape[1] != labels.size:
        raise ValueError(f"heatmaps must have shape (subjects, {labels.size} brain voxels); got {heatmaps.shape}")
    columns = {
        column: heatmaps[:, labels == index].mean(axis=1)
        for column, index in roi_columns(label_names, np.unique(labels)).items()
    }
    return pd.DataFrame(columns, index=pd.Index(list(subject_ids), name="subject_id"))


def roi_columns(label_names: pd.DataFrame, present) -> dict[str, int]:
    """ROI column name -> atlas label index, for the named labels in ``present``, in label order.

    A column is the label's name; labels that share a name keep apart as ``"name (index)"``.
    """
    present = {int(v) for v in np.asarray(present).ravel()}
    repeated = set(label_names["name"][label_names["name"].duplicated()].astype(str))
    return {
        f"{name} ({index})" if str(name) in repeated else str(name): int(index)
        for index, name in zip(label_names["index"], label_names["name"], strict=True)
        if int(index) in present
    }


def percentile_of_reference(scores: pd.DataFrame, reference_ids: Sequence) -> pd.DataFrame:
    """Per subject and ROI, the percentage of reference subjects scoring at or below the subject's score.

    Equal to ``scipy.stats.percentileofscore(reference, score, kind="weak")`` ROI by ROI; NaN scores stay NaN and
    NaN reference scores are left out.
    """
    reference = scores.loc[list(reference_ids)].to_numpy(dtype=float)
    values = scores.to_numpy(dtype=float)
    out = np.full(values.shape, np.nan)
    for j in range(values.shape[1]):
        ref = np.sort(reference[:, j][~np.isnan(reference[:, j])])
        if ref.size == 0:
            continue
        finite = ~np.isnan(values[:, j])
        out[finite, j] = 100.0 * np.searchsorted(ref, values[finite, j], side="right") / ref.size
    return pd.DataFrame(out, index=scores.index, columns=scores.columns)


def percentile_reference(ids: Sequence, cohorts: Sequence, trained_ids: Sequence, reference_cohort: str) -> list:
    """The subjects whose ROI scores set the reference percentiles: the reference cohort's subjects that the models
    did not train on (val and test), or the whole reference cohort when every one of them trained.

    ``ids`` and ``cohorts`` run in parallel; the result keeps the order of ``ids``."""
    trained = set(trained_ids)
    reference = [i for i, c in zip(ids, cohorts, strict=True) if c == reference_cohort]
    return [i for i in reference if i not in trained] or reference


def column_nanpercentile(values: np.ndarray, percentile: float) -> np.ndarray:
    """``np.nanpercentile(values, percentile, axis=0)`` (linear interpolation) for a 2-D array, vectorised: numpy
    falls back to one Python-level call per column as soon as one value is NaN (a fifth of a selection change's
    time in the explorer). NaN for a column without values."""
    values = np.asarray(values, dtype=float)
    ordered = np.sort(values, axis=0)  # NaN sorts last
    count = (~np.isnan(values)).sum(axis=0)
    position = (np.maximum(count, 1) - 1) * (percentile / 100.0)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, np.maximum(count - 1, 0))
    columns = np.arange(values.shape[1])
    fraction = position - low
    result = ordered[low, columns] * (1 - fraction) + ordered[high, columns] * fraction
    result[fraction == 0] = ordered[low, columns][fraction == 0]
    result[count == 0] = np.nan
    return result


def reference_percentile(roi_scores: pd.DataFrame, reference_ids: Sequence, percentile: float = 90.0) -> pd.Series:
    """Per ROI, the ``percentile`` of the reference subjects' scores (NaN ignored)."""
    reference = roi_scores.loc[list(reference_ids)]
    return pd.Series(column_nanpercentile(reference.to_numpy(dtype=float), percentile), index=roi_scores.columns)


def atypical_rois(
    roi_scores: pd.DataFrame, reference_ids: Sequence, cohort_ids: Sequence, percentile: float = 90.0
) -> list[str]:
    """ROIs whose mean score over ``cohort_ids`` exceeds the reference ``percentile`` (higher = more anomalous)."""
    threshold = reference_percentile(roi_scores, reference_ids, percentile)
    cohort_mean = roi_scores.loc[list(cohort_ids)].mean(axis=0)
    return [str(roi) for roi in roi_scores.columns if cohort_mean[roi] > threshold[roi]]


def prototype_vs_rest(
    roi_scores: pd.DataFrame,
    prototype_ids: Sequence,
    rest_ids: Sequence,
    rois: Sequence[str] | None = None,
    reference_ids: Sequence | None = None,
) -> pd.DataFrame:
    """Mann-Whitney U of prototype vs other cohort members for each ROI, with corrections and effect size.

    Returns one row per ROI, sorted by raw p-value: roi, n_prototype, n_rest, median_prototype, median_rest,
    u (the prototype group's U), rank_biserial, p_raw, p_bonferroni, p_bh and, with ``reference_ids``, the
    reference 90th percentile ``reference_p90``.
    """
    prototype, rest = list(prototype_ids), list(rest_ids)
    if len(prototype) < 1 or len(rest) < 1:
        raise ValueError(f"need members in both groups, got {len(prototype)} prototype and {len(rest)} others")
    rois = [str(r) for r in (roi_scores.columns if rois is None else rois)]
    a_all = roi_scores.loc[prototype, rois].to_numpy(dtype=float)
    b_all = roi_scores.loc[rest, rois].to_numpy(dtype=float)
    u, p = _mann_whitney_columns(a_all, b_all)
    n_a, n_b = (~np.isnan(a_all)).sum(axis=0), (~np.isnan(b_all)).sum(axis=0)
    tested = (n_a > 0) & (n_b > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        table = pd.DataFrame({
            "roi": rois,
            "n_prototype": n_a,
            "n_rest": n_b,
            "median_prototype": np.where(tested, _nanmedian(a_all), np.nan),
            "median_rest": np.where(tested, _nanmedian(b_all), np.nan),
            "u": np.where(tested, u, np.nan),
            "rank_biserial": np.where(tested, 2.0 * u / (n_a * n_b) - 1.0, np.nan),
            "p_raw": np.where(tested, p, np.nan),
        })
    tested = int(table["p_raw"].notna().sum())
    table["p_bonferroni"] = np.minimum(table["p_raw"] * tested, 1.0)
    table["p_bh"] = benjamini_hochberg(table["p_raw"].to_numpy())
    if reference_ids is not None:
        table["reference_p90"] = reference_percentile(roi_scores, reference_ids).loc[rois].to_numpy()
    return table.sort_values("p_raw", kind="mergesort", na_position="last").reset_index(drop=True)



def _nanmedian(values: np.ndarray) -> np.ndarray:
    """Column medians ignoring NaN (NaN for a column without values), without numpy's all-NaN warning."""
    out = np.full(values.shape[1], np.nan)
    finite = ~np.isnan(values).all(axis=0)
    out[finite] = np.nanmedian(values[:, finite], axis=0)
    return out


def _mann_whitney_columns(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided Mann-Whitney U (the first group's U) and p of every column of ``a`` (n1, R) against ``b`` (n2, R),
    NaN left out per column; the same numbers as ``scipy.stats.mannwhitneyu`` column by column with
    ``method="auto"``, in a few vectorised calls: complete columns are tested together, grouped by the method
    scipy would choose for each (exact only for small samples without ties)."""
    n_rois = a.shape[1]
    u, p = np.full(n_rois, np.nan), np.full(n_rois, np.nan)
    complete = ~(np.isnan(a).any(axis=0) | np.isnan(b).any(axis=0))
    if len(a) and len(b) and complete.any():
        pooled = np.sort(np.vstack([a[:, complete], b[:, complete]]), axis=0)
        ties = (np.diff(pooled, axis=0) == 0).any(axis=0)
        columns = np.flatnonzero(complete)
        small = len(a) <= 8 or len(b) <= 8
        for method, chosen in (("asymptotic", ties | (not small)), ("exact", ~ties & small)):
            if chosen.any():
                picked = columns[chosen]
                test = mannwhitneyu(a[:, picked], b[:, picked], alternative="two-sided", method=method, axis=0)
                u[picked], p[picked] = test.statistic, test.pvalue
    for column in np.flatnonzero(~complete):  # missing values: each column with its own complete cases
        x, y = a[:, column], b[:, column]
        x, y = x[~np.isnan(x)], y[~np.isnan(y)]
        if len(x) and len(y):
            test = mannwhitneyu(x, y, alternative="two-sided")
            u[column], p[column] = test.statistic, test.pvalue
    return u, p
