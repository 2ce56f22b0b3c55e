"""The lesion protocol (analysis.lesions.protocol): post-processing, threshold search and the evaluation of one map."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from analysis import lesions
from tests.analysis.lesions.brute_force import brute_distances, single_voxel

# ------------------------------------------------------------------------------------------------ post-processing


def test_postprocess_removes_small_components_and_dilates():
    seg = np.zeros((12, 12, 12), dtype=bool)
    seg[2, 2, 2:4] = True  # 2 voxels: removed
    seg[8, 8, 6:9] = True  # 3 voxels: kept
    seg[2, 8, 2] = seg[3, 9, 2] = seg[3, 8, 3] = True  # 3 voxels touching only diagonally: 3 components of 1
    kept = lesions.postprocess(seg, dilation_radius=0)
    expected = np.zeros_like(seg)
    expected[8, 8, 6:9] = True
    np.testing.assert_array_equal(kept, expected)
    # Dilating the 3-voxel line by the 6-neighbour ball: 3 + 2 ends + 4 sides x 3 = 17 voxels.
    assert lesions.postprocess(seg).sum() == 17
    np.testing.assert_array_equal(lesions.postprocess(seg), ndimage.binary_dilation(expected))
    assert lesions.postprocess(seg, min_size=0, dilation_radius=0).sum() == seg.sum()


def test_dilation_of_a_single_voxel():
    voxel = single_voxel((9, 9, 9), (4, 4, 4))
    assert lesions.postprocess(voxel, min_size=1).sum() == 7
    assert lesions.postprocess(voxel, min_size=1, dilation_radius=2).sum() == 25  # city-block ball of radius 2
    assert lesions.postprocess(voxel).sum() == 0  # removed before dilation
    assert lesions.postprocess(np.zeros((5, 5, 5)), min_size=1).sum() == 0


@pytest.mark.parametrize("argument", ["min_size", "dilation_radius"])
@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_postprocess_validates_arguments(argument, value):
    with pytest.raises(ValueError, match=argument):
        lesions.postprocess(np.zeros((3, 3, 3)), **{argument: value})


# ---------------------------------------------------------------------------------------------- threshold search


def test_candidate_thresholds():
    scores = np.arange(10001, dtype=float)
    levels = 1 - np.geomspace(0.5, 5e-4, 64)
    np.testing.assert_allclose(lesions.candidate_thresholds(scores), np.quantile(scores, levels))
    with_nan = np.r_[scores, np.nan, np.inf, -np.inf]
    np.testing.assert_array_equal(lesions.candidate_thresholds(with_nan, 8), lesions.candidate_thresholds(scores, 8))
    constant = lesions.candidate_thresholds(np.ones((4, 4)), 16)
    np.testing.assert_array_equal(constant, [1.0])
    thresholds = lesions.candidate_thresholds(np.random.default_rng(0).integers(0, 5, 200), 32)
    assert np.all(np.diff(thresholds) > 0)
    with pytest.raises(ValueError, match="finite"):
        lesions.candidate_thresholds([np.nan])
    with pytest.raises(ValueError, match="n must be an integer >= 1"):
        lesions.candidate_thresholds(scores, 0)


def _synthetic_subject(seed: int, shape=(28, 32, 28)):
    rng = np.random.default_rng(seed)
    brain = np.zeros(shape, dtype=bool)
    brain[2:-2, 2:-2, 2:-2] = True
    gt = np.zeros(shape, dtype=bool)
    gt[10:14, 12:17, 9:13] = True
    gt[18:20, 6:9, 17:20] = True
    score = ndimage.gaussian_filter(rng.standard_normal(shape), 1.0)
    return score, gt, brain


def _brute_force_search(score, gt, brain, spacing, **protocol):
    thresholds = lesions.candidate_thresholds(score[brain], protocol.pop("n_thresholds", 64))
    msds = []
    for threshold in thresholds:
        seg = lesions.postprocess((score > threshold) & brain, **protocol)
        msds.append(lesions.symmetric_mean_surface_distance(gt, seg, spacing) if seg.any() else np.inf)
    return thresholds, np.asarray(msds)


def test_best_threshold_recovers_a_perfect_segmentation():
    shape = (28, 32, 28)
    rng = np.random.default_rng(0)
    brain = np.zeros(shape, dtype=bool)
    brain[2:-2, 2:-2, 2:-2] = True
    core = np.zeros(shape, dtype=bool)
    core[10:13, 12:15, 9:12] = True
    core[18:20, 6:9, 17:19] = True
    gt = ndimage.binary_dilation(core, ndimage.generate_binary_structure(3, 1))  # what radius-1 dilation restores
    # The highest values are exactly the lesion's core; about half the other brain voxels score exactly 0 (ties),
    # the rest below 0. Thresholds at 0 segment the core, whose dilation is the lesion.
    score = np.minimum(rng.standard_normal(shape), 0.0)
    score[core] = 10.0 + rng.random(core.sum())
    spacing = (6.0, 6.0, 6.0)
    threshold, seg = lesions.best_threshold(score, gt, brain, spacing)
    np.testing.assert_array_equal(seg, gt)
    assert lesions.symmetric_mean_surface_distance(gt, seg, spacing) == 0.0
    assert 0.0 <= threshold < score[core].min()
    thresholds, msds = _brute_force_search(score, gt, brain, spacing)
    assert (thresholds > score[core].min()).any()  # higher candidates exist; they segment part of the core
    assert threshold == thresholds[msds == 0].max()
    assert (msds[msds != 0] > 0).all()


@pytest.mark.parametrize(("seed", "spacing"), [(1, (6.0, 6.0, 6.0)), (2, (1.0, 2.0, 3.0))])
def test_best_threshold_matches_brute_force(seed, spacing):
    score, gt, brain = _synthetic_subject(seed)
    score = score + 0.8 * ndimage.gaussian_filter(gt.astype(float), 1.0)  # a weak, blurred lesion signal
    threshold, seg = lesions.best_threshold(score, gt, brain, spacing)
    thresholds, msds = _brute_force_search(score, gt, brain, spacing)
    best = msds.min()
    assert np.isfinite(best)
    assert lesions.symmetric_mean_surface_distance(gt, seg, spacing) == pytest.approx(best, rel=1e-12)
    winners = thresholds[np.isclose(msds, best, rtol=1e-12, atol=0)]
    assert threshold == winners.max()  # ties go to the higher threshold
    np.testing.assert_array_equal(seg, lesions.postprocess((score > threshold) & brain))


def test_best_threshold_ties_go_to_the_higher_threshold():
    shape = (12, 12, 12)
    brain = np.ones(shape, dtype=bool)
    gt = np.zeros(shape, dtype=bool)
    gt[4:7, 4:7, 4:7] = True
    score = np.linspace(0.0, 1.0, gt.size).reshape(shape) * 1e-3
    score[gt] = 5.0 + np.linspace(0, 1, 27)  # the lesion's voxels come first, whatever their order
    threshold, seg = lesions.best_threshold(score, gt, brain, (1, 1, 1), n_thresholds=200, dilation_radius=0)
    np.testing.assert_array_equal(seg, gt)
    thresholds, msds = _brute_force_search(score, gt, brain, (1, 1, 1), n_thresholds=200, dilation_radius=0)
    assert threshold == thresholds[msds == 0].max()


def test_best_threshold_errors():
    score, gt, brain = _synthetic_subject(3)
    with pytest.raises(ValueError, match="gt is empty"):
        lesions.best_threshold(score, np.zeros_like(gt), brain, (1, 1, 1))
    with pytest.raises(ValueError, match="brain_mask is empty"):
        lesions.best_threshold(score, gt, np.zeros_like(brain), (1, 1, 1))
    with pytest.raises(ValueError, match=r"score_map and brain_mask.*\(28, 32, 28\).*\(28, 32, 27\)"):
        lesions.best_threshold(score, gt, brain[..., :-1], (1, 1, 1))
    # Speckle noise: every voxel above the median is isolated, so nothing survives min_size=3.
    speckle = np.indices(gt.shape).sum(axis=0) % 2 * 1.0 + 1e-6 * score
    with pytest.raises(ValueError, match="empty segmentation"):
        lesions.best_threshold(speckle, gt, brain, (1, 1, 1))


def test_evaluate_segmentation_and_evaluate_map():
    spacing = (1.0, 2.0, 3.0)
    score, gt, brain = _synthetic_subject(4)
    score = score + 0.8 * ndimage.gaussian_filter(gt.astype(float), 1.0)
    result = lesions.evaluate_map(score, gt, brain, spacing, n_thresholds=32)
    threshold, seg = lesions.best_threshold(score, gt, brain, spacing, n_thresholds=32)
    assert result["threshold"] == threshold
    assert result["predicted_voxels"] == seg.sum()
    distances = brute_distances(gt, seg, spacing)
    assert result["msd"] == pytest.approx(distances.mean())
    assert result["hd99"] == pytest.approx(np.percentile(distances, 99))
    detection = lesions.component_detection(gt, seg)
    for key in ("tpr", "ppv", "gt_components", "gt_detected", "pred_components", "pred_true"):
        assert result[key] == detection[key] or (np.isnan(result[key]) and np.isnan(detection[key]))

    empty = lesions.evaluate_segmentation(gt, np.zeros_like(gt), spacing)
    assert empty["hd99"] == empty["msd"] == np.inf and empty["tpr"] == 0.0 and np.isnan(empty["ppv"])
    with pytest.raises(ValueError, match="gt is empty"):
        lesions.evaluate_segmentation(np.zeros_like(gt), gt, spacing)


def test_evaluate_map_reports_the_segmented_fraction_and_threshold_free_figures():
    brain = np.ones((9, 10, 11), dtype=bool)
    gt = np.zeros_like(brain)
    gt[3:5, 3:5, 3:5] = True
    scores = gt * 2.0 + np.linspace(0, 1, brain.size).reshape(brain.shape) * 0.1
    result = lesions.evaluate_map(scores, gt, brain, (6.0, 6.0, 6.0))
    assert result["predicted_fraction"] == pytest.approx(result["predicted_voxels"] / brain.sum())
    assert result["auroc"] == 1.0 and result["tpr_at_zero_fp"] == 1.0
    summary = lesions.summarise(pd.DataFrame([{**result, "method": "a"}, {**result, "method": "a"}]), "method")
    assert {"auroc_mean", "tpr_at_zero_fp_se", "predicted_fraction_mean"} <= set(summary.columns)


def test_segmented_fraction_counts_the_brain_only_and_lesions_outside_it_leave_the_protocol_metrics():
    brain = np.zeros((8, 9, 10), dtype=bool)
    brain[:, :5] = True
    gt = np.zeros_like(brain)
    gt[3:5, 3:5, 4:6] = True  # at the edge of the brain: the dilated segmentation leaves it
    scores = np.where(gt, 3.0, 0.0) + np.linspace(0, 0.1, brain.size).reshape(brain.shape)
    result = lesions.evaluate_map(scores, gt, brain, (6.0, 6.0, 6.0))
    segmentation = lesions.best_threshold(scores, gt, brain, (6.0, 6.0, 6.0))[1]
    assert (segmentation & ~brain).any()
    assert result["predicted_fraction"] == pytest.approx((segmentation & brain).sum() / brain.sum())
    outside = np.zeros_like(brain)
    outside[3:5, 6:8, 4:6] = True
    result = lesions.evaluate_map(scores + outside, outside, brain, (6.0, 6.0, 6.0))
    assert np.isnan(result["auroc"]) and np.isnan(result["tpr_at_zero_fp"]) and np.isfinite(result["msd"])



def test_the_protocol_settings_are_checked_and_are_the_defaults_of_every_step():
    assert lesions.LESION_PROTOCOL.as_dict() == {"n_thresholds": 64, "min_size": 3, "dilation_radius": 1}
    described = lesions.LESION_PROTOCOL.describe()
    assert described["component_connectivity"] == 26 and described["n_thresholds"] == 64
    for field, value in [("n_thresholds", 0), ("min_size", -1), ("dilation_radius", 1.5), ("min_size", True)]:
        with pytest.raises(ValueError, match=f"{field} must be an integer"):
            lesions.LesionProtocol(**{field: value})
    score, gt, brain = _synthetic_subject(3)
    default = lesions.evaluate_map(score, gt, brain, (6.0, 6.0, 6.0))
    explicit = lesions.evaluate_map(score, gt, brain, (6.0, 6.0, 6.0), **lesions.LESION_PROTOCOL.as_dict())
    assert default == explicit
