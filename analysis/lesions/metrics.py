"""Lesion metrics of a binary segmentation against a ground-truth mask (dissertation ch. 5.4, table 5.1).

The directed 99th-percentile Hausdorff distance and the directed mean surface distance, both from the ground truth to
the prediction and in millimetres; component-wise TPR and PPV, components being found with full connectivity (26
neighbours in 3-D, the analogue of 8-connectivity with diagonals in 2-D); and two threshold-free figures of an
anomaly map that the protocol's oracle threshold cannot flatter: the voxel-level AUROC inside the brain
(:func:`voxel_auroc`) and the fraction of lesions a single threshold finds before it flags any voxel away from them
(:func:`tpr_at_zero_false_positives`).

Conventions shared by every function here and in :mod:`analysis.lesions.protocol`:

- Masks are arrays of any dimension; nonzero values are foreground. Masks compared with each other must have the
  same shape.
- ``spacing`` is the voxel size along each array axis, in millimetres (one positive number per axis). Distances are
  Euclidean distances between voxel centres, scaled by ``spacing``.
- The surface of a mask is the set of its voxels with at least one face neighbour outside the mask; voxels on the
  border of the array count as surface voxels (outside the array is background).

Only numpy and scipy are used.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage, stats

from analysis.checks import check_same_shape, check_spacing

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
