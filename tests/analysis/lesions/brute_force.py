"""Brute-force references the lesion tests compare the vectorised metrics with."""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy.spatial.distance import cdist

SPACINGS = [(6.0, 6.0, 6.0), (1.0, 2.0, 3.0)]

def brute_surface(mask: np.ndarray) -> np.ndarray:
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


def brute_distances(source: np.ndarray, target: np.ndarray, spacing) -> np.ndarray:
    """Min over cdist between surface-voxel coordinates in mm; source surface in C order."""
    source_points = np.argwhere(brute_surface(source)) * np.asarray(spacing)
    target_points = np.argwhere(brute_surface(target)) * np.asarray(spacing)
    return cdist(source_points, target_points).min(axis=1)


def random_blob(rng: np.random.Generator, shape=(12, 13, 11), fraction=0.25) -> np.ndarray:
    noise = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    return noise > np.quantile(noise, 1 - fraction)


def single_voxel(shape, index) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[index] = True
    return mask

