"""Patch score norms (Spatial-MSMA, dissertation ch. 5.2): per brain voxel, the L-vector of local norms
``(||sigma_i s(x, sigma_i)||_2 over the k x k x k neighbourhood)_i``.

They are computed from the per-voxel values ``sigma_i s(x, sigma_i)`` that the score passes keep
(``voxel_scores.npy`` of a run), so the score network is not run again. Voxels outside the brain mask count as
zero: a patch at the edge of the brain holds only its brain voxels.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import uniform_filter
from tqdm.auto import tqdm

from analysis.checks import check_int


def _check(voxel_scores, mask: np.ndarray, patch_size: int) -> tuple[np.ndarray, int]:
    check_int(patch_size, "patch_size")
    if patch_size % 2 == 0:
        raise ValueError(f"patch_size must be odd (a neighbourhood centred on the voxel); received {patch_size}")
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"mask must be a 3-D brain mask; got shape {mask.shape}")
    if voxel_scores.ndim != 3 or voxel_scores.shape[2] != int(mask.sum()):
        raise ValueError(
            f"voxel_scores must have shape (subjects, scales, {int(mask.sum())} brain voxels); "
            f"got {tuple(voxel_scores.shape)}"
        )
    return mask, patch_size


def patch_norms(
    voxel_scores, mask: np.ndarray, patch_size: int = 3, *, progress: bool = False, out: np.ndarray | None = None
) -> np.ndarray:
    """Patch norms of every subject at every brain voxel.

    Parameters
    ----------
    voxel_scores : array (n_subjects, L, n_brain_voxels)
        ``sigma_i s(x, sigma_i)`` at the brain voxels in C order of ``mask`` (any float dtype; a memory map works).
    mask : bool array (D, H, W)
    patch_size : int, default 3
        Odd edge length k of the cubic neighbourhood.
    out : array (n_subjects, n_brain_voxels, L), optional
        Written in place (e.g. a memory map); a new float32 array otherwise.

    Returns
    -------
    ndarray (n_subjects, n_brain_voxels, L), float32
    """
    mask, k = _check(voxel_scores, mask, patch_size)
    n, n_scales, n_voxels = voxel_scores.shape
    if out is None:
        out = np.empty((n, n_voxels, n_scales), dtype=np.float32)
    elif out.shape != (n, n_voxels, n_scales):
        raise ValueError(f"out: expected shape {(n, n_voxels, n_scales)}, got {out.shape}")
    grid = np.zeros((n_scales, *mask.shape), dtype=np.float64)
    for s in tqdm(range(n), desc="patch norms", unit="subject", disable=not progress):
        grid[:, mask] = np.square(np.asarray(voxel_scores[s], dtype=np.float64))
        # The box mean times k^3 is the box sum; rounding can leave tiny negatives where the sum is zero.
        summed = uniform_filter(grid, size=(1, k, k, k), mode="constant", cval=0.0) * k**3
        out[s] = np.sqrt(np.clip(summed[:, mask], 0.0, None)).T
    return out


def patch_norms_naive(voxel_scores, mask: np.ndarray, patch_size: int = 3) -> np.ndarray:
    """Reference implementation (explicit loops over voxels and offsets) used by the tests."""
    mask, k = _check(voxel_scores, mask, patch_size)
    n, n_scales, n_voxels = voxel_scores.shape
    coords = np.argwhere(mask)
    r = k // 2
    out = np.zeros((n, n_voxels, n_scales))
    for s in range(n):
        grid = np.zeros((n_scales, *mask.shape))
        grid[:, mask] = np.asarray(voxel_scores[s], dtype=np.float64)
        for v, (i, j, h) in enumerate(coords):
            block = grid[
                :, max(i - r, 0) : i + r + 1, max(j - r, 0) : j + r + 1, max(h - r, 0) : h + r + 1
            ].reshape(n_scales, -1)
            out[s, v] = np.sqrt((block**2).sum(axis=1))
    return out
