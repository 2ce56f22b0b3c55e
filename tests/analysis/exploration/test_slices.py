"""Slicing arithmetic of the viewer on an odd (7, 8, 9) grid, with a mirrored x axis, checked by hand indexing."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.exploration.slices import PLANES, SliceGeometry, peak_voxel, region_centre

SHAPE = (7, 8, 9)
RAS = np.array([[3.0, 0, 0, -9.0], [0, 2.0, 0, -7.0], [0, 0, 4.0, -16.0], [0, 0, 0, 1]])
LAS = RAS.copy()
LAS[0, 0], LAS[0, 3] = -3.0, 9.0  # x runs right-to-left in voxel order, as in many MNI templates


def _volume():
    return np.arange(np.prod(SHAPE), dtype=float).reshape(SHAPE)


@pytest.mark.parametrize("affine", [RAS, LAS], ids=["RAS", "LAS"])
def test_cuts_have_rows_up_and_columns_across_with_ascending_world_coordinates(affine):
    g = SliceGeometry(SHAPE, affine)
    volume = _volume()
    i, j, k = 2, 5, 6
    for plane, index, expected in (
        ("axial", k, volume[:, :, k].T),  # rows y, columns x
        ("coronal", j, volume[:, j, :].T),  # rows z, columns x
        ("sagittal", i, volume[i, :, :].T),  # rows z, columns y
    ):
        cut = g.cut(volume, plane, index)
        h_axis, v_axis, _ = PLANES[plane]
        if affine[h_axis, h_axis] < 0:
            expected = expected[:, ::-1]
        assert cut.shape == (SHAPE[v_axis], SHAPE[h_axis])
        np.testing.assert_array_equal(cut, expected)
        assert np.all(np.diff(g.coordinates(h_axis)) > 0) and np.all(np.diff(g.coordinates(v_axis)) > 0)


@pytest.mark.parametrize("affine", [RAS, LAS], ids=["RAS", "LAS"])
def test_a_click_lands_on_the_voxel_drawn_there(affine):
    g = SliceGeometry(SHAPE, affine)
    volume = _volume()
    voxel = [3, 4, 5]
    for plane in PLANES:
        h_axis, v_axis, normal = PLANES[plane]
        cut = g.cut(volume, plane, voxel[normal])
        row, column = 2, 4  # any pixel of the drawn cut
        h, v = g.coordinates(h_axis)[column], g.coordinates(v_axis)[row]
        clicked = g.voxel_from_click(plane, h, v, voxel)
        assert clicked[normal] == voxel[normal]
        assert volume[tuple(clicked)] == cut[row, column]
        # and the world position of that voxel is where it was drawn
        world = g.world(clicked)
        assert world[h_axis] == pytest.approx(h) and world[v_axis] == pytest.approx(v)


def test_the_mean_of_a_stacks_cut_is_the_cut_of_the_mean_volume():
    rng = np.random.default_rng(0)
    stack = rng.normal(size=(5, *SHAPE)).astype(np.float32)
    g = SliceGeometry(SHAPE, LAS)
    rows = [4, 1, 3]
    for plane, index in (("axial", 7), ("coronal", 2), ("sagittal", 6)):
        np.testing.assert_allclose(g.cut_stack(stack, rows, plane, index),
                                   g.cut(stack[rows].mean(axis=0), plane, index), rtol=1e-6)


def test_stepping_stays_on_the_grid_and_an_oblique_grid_falls_back_to_voxels():
    g = SliceGeometry(SHAPE, RAS)
    assert g.step([0, 0, 8], "axial", 1) == [0, 0, 8] and g.step([0, 0, 8], "sagittal", -1) == [0, 0, 8]
    assert g.step([3, 3, 3], "coronal", 1) == [3, 4, 3]
    oblique = RAS.copy()
    oblique[0, 1] = 0.5
    tilted = SliceGeometry(SHAPE, oblique)
    assert not tilted.aligned and tilted.unit == "voxel"
    np.testing.assert_array_equal(tilted.coordinates(1), np.arange(8))
    assert tilted.voxel_from_click("axial", 2.2, 6.9, [0, 0, 1]) == [2, 7, 1]


def test_peak_and_region_centre():
    volume = np.full(SHAPE, np.nan)
    assert peak_voxel(volume) is None
    volume[1:4, 2:5, 3:6] = 0.0
    volume[2, 3, 4] = 5.0
    assert peak_voxel(volume) == [2, 3, 4]
    labels = np.zeros(SHAPE, dtype=int)
    labels[1:6, 1, 1] = 3  # a line: its centroid is a voxel of it
    labels[0, 0, 0] = labels[6, 7, 8] = 4  # two corners: the centroid is outside, the centre is a voxel of it
    assert region_centre(labels, 3) == [3, 1, 1]
    assert labels[tuple(region_centre(labels, 4))] == 4
    assert region_centre(labels, 9) is None
