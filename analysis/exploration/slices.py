"""Orthogonal slices of volumes on a study grid, and the voxel <-> world (MNI, mm) arithmetic of a viewer.

Planes are named by what they show: ``axial`` (normal to the z axis: x across, y up), ``coronal`` (normal to y:
x across, z up) and ``sagittal`` (normal to x: y across, z up). A cut is returned as a 2-D array whose rows run
along the plane's vertical axis and columns along its horizontal one, with world coordinates ascending along
both, so that drawn with ascending axes it shows the neurological convention (the subject's left on the left, as
in nilearn): RAS world axes, x growing to the subject's right.

Grids whose affine is diagonal (with any signs) are cut in millimetres; any other affine falls back to voxel
indices along the axes, with world coordinates still given by :meth:`SliceGeometry.world`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PLANES = {"sagittal": (1, 2, 0), "coronal": (0, 2, 1), "axial": (0, 1, 2)}
"""plane -> (horizontal voxel axis, vertical voxel axis, normal voxel axis)."""

AXIS_NAMES = "xyz"
"""World axis of each voxel axis on an aligned grid."""


@dataclass(frozen=True)
class SliceGeometry:
    """Slicing arithmetic of one grid: ``shape`` (D, H, W) and the voxel-to-world ``affine`` (4 x 4)."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def aligned(self) -> bool:
        """True when voxel axis a runs along world axis a (a diagonal affine): slices are drawn in mm."""
        linear = np.asarray(self.affine)[:3, :3]
        return bool(np.allclose(linear - np.diag(np.diag(linear)), 0.0, atol=1e-6)) and bool(
            np.all(np.abs(np.diag(linear)) > 0)
        )

    @property
    def unit(self) -> str:
        return "mm" if self.aligned else "voxel"

    def coordinates(self, axis: int) -> np.ndarray:
        """Ascending positions of the voxels along a voxel axis: mm when :attr:`aligned`, else voxel indices."""
        n = self.shape[axis]
        if not self.aligned:
            return np.arange(n, dtype=float)
        values = self.affine[axis, axis] * np.arange(n) + self.affine[axis, 3]
        return values if self.affine[axis, axis] > 0 else values[::-1]

    def _flip(self, axis: int) -> bool:
        return self.aligned and self.affine[axis, axis] < 0

    def cut(self, volume: np.ndarray, plane: str, index: int) -> np.ndarray:
        """The slice of ``volume`` (D, H, W) at voxel ``index`` along the plane's normal, as (vertical, horizontal)
        with ascending coordinates along both."""
        horizontal, vertical, normal = PLANES[plane]
        picked = np.take(volume, int(index), axis=normal).T  # (vertical, horizontal): h < v for every plane
        if self._flip(vertical):
            picked = picked[::-1]
        if self._flip(horizontal):
            picked = picked[:, ::-1]
        return picked

    def cut_stack(self, stack: np.ndarray, rows, plane: str, index: int) -> np.ndarray:
        """The mean over ``rows`` of a (subjects, D, H, W) stack's slices (a memory map reads only those slices)."""
        _, _, normal = PLANES[plane]
        where = [slice(None)] * 4
        where[0] = np.asarray(rows, dtype=int)
        where[1 + normal] = int(index)
        picked = np.asarray(stack[tuple(where)], dtype=np.float32)  # (subjects, remaining two axes)
        mean = picked.mean(axis=0) if len(picked) else np.full(picked.shape[1:], np.nan, dtype=np.float32)
        full = np.expand_dims(mean, axis=normal)
        return self.cut(full, plane, 0)

    def index_of(self, axis: int, position: float) -> int:
        """The voxel index along ``axis`` nearest a position given in :meth:`coordinates` units."""
        if self.aligned:
            index = (position - self.affine[axis, 3]) / self.affine[axis, axis]
        else:
            index = position
        return int(np.clip(np.rint(index), 0, self.shape[axis] - 1))

    def voxel_from_click(self, plane: str, horizontal: float, vertical: float, voxel) -> list[int]:
        """The voxel under a click at (horizontal, vertical) on ``plane``; the normal coordinate is kept."""
        h_axis, v_axis, _ = PLANES[plane]
        out = [int(v) for v in voxel]
        out[h_axis] = self.index_of(h_axis, horizontal)
        out[v_axis] = self.index_of(v_axis, vertical)
        return out

    def position(self, axis: int, index: int) -> float:
        """Position of voxel ``index`` along ``axis`` in :meth:`coordinates` units."""
        return float(self.affine[axis, axis] * index + self.affine[axis, 3]) if self.aligned else float(index)

    def world(self, voxel) -> np.ndarray:
        """World (MNI) coordinates in mm of a voxel (i, j, k)."""
        return (np.asarray(self.affine) @ np.append(np.asarray(voxel, dtype=float), 1.0))[:3]

    def step(self, voxel, plane: str, delta: int) -> list[int]:
        """Move ``delta`` voxels along the plane's normal, within the grid (keyboard stepping through slices)."""
        _, _, normal = PLANES[plane]
        out = [int(v) for v in voxel]
        out[normal] = int(np.clip(out[normal] + delta, 0, self.shape[normal] - 1))
        return out


def peak_voxel(volume: np.ndarray) -> list[int] | None:
    """The voxel of the highest finite value (the most anomalous), or None when every value is NaN."""
    finite = np.isfinite(volume)
    if not finite.any():
        return None
    flat = np.where(finite, volume, -np.inf).argmax()
    return [int(v) for v in np.unravel_index(flat, volume.shape)]


def region_centre(labels: np.ndarray, index: int, mask: np.ndarray | None = None) -> list[int] | None:
    """The voxel of a region nearest its centroid (a voxel inside the region even when it is curved), or None
    when the label has no voxel (inside ``mask``, when given)."""
    inside = labels == index
    if mask is not None:
        inside &= mask
    voxels = np.argwhere(inside)
    if not len(voxels):
        return None
    centroid = voxels.mean(axis=0)
    return [int(v) for v in voxels[np.argmin(((voxels - centroid) ** 2).sum(axis=1))]]
