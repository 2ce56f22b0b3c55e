"""Lesion-segmentation evaluation of voxel anomaly maps (Spatial-MSMA protocol, dissertation ch. 5.4).

The protocol turns a voxel-wise anomaly map into a binary lesion segmentation and scores it against a ground-truth
lesion mask:

1. Candidate thresholds are quantiles of the map's values inside the brain mask (:func:`candidate_thresholds`),
   dense near the top of the score distribution.
2. For each threshold ``t`` the segmentation is ``(score_map > t) & brain_mask``, post-processed by
   :func:`postprocess`: connected components (face connectivity, 6 neighbours in 3-D) smaller than 3 voxels are
   removed, then the mask is dilated by a radius-1 ball (the 6-neighbour structuring element).
3. Per subject, the threshold whose segmentation has the lowest symmetric mean surface distance to the ground truth
   is kept (:func:`best_threshold`).
4. That segmentation is scored (:func:`evaluate_segmentation`) with the directed 99th-percentile Hausdorff distance
   and the directed mean surface distance, both from the ground truth to the prediction and in millimetres, and with
   component-wise TPR and PPV, components being found with full connectivity (26 neighbours in 3-D, the analogue
   of 8-connectivity with diagonals in 2-D).

Conventions shared by every function here:

- Masks are arrays of any dimension; nonzero values are foreground. Masks compared with each other must have the
  same shape.
- ``spacing`` is the voxel size along each array axis, in millimetres (one positive number per axis). Distances are
  Euclidean distances between voxel centres, scaled by ``spacing``.
- The surface of a mask is the set of its voxels with at least one face neighbour outside the mask; voxels on the
  border of the array count as surface voxels (outside the array is background).

Beside the protocol, :func:`evaluate_map` reports three figures that need no threshold and that the protocol's
oracle threshold cannot flatter: the voxel-level AUROC of the map inside the brain (:func:`voxel_auroc`), the
fraction of lesions a single threshold finds before it flags any voxel away from them
(:func:`tpr_at_zero_false_positives`), and the fraction of the brain the selected segmentation covers. The last one
exposes a failure of the protocol: when a map cannot single out the lesions, the segmentation with the lowest
symmetric surface distance may be one large component spreading from the lesions over much of the brain, which
counts as a true positive for every lesion it touches (TPR and PPV 1) at moderate directed distances.

Only numpy, scipy and pandas are used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import ndimage, stats

from analysis.checks import check_int, check_same_shape, check_spacing

__all__ = [
    "LESION_MAPS_FILE",
    "METRICS",
    "SUPPLEMENTARY",
    "best_threshold",
    "candidate_thresholds",
    "component_detection",
    "directed_surface_distances",
    "evaluate_map",
    "evaluate_methods",
    "evaluate_segmentation",
    "hausdorff_distance",
    "mean_surface_distance",
    "postprocess",
    "summarise",
    "surface",
    "symmetric_mean_surface_distance",
    "tpr_at_zero_false_positives",
    "voxel_auroc",
]

#: The per-subject metrics of :func:`evaluate_segmentation` that :func:`summarise` aggregates.
METRICS = ("hd99", "msd", "tpr", "ppv")
#: Threshold-free figures of :func:`evaluate_map` that :func:`summarise` aggregates when present.
SUPPLEMENTARY = ("auroc", "tpr_at_zero_fp", "predicted_fraction")
#: The file of a run holding every method's maps of the lesion subjects (subjects, methods, brain voxels).
LESION_MAPS_FILE = "lesion_maps.npy"


# --------------------------------------------------------------------------------------------------- validation


def _as_mask(mask, name: str) -> np.ndarray:
    """Return ``mask`` as a boolean array of at least one dimension, or raise ValueError naming ``name``."""
    array = np.asarray(mask)
    if array.ndim == 0:
        raise ValueError(f"{name} must be an array with at least one dimension; received a scalar")
    if array.dtype == bool:
        return array
    if not (np.issubdtype(array.dtype, np.number) or array.dtype == object):
        raise ValueError(f"{name} must be a boolean or numeric array; received dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.floating) and np.isnan(array).any():
        raise ValueError(f"{name} must not contain NaN; it is a mask (nonzero = foreground)")
    return array != 0


def _face_structure(ndim: int) -> np.ndarray:
    """Structuring element of face connectivity (6 neighbours in 3-D, 4 in 2-D)."""
    return ndimage.generate_binary_structure(ndim, 1)


def _full_structure(ndim: int) -> np.ndarray:
    """Structuring element of full connectivity (26 neighbours in 3-D, 8 in 2-D)."""
    return ndimage.generate_binary_structure(ndim, ndim)


# ------------------------------------------------------------------------------------------------ surface distances


def _surface(mask: np.ndarray) -> np.ndarray:
    """:func:`surface` on an already validated boolean array."""
    eroded = ndimage.binary_erosion(mask, structure=_face_structure(mask.ndim), border_value=0)
    return mask & ~eroded


def surface(mask) -> np.ndarray:
    """Surface voxels of a mask: its voxels with at least one face neighbour outside it.

    Parameters
    ----------
    mask : array_like, any dimension
        Binary mask; nonzero values are foreground.

    Returns
    -------
    ndarray of bool, same shape as ``mask``
        ``mask & ~binary_erosion(mask)`` with the face-connectivity structuring element (6 neighbours in 3-D) and
        background outside the array, so foreground voxels on the array border are surface voxels. A 3x3x3 cube
        has 26 surface voxels (all but its centre); an empty mask has none.
    """
    return _surface(_as_mask(mask, "mask"))


def _distances_to(target_surface: np.ndarray, spacing: tuple[float, ...]) -> np.ndarray:
    """Distance in mm from every voxel to the nearest voxel of the non-empty ``target_surface``."""
    return ndimage.distance_transform_edt(~target_surface, sampling=spacing)


def directed_surface_distances(source, target, spacing: Sequence[float]) -> np.ndarray:
    """Distances from each surface voxel of ``source`` to the nearest surface voxel of ``target``.

    Parameters
    ----------
    source, target : array_like, same shape
        Binary masks; nonzero values are foreground.
    spacing : sequence of float, length ``source.ndim``
        Voxel size along each axis, in mm.

    Returns
    -------
    ndarray of float, shape (n_source_surface_voxels,)
        Euclidean distance in mm from each surface voxel of ``source`` (in C order of the voxel indices) to the
        nearest surface voxel of ``target``; 0 where the two surfaces share a voxel. All ``+inf`` when ``target``
        is empty.

    Raises
    ------
    ValueError
        If ``source`` is empty (it has no surface to measure from), the shapes differ, or ``spacing`` is invalid.
    """
    source = _as_mask(source, "source")
    target = _as_mask(target, "target")
    check_same_shape(source, target, "source", "target")
    spacing = check_spacing(spacing, source.ndim)
    if not source.any():
        raise ValueError("source is empty: surface distances are measured from its surface voxels, and it has none")
    source_surface = _surface(source)
    if not target.any():
        return np.full(int(source_surface.sum()), np.inf)
    return _distances_to(_surface(target), spacing)[source_surface]


def mean_surface_distance(gt, pred, spacing: Sequence[float]) -> float:
    """Directed mean surface distance from the ground truth to the prediction, in mm.

    The mean over the surface voxels of ``gt`` of the distance to the nearest surface voxel of ``pred``
    (see :func:`directed_surface_distances`). It is not symmetric: a prediction that contains the ground truth and
    much more can still score well; :func:`symmetric_mean_surface_distance` penalises both directions.

    Parameters
    ----------
    gt, pred : array_like, same shape
        Ground-truth and predicted binary masks.
    spacing : sequence of float, length ``gt.ndim``
        Voxel size along each axis, in mm.

    Returns
    -------
    float
        ``+inf`` when ``pred`` is empty.

    Raises
    ------
    ValueError
        If ``gt`` is empty, the shapes differ, or ``spacing`` is invalid.
    """
    return float(np.mean(directed_surface_distances(gt, pred, spacing)))


def hausdorff_distance(gt, pred, spacing: Sequence[float], percentile: float = 99.0) -> float:
    """Directed percentile Hausdorff distance from the ground truth to the prediction, in mm.

    The ``percentile``-th percentile (:func:`numpy.percentile`, linear interpolation) of the distances from the
    surface voxels of ``gt`` to the nearest surface voxel of ``pred``. ``percentile=100`` gives the directed
    Hausdorff distance; the default 99 ignores the farthest 1 % of ground-truth surface voxels.

    Parameters
    ----------
    gt, pred : array_like, same shape
        Ground-truth and predicted binary masks.
    spacing : sequence of float, length ``gt.ndim``
        Voxel size along each axis, in mm.
    percentile : float, default 99.0
        In [0, 100].

    Returns
    -------
    float
        ``+inf`` when ``pred`` is empty.

    Raises
    ------
    ValueError
        If ``gt`` is empty, the shapes differ, ``spacing`` is invalid or ``percentile`` is outside [0, 100].
    """
    if not 0.0 <= float(percentile) <= 100.0:
        raise ValueError(f"percentile must be in [0, 100]; received {percentile!r}")
    distances = directed_surface_distances(gt, pred, spacing)
    if np.isinf(distances).any():
        return float("inf")
    return float(np.percentile(distances, percentile))


def symmetric_mean_surface_distance(a, b, spacing: Sequence[float]) -> float:
    """Symmetric mean surface distance: the average of the two directed mean surface distances, in mm.

    ``(mean d(a -> b) + mean d(b -> a)) / 2``, where ``d(x -> y)`` are the distances from the surface voxels of
    ``x`` to the nearest surface voxel of ``y``. This is the criterion :func:`best_threshold` minimises.

    Parameters
    ----------
    a, b : array_like, same shape
        Binary masks.
    spacing : sequence of float, length ``a.ndim``
        Voxel size along each axis, in mm.

    Returns
    -------
    float
        0 for identical non-empty masks; ``+inf`` if either mask is empty.
    """
    a = _as_mask(a, "a")
    b = _as_mask(b, "b")
    check_same_shape(a, b, "a", "b")
    spacing = check_spacing(spacing, a.ndim)
    if not (a.any() and b.any()):
        return float("inf")
    surface_a, surface_b = _surface(a), _surface(b)
    return _symmetric_msd(surface_a, _distances_to(surface_a, spacing), surface_b, spacing)


def _symmetric_msd(
    surface_a: np.ndarray, distances_to_a: np.ndarray, surface_b: np.ndarray, spacing: tuple[float, ...]
) -> float:
    """Symmetric MSD of two non-empty surfaces, with the distance map of ``a`` already computed."""
    b_to_a = distances_to_a[surface_b].mean()
    a_to_b = _distances_to(surface_b, spacing)[surface_a].mean()
    return float((a_to_b + b_to_a) / 2.0)


# -------------------------------------------------------------------------------------------------- post-processing


def _postprocess(segmentation: np.ndarray, min_size: int, dilation_radius: int) -> np.ndarray:
    """:func:`postprocess` on an already validated boolean array."""
    structure = _face_structure(segmentation.ndim)
    result = segmentation
    if min_size > 1 and segmentation.any():
        labels, _ = ndimage.label(segmentation, structure=structure)
        sizes = np.bincount(labels.ravel())
        keep = sizes >= min_size
        keep[0] = False
        result = keep[labels]
    if dilation_radius > 0 and result.any():
        # iterations=0 would mean "until nothing changes" in scipy, hence the guard above.
        result = ndimage.binary_dilation(result, structure=structure, iterations=dilation_radius)
    return result


def postprocess(segmentation, min_size: int = 3, dilation_radius: int = 1) -> np.ndarray:
    """Remove small connected components, then dilate.

    Parameters
    ----------
    segmentation : array_like, any dimension
        Binary mask; nonzero values are foreground.
    min_size : int, default 3
        Connected components (face connectivity: 6 neighbours in 3-D) with fewer voxels than this are removed.
        0 or 1 removes nothing.
    dilation_radius : int, default 1
        The mask is dilated this many times with the face-connectivity structuring element, i.e. by a ball of this
        radius in the city-block metric (radius 1: each voxel plus its 6 face neighbours in 3-D). 0: no dilation.
        The dilation may grow the mask outside any brain mask it was restricted to.

    Returns
    -------
    ndarray of bool, same shape as ``segmentation``

    Raises
    ------
    ValueError
        If ``min_size`` or ``dilation_radius`` is not a non-negative integer.
    """
    min_size = check_int(min_size, "min_size", 0)
    dilation_radius = check_int(dilation_radius, "dilation_radius", 0)
    return _postprocess(_as_mask(segmentation, "segmentation"), min_size, dilation_radius)


# ------------------------------------------------------------------------------------------- component-wise scores


def component_detection(gt, pred) -> dict:
    """Component-wise detection counts, TPR and PPV.

    Both masks are split into connected components with full connectivity (26 neighbours in 3-D, 8 in 2-D: voxels
    touching only at an edge or a corner belong to the same component). A ground-truth component is detected when
    it shares at least one voxel with the prediction; a predicted component is true when it shares at least one
    voxel with the ground truth. Merely touching (being adjacent to) the other mask does not count.

    TPR counts ground-truth components and PPV counts predicted components, so neither can exceed 1: one large
    predicted component covering three lesions detects all three (TPR 3/3) and is a single true prediction
    (PPV 1/1).

    Parameters
    ----------
    gt, pred : array_like, same shape
        Ground-truth and predicted binary masks.

    Returns
    -------
    dict
        ``gt_components`` (int), ``gt_detected`` (int), ``pred_components`` (int), ``pred_true`` (int),
        ``tpr = gt_detected / gt_components`` (float, NaN when ``gt`` is empty) and
        ``ppv = pred_true / pred_components`` (float, NaN when ``pred`` is empty).
    """
    gt = _as_mask(gt, "gt")
    pred = _as_mask(pred, "pred")
    check_same_shape(gt, pred, "gt", "pred")
    structure = _full_structure(gt.ndim)
    gt_labels, gt_components = ndimage.label(gt, structure=structure)
    pred_labels, pred_components = ndimage.label(pred, structure=structure)
    overlap = gt & pred
    gt_detected = int(np.unique(gt_labels[overlap]).size)
    pred_true = int(np.unique(pred_labels[overlap]).size)
    return {
        "gt_components": int(gt_components),
        "gt_detected": gt_detected,
        "pred_components": int(pred_components),
        "pred_true": pred_true,
        "tpr": gt_detected / gt_components if gt_components else float("nan"),
        "ppv": pred_true / pred_components if pred_components else float("nan"),
    }


# ------------------------------------------------------------------------------------------- threshold-free figures


def _brain_scores(score_map, gt, brain_mask) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    scores = np.asarray(score_map, dtype=float)
    gt = _as_mask(gt, "gt")
    brain = _as_mask(brain_mask, "brain_mask")
    check_same_shape(scores, gt, "score_map", "gt")
    check_same_shape(scores, brain, "score_map", "brain_mask")
    if not (gt & brain).any():
        raise ValueError("gt has no voxel inside brain_mask")
    return scores, gt, brain


def voxel_auroc(score_map, gt, brain_mask) -> float:
    """Area under the ROC curve of the map's values inside the brain, lesion voxels as positives.

    Ties count one half (the Mann-Whitney form, equal to :func:`sklearn.metrics.roc_auc_score`); NaN scores count
    below every finite score. NaN when the brain holds no voxel outside the lesions.
    """
    scores, gt, brain = _brain_scores(score_map, gt, brain_mask)
    values = np.where(np.isnan(scores[brain]), -np.inf, scores[brain])
    positive = gt[brain]
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_neg == 0:
        return float("nan")
    ranks = stats.rankdata(values)
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def tpr_at_zero_false_positives(score_map, gt, brain_mask) -> float:
    """Fraction of lesions whose highest score exceeds every score of the brain away from the lesions.

    Lesions are the ground truth's components (full connectivity). "Away" means outside the lesions dilated by one
    voxel in every direction (a 3^3 cube), so a map is not penalised for the voxels touching a lesion. This is the
    sensitivity of the best single threshold that flags no voxel away from the lesions.
    """
    scores, gt, brain = _brain_scores(score_map, gt, brain_mask)
    scores = np.where(brain & ~np.isnan(scores), scores, -np.inf)
    structure = _full_structure(gt.ndim)
    labels, n = ndimage.label(gt, structure=structure)
    peaks = ndimage.maximum(scores, labels, np.arange(1, n + 1))
    away = brain & ~ndimage.binary_dilation(gt, structure=structure)
    ceiling = scores[away].max() if away.any() else -np.inf
    return float(np.mean(np.asarray(peaks) > ceiling))


# ---------------------------------------------------------------------------------------------- threshold selection


def candidate_thresholds(scores, n: int = 64) -> np.ndarray:
    """Candidate thresholds: quantiles of the scores, dense near the top.

    The quantile levels are ``1 - geomspace(0.5, 5e-4, n)``: from the median up to the 99.95th percentile, with
    geometrically shrinking steps, so most candidates flag small fractions of the voxels, as lesions do.

    Parameters
    ----------
    scores : array_like
        Anomaly scores (any shape; flattened). Non-finite values are ignored.
    n : int, default 64
        Number of quantile levels (positive).

    Returns
    -------
    ndarray of float, shape (<= n,)
        The distinct quantiles (:func:`numpy.quantile`, linear interpolation), ascending.

    Raises
    ------
    ValueError
        If ``n`` is not a positive integer or there is no finite score.
    """
    n = check_int(n, "n", 1)
    values = np.asarray(scores, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise ValueError("scores must hold at least one finite value to take quantiles of")
    levels = 1.0 - np.geomspace(0.5, 5e-4, int(n))
    return np.unique(np.quantile(values, levels))


def best_threshold(
    score_map,
    gt,
    brain_mask,
    spacing: Sequence[float],
    n_thresholds: int = 64,
    min_size: int = 3,
    dilation_radius: int = 1,
) -> tuple[float, np.ndarray]:
    """The threshold of an anomaly map whose post-processed segmentation best matches the ground truth.

    For each threshold ``t`` of :func:`candidate_thresholds` (computed from the finite values of ``score_map``
    inside ``brain_mask``), the segmentation is ``postprocess((score_map > t) & brain_mask, min_size,
    dilation_radius)``. The threshold with the lowest :func:`symmetric_mean_surface_distance` to ``gt`` is returned;
    among ties (equal up to a relative 1e-12) the higher threshold wins. Thresholds whose segmentation is empty are
    skipped. This per-subject oracle threshold is the protocol's, and it flatters every method alike: it measures
    how well the map *can* localise lesions, not how well a fixed threshold would.

    Parameters
    ----------
    score_map : array_like of float
        Voxel anomaly scores (higher = more anomalous); NaN voxels are never segmented.
    gt : array_like, same shape
        Ground-truth lesion mask; must not be empty.
    brain_mask : array_like, same shape
        Voxels that may be segmented; must not be empty.
    spacing : sequence of float, length ``score_map.ndim``
        Voxel size along each axis, in mm.
    n_thresholds : int, default 64
        Number of quantile levels passed to :func:`candidate_thresholds`.
    min_size, dilation_radius : int, defaults 3 and 1
        Passed to :func:`postprocess`.

    Returns
    -------
    threshold : float
    segmentation : ndarray of bool, same shape as ``score_map``
        The post-processed segmentation at ``threshold``.

    Raises
    ------
    ValueError
        If the shapes differ, ``spacing`` or the protocol arguments are invalid, ``gt`` or ``brain_mask`` is empty,
        or every candidate threshold gives an empty segmentation.
    """
    scores = np.asarray(score_map, dtype=float)
    gt = _as_mask(gt, "gt")
    brain = _as_mask(brain_mask, "brain_mask")
    check_same_shape(scores, gt, "score_map", "gt")
    check_same_shape(scores, brain, "score_map", "brain_mask")
    spacing = check_spacing(spacing, scores.ndim)
    min_size = check_int(min_size, "min_size", 0)
    dilation_radius = check_int(dilation_radius, "dilation_radius", 0)
    if not gt.any():
        raise ValueError("gt is empty: the threshold is chosen by surface distance to the ground-truth lesions")
    if not brain.any():
        raise ValueError("brain_mask is empty: there are no voxels to take thresholds from")
    thresholds = candidate_thresholds(scores[brain], n_thresholds)

    gt_surface = _surface(gt)
    distances_to_gt = _distances_to(gt_surface, spacing)  # once per call, shared by every threshold

    best: tuple[float, float, np.ndarray] | None = None  # (msd, threshold, segmentation)
    previous_raw: np.ndarray | None = None
    previous_result: tuple[float, np.ndarray] | None = None
    for threshold in thresholds:  # ascending, so later (higher) thresholds win ties
        with np.errstate(invalid="ignore"):
            raw = (scores > threshold) & brain
        if not raw.any():
            break  # every higher threshold is empty too
        if previous_raw is not None and np.array_equal(raw, previous_raw):
            result = previous_result  # same voxels as the last (lower) threshold: same segmentation
        else:
            segmentation = _postprocess(raw, min_size, dilation_radius)
            if segmentation.any():
                msd = _symmetric_msd(gt_surface, distances_to_gt, _surface(segmentation), spacing)
                result = (msd, segmentation)
            else:
                result = None
            previous_raw, previous_result = raw, result
        if result is None:
            continue
        msd, segmentation = result
        if best is None or msd < best[0] or np.isclose(msd, best[0], rtol=1e-12, atol=0.0):
            best = (msd, float(threshold), segmentation)
    if best is None:
        raise ValueError(
            f"every one of the {thresholds.size} candidate thresholds gives an empty segmentation after "
            f"post-processing (min_size={min_size}); the map flags too few voxels inside the brain mask"
        )
    return best[1], best[2].copy()


# ------------------------------------------------------------------------------------------------------- evaluation


def evaluate_segmentation(gt, pred, spacing: Sequence[float]) -> dict:
    """Score a binary segmentation against the ground truth.

    Parameters
    ----------
    gt, pred : array_like, same shape
        Ground-truth (non-empty) and predicted binary masks.
    spacing : sequence of float, length ``gt.ndim``
        Voxel size along each axis, in mm.

    Returns
    -------
    dict
        ``hd99``: directed 99th-percentile Hausdorff distance ``gt -> pred`` in mm (:func:`hausdorff_distance`);
        ``msd``: directed mean surface distance ``gt -> pred`` in mm (:func:`mean_surface_distance`); both ``+inf``
        when ``pred`` is empty. ``tpr``, ``ppv``, ``gt_components``, ``gt_detected``, ``pred_components`` and
        ``pred_true`` from :func:`component_detection`.

    Raises
    ------
    ValueError
        If ``gt`` is empty, the shapes differ or ``spacing`` is invalid.
    """
    gt = _as_mask(gt, "gt")
    pred = _as_mask(pred, "pred")
    check_same_shape(gt, pred, "gt", "pred")
    spacing = check_spacing(spacing, gt.ndim)
    if not gt.any():
        raise ValueError("gt is empty: lesion metrics are measured from the ground-truth lesions")
    distances = directed_surface_distances(gt, pred, spacing)
    if np.isinf(distances).any():
        hd99 = msd = float("inf")
    else:
        hd99 = float(np.percentile(distances, 99.0))
        msd = float(distances.mean())
    return {"hd99": hd99, "msd": msd, **component_detection(gt, pred)}


def evaluate_map(
    score_map,
    gt,
    brain_mask,
    spacing: Sequence[float],
    *,
    n_thresholds: int = 64,
    min_size: int = 3,
    dilation_radius: int = 1,
) -> dict:
    """Run the whole protocol on one subject's anomaly map: :func:`best_threshold`, then
    :func:`evaluate_segmentation`.

    Parameters
    ----------
    score_map, gt, brain_mask, spacing
        As in :func:`best_threshold`.
    n_thresholds, min_size, dilation_radius : int, keyword-only
        Protocol settings, as in :func:`best_threshold`.

    Returns
    -------
    dict
        The keys of :func:`evaluate_segmentation`, plus ``threshold`` (float, the selected threshold),
        ``predicted_voxels`` (int, voxels in the selected post-processed segmentation), ``predicted_fraction``
        (its voxels inside the brain mask over the brain mask's), ``auroc`` (:func:`voxel_auroc`) and
        ``tpr_at_zero_fp`` (:func:`tpr_at_zero_false_positives`); the last two are NaN when no lesion voxel lies
        inside the brain mask.
    """
    threshold, segmentation = best_threshold(
        score_map,
        gt,
        brain_mask,
        spacing,
        n_thresholds=n_thresholds,
        min_size=min_size,
        dilation_radius=dilation_radius,
    )
    result = evaluate_segmentation(gt, segmentation, spacing)
    brain = _as_mask(brain_mask, "brain_mask")
    result["threshold"] = threshold
    result["predicted_voxels"] = int(segmentation.sum())
    result["predicted_fraction"] = int((segmentation & brain).sum()) / int(brain.sum())
    if (_as_mask(gt, "gt") & brain).any():
        result["auroc"] = voxel_auroc(score_map, gt, brain)
        result["tpr_at_zero_fp"] = tpr_at_zero_false_positives(score_map, gt, brain)
    else:  # lesions wholly outside the brain mask: nothing to rank inside it
        result["auroc"] = result["tpr_at_zero_fp"] = float("nan")
    return result


def summarise(per_subject: pd.DataFrame, by: str | Sequence[str]) -> pd.DataFrame:
    """Mean and standard error of the lesion metrics per group.

    Parameters
    ----------
    per_subject : DataFrame
        One row per subject (and method, etc.), with columns ``hd99``, ``msd``, ``tpr``, ``ppv`` and the columns
        named in ``by``.
    by : str or list of str
        Grouping column(s), e.g. ``"method"``.

    Returns
    -------
    DataFrame
        One row per group, sorted by the group keys, with the ``by`` columns, ``n_subjects`` (rows in the group) and,
        for each metric ``m`` of :data:`METRICS` (and of :data:`SUPPLEMENTARY` present in ``per_subject``),
        ``m_mean`` and ``m_se``. NaN values are ignored: the mean is over non-NaN values and
        ``m_se = std(ddof=1) / sqrt(n)`` with ``n`` the number of non-NaN values (NaN when ``n < 2``), as
        :func:`scipy.stats.sem` with ``nan_policy="omit"``. Infinite values (distances to an empty prediction) make
        the mean infinite and the standard error NaN.

    Raises
    ------
    ValueError
        If a metric or grouping column is missing.
    """
    keys = [by] if isinstance(by, str) else list(by)
    if not keys:
        raise ValueError("by must name at least one grouping column")
    missing = [column for column in [*keys, *METRICS] if column not in per_subject.columns]
    if missing:
        raise ValueError(f"per_subject lacks column(s) {missing}; it has {list(per_subject.columns)}")
    metrics = [*METRICS, *(m for m in SUPPLEMENTARY if m in per_subject.columns)]
    rows = []
    for group, frame in per_subject.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, group, strict=True))
        row["n_subjects"] = len(frame)
        for metric in metrics:
            values = pd.to_numeric(frame[metric], errors="raise").to_numpy(dtype=float)
            values = values[~np.isnan(values)]
            n = values.size
            with np.errstate(invalid="ignore"):
                row[f"{metric}_mean"] = float(values.mean()) if n else float("nan")
                row[f"{metric}_se"] = float(values.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
        rows.append(row)
    columns = [*keys, "n_subjects", *(f"{metric}_{stat}" for metric in metrics for stat in ("mean", "se"))]
    return pd.DataFrame(rows, columns=columns)


def _evaluate_subject(maps: dict, gt: np.ndarray, brain_mask: np.ndarray, spacing, protocol: dict) -> list[dict]:
    rows = []
    for method, values in maps.items():
        score_map = np.full(brain_mask.shape, np.nan)
        score_map[brain_mask] = values
        try:
            rows.append({"method": method, **evaluate_map(score_map, gt, brain_mask, spacing, **protocol)})
        except ValueError as exc:  # e.g. a constant map: no threshold gives a segmentation
            rows.append({"method": method, **dict.fromkeys((*METRICS, *SUPPLEMENTARY), np.nan), "note": str(exc)})
    return rows


def evaluate_methods(
    maps: dict[str, np.ndarray],
    subject_ids: Sequence[str],
    groups: Sequence[str],
    ground_truth: Sequence[np.ndarray],
    brain_mask,
    spacing: Sequence[float],
    *,
    n_thresholds: int = 64,
    min_size: int = 3,
    dilation_radius: int = 1,
    n_jobs: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """Run every method's maps through the same protocol (:func:`evaluate_map`) on every subject.

    Parameters
    ----------
    maps : dict of method name -> array (n_subjects, n_brain_voxels)
        Anomaly maps inside the brain mask (C order of ``brain_mask``), higher = more anomalous.
    subject_ids, groups : sequences of length n_subjects
        Row labels; ``groups`` names the subject's lesion group (e.g. faint / bright).
    ground_truth : sequence of n_subjects boolean arrays shaped like ``brain_mask``
    n_jobs : int
        Worker processes (subjects are independent).

    Returns
    -------
    DataFrame
        One row per (subject, method): ``subject_id``, ``group``, ``method`` and the keys of :func:`evaluate_map`.
        A map the protocol cannot threshold (e.g. a constant one) gets NaN metrics and its reason in ``note``.
    """
    from joblib import Parallel, delayed
    from tqdm.auto import tqdm

    brain_mask = _as_mask(brain_mask, "brain_mask")
    n = len(subject_ids)
    if len(groups) != n or len(ground_truth) != n:
        raise ValueError(f"subject_ids ({n}), groups ({len(groups)}) and ground_truth ({len(ground_truth)}) differ")
    n_voxels = int(brain_mask.sum())
    for method, values in maps.items():
        if np.shape(values) != (n, n_voxels):
            raise ValueError(f"maps[{method!r}]: expected shape {(n, n_voxels)}, got {np.shape(values)}")
    protocol = {"n_thresholds": n_thresholds, "min_size": min_size, "dilation_radius": dilation_radius}
    jobs = (
        delayed(_evaluate_subject)(
            {m: np.asarray(v[k]) for m, v in maps.items()}, _as_mask(ground_truth[k], "ground_truth"), brain_mask,
            spacing, protocol,
        )
        for k in range(n)
    )
    results = Parallel(n_jobs=n_jobs)(
        tqdm(jobs, total=n, desc="lesion evaluation", unit="subject", disable=not progress)
    )
    rows = [
        {"subject_id": subject_ids[k], "group": groups[k], **row} for k, result in enumerate(results) for row in result
    ]
    return pd.DataFrame(rows)
