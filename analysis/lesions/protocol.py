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

The settings of steps 1-2 are one :class:`LesionProtocol`; :data:`LESION_PROTOCOL` holds the protocol's values,
and every caller (the refresh, ``msma evaluate-lesions``, the experiments) takes them from there. Conventions of
masks and spacing are those of :mod:`analysis.lesions.metrics`.

Beside the protocol, :func:`evaluate_map` reports three figures that need no threshold and that the protocol's
oracle threshold cannot flatter: the voxel-level AUROC of the map inside the brain (:func:`voxel_auroc`), the
fraction of lesions a single threshold finds before it flags any voxel away from them
(:func:`tpr_at_zero_false_positives`), and the fraction of the brain the selected segmentation covers. The last one
exposes a failure of the protocol: when a map cannot single out the lesions, the segmentation with the lowest
symmetric surface distance may be one large component spreading from the lesions over much of the brain, which
counts as a true positive for every lesion it touches (TPR and PPV 1) at moderate directed distances.

Only numpy and scipy are used.
"""


from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from analysis.checks import check_int, check_same_shape, check_spacing
from analysis.lesions.metrics import (
    _as_mask,
    _distances_to,
    _face_structure,
    _surface,
    _symmetric_msd,
    component_detection,
    directed_surface_distances,
    tpr_at_zero_false_positives,
    voxel_auroc,
)


@dataclass(frozen=True)
class LesionProtocol:
    """Settings of the lesion protocol (dissertation ch. 5.4).

    Attributes
    ----------
    n_thresholds : int, default 64
        Candidate thresholds per subject (:func:`candidate_thresholds`), >= 1.
    min_size : int, default 3
        Connected components with fewer voxels are removed (:func:`postprocess`), >= 0.
    dilation_radius : int, default 1
        Dilation of the segmentation by a city-block ball of this radius, in voxels, >= 0.
    """

    n_thresholds: int = 64
    min_size: int = 3
    dilation_radius: int = 1

    def __post_init__(self):
        check_int(self.n_thresholds, "n_thresholds", 1)
        check_int(self.min_size, "min_size", 0)
        check_int(self.dilation_radius, "dilation_radius", 0)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def describe(self) -> dict:
        """The settings and the fixed choices of the protocol, as the run record states them."""
        return {
            **self.as_dict(),
            "threshold": "per subject, the candidate minimising the symmetric mean surface distance",
            "component_connectivity": 26,
        }


LESION_PROTOCOL = LesionProtocol()
"""The protocol's settings as the dissertation uses them."""

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


def postprocess(segmentation, min_size: int = LESION_PROTOCOL.min_size,
                dilation_radius: int = LESION_PROTOCOL.dilation_radius) -> np.ndarray:
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


# ---------------------------------------------------------------------------------------------- threshold selection


def candidate_thresholds(scores, n: int = LESION_PROTOCOL.n_thresholds) -> np.ndarray:
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
    n_thresholds: int = LESION_PROTOCOL.n_thresholds,
    min_size: int = LESION_PROTOCOL.min_size,
    dilation_radius: int = LESION_PROTOCOL.dilation_radius,
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
    n_thresholds: int = LESION_PROTOCOL.n_thresholds,
    min_size: int = LESION_PROTOCOL.min_size,
    dilation_radius: int = LESION_PROTOCOL.dilation_radius,
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
