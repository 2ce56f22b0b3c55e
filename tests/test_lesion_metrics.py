"""Lesion-segmentation metrics (analysis.lesions.protocol) against hand-computed cases and brute-force references."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats
from scipy.spatial.distance import cdist

from analysis import lesions

SPACINGS = [(6.0, 6.0, 6.0), (1.0, 2.0, 3.0)]


def _brute_surface(mask: np.ndarray) -> np.ndarray:
    """Surface voxels by looping over the 6 face neighbours (outside the array = background)."""
    padded = np.pad(mask, 1)
    surface = np.zeros_like(mask)
    for index in zip(*np.nonzero(mask), strict=True):
        for axis in range(mask.ndim):
            for step in (-1, 1):
                neighbour = [i + 1 for i in index]
                neighbour[axis] += step
                if not padded[tuple(neighbour)]:
                    surface[index] = True
    return surface


def _brute_distances(source: np.ndarray, target: np.ndarray, spacing) -> np.ndarray:
    """Min over cdist between surface-voxel coordinates in mm; source surface in C order."""
    source_points = np.argwhere(_brute_surface(source)) * np.asarray(spacing)
    target_points = np.argwhere(_brute_surface(target)) * np.asarray(spacing)
    return cdist(source_points, target_points).min(axis=1)


def _random_blob(rng: np.random.Generator, shape=(12, 13, 11), fraction=0.25) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    return noise > np.quantile(noise, 1 - fraction)


def _single_voxel(shape, index) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[index] = True
    return mask


# ------------------------------------------------------------------------------------------------------ surface


def test_surface_of_a_cube_is_all_but_its_centre():
    mask = np.zeros((5, 5, 5), dtype=bool)
    mask[1:4, 1:4, 1:4] = True
    surface = lesions.surface(mask)
    assert surface.sum() == 26
    assert not surface[2, 2, 2]
    assert lesions.surface(np.ones((3, 3, 3))).sum() == 26  # the array border counts as outside


def test_surface_matches_brute_force_in_2d_and_3d():
    rng = np.random.default_rng(0)
    for shape in [(9, 11), (7, 8, 9)]:
        mask = rng.random(shape) < 0.5
        np.testing.assert_array_equal(lesions.surface(mask), _brute_surface(mask))
    assert not lesions.surface(np.zeros((4, 4, 4))).any()


# -------------------------------------------------------------------------------------------- surface distances


@pytest.mark.parametrize("spacing", SPACINGS)
def test_directed_distances_match_cdist_on_random_blobs(spacing):
    rng = np.random.default_rng(1)
    for _ in range(3):
        a, b = _random_blob(rng), _random_blob(rng)
        for source, target in [(a, b), (b, a)]:
            expected = _brute_distances(source, target, spacing)
            got = lesions.directed_surface_distances(source, target, spacing)
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
        assert lesions.mean_surface_distance(a, b, spacing) == pytest.approx(_brute_distances(a, b, spacing).mean())
        for percentile in (50.0, 99.0, 100.0):
            expected = np.percentile(_brute_distances(a, b, spacing), percentile)
            assert lesions.hausdorff_distance(a, b, spacing, percentile) == pytest.approx(expected)
        symmetric = (_brute_distances(a, b, spacing).mean() + _brute_distances(b, a, spacing).mean()) / 2
        assert lesions.symmetric_mean_surface_distance(a, b, spacing) == pytest.approx(symmetric)


def test_single_voxels_four_apart_at_6mm():
    shape = (10, 6, 6)
    gt, pred = _single_voxel(shape, (2, 3, 3)), _single_voxel(shape, (6, 3, 3))
    spacing = (6.0, 6.0, 6.0)
    assert lesions.mean_surface_distance(gt, pred, spacing) == 24.0
    assert lesions.hausdorff_distance(gt, pred, spacing) == 24.0
    assert lesions.symmetric_mean_surface_distance(gt, pred, spacing) == 24.0
    # Anisotropic spacing: the separation is along axis 0.
    assert lesions.mean_surface_distance(gt, pred, (1.5, 2.0, 3.0)) == 6.0
    assert lesions.mean_surface_distance(gt, pred, (2.0, 9.0, 9.0)) == 8.0


def test_distances_are_directed():
    gt = np.zeros((9, 9, 9), dtype=bool)
    gt[4, 4, 4] = True
    pred = np.zeros_like(gt)
    pred[2:7, 2:7, 2:7] = True  # 5x5x5 cube around gt; gt's voxel is 2 voxels from pred's surface
    spacing = (1.0, 1.0, 1.0)
    assert lesions.mean_surface_distance(gt, pred, spacing) == 2.0
    pred_to_gt = lesions.mean_surface_distance(pred, gt, spacing)
    assert pred_to_gt == pytest.approx(_brute_distances(pred, gt, spacing).mean())
    assert pred_to_gt > 2.0
    assert lesions.hausdorff_distance(pred, gt, spacing, 100) == pytest.approx(np.sqrt(12))  # a corner
    assert lesions.symmetric_mean_surface_distance(gt, pred, spacing) == pytest.approx((2.0 + pred_to_gt) / 2)


def test_empty_masks():
    gt = _single_voxel((5, 5, 5), (2, 2, 2))
    empty = np.zeros_like(gt)
    with pytest.raises(ValueError, match="source is empty"):
        lesions.directed_surface_distances(empty, gt, (1, 1, 1))
    distances = lesions.directed_surface_distances(gt, empty, (1, 1, 1))
    assert distances.shape == (1,) and np.isinf(distances).all()
    assert lesions.mean_surface_distance(gt, empty, (1, 1, 1)) == np.inf
    assert lesions.hausdorff_distance(gt, empty, (1, 1, 1)) == np.inf
    assert lesions.symmetric_mean_surface_distance(gt, empty, (1, 1, 1)) == np.inf
    assert lesions.symmetric_mean_surface_distance(empty, gt, (1, 1, 1)) == np.inf


def test_input_validation():
    a = np.zeros((4, 5, 6), dtype=bool)
    a[1, 1, 1] = True
    with pytest.raises(ValueError, match=r"\(4, 5, 6\).*\(4, 5, 7\)"):
        lesions.directed_surface_distances(a, np.zeros((4, 5, 7)), (1, 1, 1))
    with pytest.raises(ValueError, match="spacing"):
        lesions.mean_surface_distance(a, a, (1, 1))
    with pytest.raises(ValueError, match="spacing"):
        lesions.mean_surface_distance(a, a, (1, 0, 1))
    with pytest.raises(ValueError, match="spacing"):
        lesions.symmetric_mean_surface_distance(a, a, (1, -2, 1))
    with pytest.raises(ValueError, match="percentile"):
        lesions.hausdorff_distance(a, a, (1, 1, 1), percentile=101)
    with pytest.raises(ValueError, match="shape"):
        lesions.component_detection(a, a[:-1])


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
    voxel = _single_voxel((9, 9, 9), (4, 4, 4))
    assert lesions.postprocess(voxel, min_size=1).sum() == 7
    assert lesions.postprocess(voxel, min_size=1, dilation_radius=2).sum() == 25  # city-block ball of radius 2
    assert lesions.postprocess(voxel).sum() == 0  # removed before dilation
    assert lesions.postprocess(np.zeros((5, 5, 5)), min_size=1).sum() == 0


@pytest.mark.parametrize("argument", ["min_size", "dilation_radius"])
@pytest.mark.parametrize("value", [-1, 1.5, True, "3"])
def test_postprocess_validates_arguments(argument, value):
    with pytest.raises(ValueError, match=argument):
        lesions.postprocess(np.zeros((3, 3, 3)), **{argument: value})


# ------------------------------------------------------------------------------------------- component detection


def test_component_detection_hand_made_case():
    shape = (20, 20, 20)
    gt = np.zeros(shape, dtype=bool)
    pred = np.zeros(shape, dtype=bool)
    gt[2:4, 2:4, 2:4] = True  # G1
    gt[10:12, 2:4, 2:4] = True  # G2
    gt[2:4, 12:14, 2:4] = True  # G3
    pred[3:6, 3:6, 3:6] = True  # P1 overlaps G1
    pred[11, 3, 3] = True  # P2 overlaps G2
    pred[16:18, 16:18, 16:18] = True  # P3 far from everything
    pred[4, 14, 4] = True  # P4 touches G3's corner (3, 13, 3) diagonally only: no overlap
    result = lesions.component_detection(gt, pred)
    assert result == {
        "gt_components": 3,
        "gt_detected": 2,
        "pred_components": 4,
        "pred_true": 2,
        "tpr": pytest.approx(2 / 3),
        "ppv": pytest.approx(2 / 4),
    }


def test_component_detection_uses_full_connectivity():
    shape = (10, 10, 10)
    # A ground-truth lesion made of two voxels touching at a corner: one component with 26-connectivity (two with
    # 6-connectivity, where hitting one voxel would give TPR 1/2).
    gt = np.zeros(shape, dtype=bool)
    gt[2, 2, 2] = gt[3, 3, 3] = True
    # A prediction made of two edge-touching pieces, one on the lesion and one beside it: one true component with
    # 26-connectivity (PPV 1/1; with 6-connectivity it would be 1/2).
    pred = np.zeros(shape, dtype=bool)
    pred[2, 2, 2] = True
    pred[2, 1, 1] = True  # touches (2, 2, 2) along an edge
    structure6 = ndimage.generate_binary_structure(3, 1)
    assert ndimage.label(gt, structure6)[1] == 2 and ndimage.label(pred, structure6)[1] == 2
    result = lesions.component_detection(gt, pred)
    assert (result["gt_components"], result["gt_detected"], result["tpr"]) == (1, 1, 1.0)
    assert (result["pred_components"], result["pred_true"], result["ppv"]) == (1, 1, 1.0)


def test_component_detection_rates_never_exceed_one_and_handle_empty_masks():
    gt = np.zeros((12, 6, 6), dtype=bool)
    gt[1, 2, 2] = gt[5, 2, 2] = gt[9, 2, 2] = True
    pred = np.zeros_like(gt)
    pred[:, 2, 2] = True  # one predicted component covering all three lesions
    result = lesions.component_detection(gt, pred)
    assert (result["tpr"], result["ppv"]) == (1.0, 1.0)
    assert (result["gt_detected"], result["pred_true"]) == (3, 1)
    empty = lesions.component_detection(gt, np.zeros_like(gt))
    assert empty["tpr"] == 0.0 and np.isnan(empty["ppv"]) and empty["pred_components"] == 0
    no_gt = lesions.component_detection(np.zeros_like(gt), pred)
    assert np.isnan(no_gt["tpr"]) and no_gt["ppv"] == 0.0


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
    distances = _brute_distances(gt, seg, spacing)
    assert result["msd"] == pytest.approx(distances.mean())
    assert result["hd99"] == pytest.approx(np.percentile(distances, 99))
    detection = lesions.component_detection(gt, seg)
    for key in ("tpr", "ppv", "gt_components", "gt_detected", "pred_components", "pred_true"):
        assert result[key] == detection[key] or (np.isnan(result[key]) and np.isnan(detection[key]))

    empty = lesions.evaluate_segmentation(gt, np.zeros_like(gt), spacing)
    assert empty["hd99"] == empty["msd"] == np.inf and empty["tpr"] == 0.0 and np.isnan(empty["ppv"])
    with pytest.raises(ValueError, match="gt is empty"):
        lesions.evaluate_segmentation(np.zeros_like(gt), gt, spacing)


# ------------------------------------------------------------------------------------------------------ summary


def test_summarise_against_numpy_and_scipy():
    rng = np.random.default_rng(5)
    table = pd.DataFrame(
        {
            "method": np.repeat(["msma", "spatial", "gnsm"], 7),
            "site": np.tile(["a", "b"], 11)[:21],
            "hd99": rng.gamma(3, 5, 21),
            "msd": rng.gamma(2, 2, 21),
            "tpr": rng.random(21),
            "ppv": rng.random(21),
        }
    )
    table.loc[[0, 3], "ppv"] = np.nan  # msma: 5 non-NaN PPVs
    summary = lesions.summarise(table, "method")
    assert list(summary["method"]) == ["gnsm", "msma", "spatial"]
    assert list(summary["n_subjects"]) == [7, 7, 7]
    for _, row in summary.iterrows():
        group = table[table["method"] == row["method"]]
        for metric in lesions.METRICS:
            values = group[metric].to_numpy()
            assert row[f"{metric}_mean"] == pytest.approx(np.nanmean(values))
            assert row[f"{metric}_se"] == pytest.approx(stats.sem(values, nan_policy="omit"))
    assert summary.loc[summary["method"] == "msma", "ppv_se"].item() == pytest.approx(
        np.std(table["ppv"][[1, 2, 4, 5, 6]], ddof=1) / np.sqrt(5)
    )

    by_two = lesions.summarise(table, ["method", "site"])
    assert len(by_two) == 6 and by_two["n_subjects"].sum() == 21
    assert list(by_two.columns[:3]) == ["method", "site", "n_subjects"]
    single = lesions.summarise(table.iloc[:1], "method")
    assert single["n_subjects"].item() == 1 and np.isnan(single["hd99_se"].item())
    with pytest.raises(ValueError, match="msd"):
        lesions.summarise(table.drop(columns="msd"), "method")


def test_evaluate_methods_runs_every_map_through_evaluate_map_in_parallel():
    rng = np.random.default_rng(11)
    brain = np.zeros((10, 11, 9), dtype=bool)
    brain[1:9, 1:10, 1:8] = True
    truths, maps = [], {"a": [], "b": []}
    for _ in range(3):
        gt = np.zeros(brain.shape, dtype=bool)
        start = rng.integers(2, 5, 3)
        gt[start[0] : start[0] + 2, start[1] : start[1] + 3, start[2] : start[2] + 2] = True
        truths.append(gt)
        maps["a"].append((gt + 0.3 * rng.random(brain.shape))[brain])
        maps["b"].append(rng.random(brain.shape)[brain])
    maps = {k: np.stack(v) for k, v in maps.items()}
    args = (maps, pd.Series(["g1", "g1", "g2"], index=["x", "y", "z"]), truths, brain, (2.0, 2.0, 3.0))
    serial = lesions.evaluate_methods(*args)
    parallel = lesions.evaluate_methods(*args, n_jobs=2)
    pd.testing.assert_frame_equal(serial, parallel)
    assert list(serial["method"]) == ["a", "b"] * 3 and list(serial["subject_id"]) == ["x", "x", "y", "y", "z", "z"]
    for _, row in serial.iterrows():
        k = ["x", "y", "z"].index(row["subject_id"])
        volume = np.full(brain.shape, np.nan)
        volume[brain] = maps[row["method"]][k]
        expected = lesions.evaluate_map(volume, truths[k], brain, (2.0, 2.0, 3.0))
        assert row["msd"] == pytest.approx(expected["msd"])
        assert row["ppv"] == pytest.approx(expected["ppv"], nan_ok=True)
    assert serial.loc[serial["method"] == "a", "tpr"].eq(1.0).all()
    with pytest.raises(ValueError, match="expected shape"):
        lesions.evaluate_methods({"a": maps["a"][:2]}, pd.Series(["g"] * 3, index=["x", "y", "z"]), truths, brain,
                                 (2.0, 2.0, 3.0))


def test_a_map_the_protocol_cannot_threshold_gets_nan_metrics_and_a_note():
    brain = np.zeros((8, 8, 8), dtype=bool)
    brain[1:7, 1:7, 1:7] = True
    gt = np.zeros(brain.shape, dtype=bool)
    gt[3:5, 3:5, 3:5] = True
    maps = {"constant": np.ones((1, int(brain.sum()))), "good": gt[brain][None].astype(float)}
    table = lesions.evaluate_methods(maps, pd.Series(["g"], index=["s"]), [gt], brain, (1.0, 1.0, 1.0))
    constant = table[table["method"] == "constant"].iloc[0]
    assert np.isnan(constant[list(lesions.METRICS)].astype(float)).all() and "empty segmentation" in constant["note"]
    good = table[table["method"] == "good"].iloc[0]
    assert good["tpr"] == 1.0 and pd.isna(good["note"])


# ------------------------------------------------------------------------------------------- threshold-free figures
def test_voxel_auroc_equals_sklearn_inside_the_brain_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(21)
    shape = (7, 8, 9)
    brain = np.zeros(shape, dtype=bool)
    brain[1:6, 1:7, 1:8] = True
    gt = _random_blob(rng, shape, 0.1) & brain
    scores = np.round(rng.standard_normal(shape) + 1.5 * gt, 1)  # rounding makes ties
    scores[~brain] = 100.0  # outside the brain never counts
    expected = roc_auc_score(gt[brain], scores[brain])
    assert lesions.voxel_auroc(scores, gt, brain) == pytest.approx(expected, rel=1e-12)
    with pytest.raises(ValueError, match="inside brain_mask"):
        lesions.voxel_auroc(scores, gt & ~brain, brain)


def test_tpr_at_zero_false_positives_on_a_hand_built_map():
    brain = np.ones((5, 12, 5), dtype=bool)
    gt = np.zeros_like(brain)
    gt[2, 2, 2] = gt[2, 6, 2] = gt[2, 10, 2] = True  # three one-voxel lesions
    scores = np.zeros(brain.shape)
    scores[2, 2, 2], scores[2, 6, 2], scores[2, 10, 2] = 5.0, 3.0, 1.0
    scores[2, 3, 3] = 9.0  # touches the first lesion (diagonally): not "away" from it
    assert lesions.tpr_at_zero_false_positives(scores, gt, brain) == 1.0
    scores[0, 8, 0] = 2.0  # away from every lesion: only the lesions scoring above it count
    assert lesions.tpr_at_zero_false_positives(scores, gt, brain) == pytest.approx(2 / 3)
    scores[2, 2, 2] = 2.0  # a tie is not above
    assert lesions.tpr_at_zero_false_positives(scores, gt, brain) == pytest.approx(1 / 3)


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
