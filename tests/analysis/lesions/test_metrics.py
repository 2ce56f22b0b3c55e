"""Lesion metrics (analysis.lesions.metrics) against hand-computed cases and brute-force references."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from analysis import lesions
from tests.analysis.lesions.brute_force import SPACINGS, brute_distances, brute_surface, random_blob, single_voxel

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
        np.testing.assert_array_equal(lesions.surface(mask), brute_surface(mask))
    assert not lesions.surface(np.zeros((4, 4, 4))).any()


# -------------------------------------------------------------------------------------------- surface distances


@pytest.mark.parametrize("spacing", SPACINGS)
def test_directed_distances_match_cdist_on_random_blobs(spacing):
    rng = np.random.default_rng(1)
    for _ in range(3):
        a, b = random_blob(rng), random_blob(rng)
        for source, target in [(a, b), (b, a)]:
            expected = brute_distances(source, target, spacing)
            got = lesions.directed_surface_distances(source, target, spacing)
            np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
        assert lesions.mean_surface_distance(a, b, spacing) == pytest.approx(brute_distances(a, b, spacing).mean())
        for percentile in (50.0, 99.0, 100.0):
            expected = np.percentile(brute_distances(a, b, spacing), percentile)
            assert lesions.hausdorff_distance(a, b, spacing, percentile) == pytest.approx(expected)
        symmetric = (brute_distances(a, b, spacing).mean() + brute_distances(b, a, spacing).mean()) / 2
        assert lesions.symmetric_mean_surface_distance(a, b, spacing) == pytest.approx(symmetric)


def test_single_voxels_four_apart_at_6mm():
    shape = (10, 6, 6)
    gt, pred = single_voxel(shape, (2, 3, 3)), single_voxel(shape, (6, 3, 3))
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
    assert pred_to_gt == pytest.approx(brute_distances(pred, gt, spacing).mean())
    assert pred_to_gt > 2.0
    assert lesions.hausdorff_distance(pred, gt, spacing, 100) == pytest.approx(np.sqrt(12))  # a corner
    assert lesions.symmetric_mean_surface_distance(gt, pred, spacing) == pytest.approx((2.0 + pred_to_gt) / 2)


def test_empty_masks():
    gt = single_voxel((5, 5, 5), (2, 2, 2))
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


# ------------------------------------------------------------------------------------------- threshold-free figures
def test_voxel_auroc_equals_sklearn_inside_the_brain_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(21)
    shape = (7, 8, 9)
    brain = np.zeros(shape, dtype=bool)
    brain[1:6, 1:7, 1:8] = True
    gt = random_blob(rng, shape, 0.1) & brain
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


