"""The variance-exploding (VE) noise schedule of the score model (dissertation eq. 2.5, ch. 5.4).

Images are perturbed as ``x_noisy = x + sigma * z`` with ``z ~ N(0, I)``; the score model is trained on sigma drawn
log-uniformly between ``sigma_min`` and ``sigma_max`` and read out at ``n_scales`` sigmas spaced geometrically over
the same range (ascending: scale 0 is the smallest sigma).

Both ends come from the training images (ch. 5.4): ``sigma_min`` is the finest intensity variation the model must
resolve (the refresh passes the 1st percentile of its Gaussian's residual standard deviation,
:mod:`models.score_model.gaussian_prior`; by
default the mean over brain voxels of the across-subject standard deviation); ``sigma_max`` is the 99th percentile
of the pairwise Euclidean distances between training images, so the largest perturbation covers the data's support.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class VESchedule:
    """Noise levels of a VE perturbation, from ``sigma_min`` to ``sigma_max`` (both > 0, in intensity units)."""

    sigma_min: float
    sigma_max: float

    def __post_init__(self) -> None:
        if not (0 < self.sigma_min < self.sigma_max and math.isfinite(self.sigma_max)):
            raise ValueError(
                f"expected 0 < sigma_min < sigma_max (finite), got sigma_min={self.sigma_min}, "
                f"sigma_max={self.sigma_max}"
            )

    def sigmas(self, n_scales: int) -> torch.Tensor:
        """The ``n_scales`` read-out sigmas, geometric and ascending, shape (n_scales,), float32."""
        if n_scales < 1:
            raise ValueError(f"expected n_scales >= 1, got {n_scales}")
        if n_scales == 1:
            return torch.tensor([self.sigma_max], dtype=torch.float32)
        return torch.from_numpy(np.geomspace(self.sigma_min, self.sigma_max, n_scales)).float()

    def sample_sigmas(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` training sigmas, log-uniform on [sigma_min, sigma_max], shape (n,)."""
        u = torch.rand(n, generator=generator)
        return torch.exp(math.log(self.sigma_min) + u * (math.log(self.sigma_max) - math.log(self.sigma_min)))

    def as_dict(self) -> dict[str, float]:
        return {"sigma_min": float(self.sigma_min), "sigma_max": float(self.sigma_max)}


def sigma_range_from_data(train: np.ndarray, percentile: float = 99.0, sigma_min: float | None = None) -> VESchedule:
    """Derive the schedule from training images.

    Parameters
    ----------
    train : ndarray, shape (n_subjects, n_voxels)
        Brain voxels of the (normalised) training images; at least 2 subjects.
    percentile : float
        Percentile of the pairwise distances used as ``sigma_max``.
    sigma_min : float, optional
        The smallest sigma; default: the mean over voxels of the across-subject standard deviation.
    """
    train = np.asarray(train, dtype=np.float64)
    if train.ndim != 2 or train.shape[0] < 2:
        raise ValueError(f"expected training images of shape (n_subjects >= 2, n_voxels), got {train.shape}")
    sigma_min = float(train.std(axis=0).mean()) if sigma_min is None else float(sigma_min)
    squared = np.einsum("ij,ij->i", train, train)
    gram = train @ train.T
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None, :] - 2 * gram, 0.0))
    sigma_max = float(np.percentile(distances[np.triu_indices(len(train), 1)], percentile))
    if not sigma_min > 0:
        raise ValueError("the training images do not vary between subjects (voxel standard deviation is 0)")
    return VESchedule(sigma_min=sigma_min, sigma_max=max(sigma_max, 2 * sigma_min))
