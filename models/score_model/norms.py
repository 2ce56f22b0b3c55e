"""Multiscale score norms (MSMA, dissertation ch. 3.2): per subject, ``(||sigma_i s(x, sigma_i)||_2)_i`` over the
brain voxels, for the L read-out sigmas of the schedule.

Each (subject, scale) forward pass runs once: ``batch_size`` subjects at one scale per pass, in the
channels-last-3d memory layout under ``torch.inference_mode``; every operation of the
network acts on one image at a time (GroupNorm, not BatchNorm), so a subject's norms do not depend on which
subjects share its batch. The per-voxel values ``sigma_i s(x, sigma_i)`` inside the brain can be kept (written
into an array the caller provides, e.g. a memory map) for Spatial-MSMA's patch norms, so nothing is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from models.score_model.network import ScoreNet


@dataclass
class ScorePasses:
    """Result of the score passes over a set of subjects."""

    norms: np.ndarray
    """(n_subjects, L) float64: ||sigma_i s(x, sigma_i)||_2 over brain voxels, scale 0 = smallest sigma."""
    sigmas: np.ndarray
    """(L,) the read-out sigmas."""
    voxel_scores: np.ndarray | None
    """(n_subjects, L, n_brain_voxels): sigma_i s(x, sigma_i) at each brain voxel (C order of the mask), if kept."""


def _as_images(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    images = torch.as_tensor(images, dtype=torch.float32)
    if images.dim() == 4:
        images = images[:, None]
    if images.dim() != 5 or images.shape[1] != 1:
        raise ValueError(f"expected images of shape (n, D, H, W) or (n, 1, D, H, W), got {tuple(images.shape)}")
    return images


def score_norms(
    model: ScoreNet,
    images: np.ndarray | torch.Tensor,
    mask: np.ndarray,
    sigmas: np.ndarray | torch.Tensor,
    *,
    batch_size: int = 20,
    voxel_scores_out: np.ndarray | None = None,
    device: str = "cpu",
    progress: bool = False,
) -> ScorePasses:
    """Multiscale score norms of ``images`` (n, D, H, W) inside ``mask`` (D, H, W), one forward pass per pair.

    Parameters
    ----------
    batch_size : int
        Subjects per forward pass (all at the same scale).
    voxel_scores_out : array (n, L, n_brain_voxels), optional
        Filled with ``sigma_i s(x, sigma_i)`` at the brain voxels (any float dtype; a ``numpy.memmap`` works).
    """
    images = _as_images(images)
    sigmas_t = torch.as_tensor(np.asarray(sigmas), dtype=torch.float32)
    mask_t = torch.as_tensor(np.asarray(mask, dtype=bool))
    if tuple(mask_t.shape) != tuple(images.shape[2:]):
        raise ValueError(f"mask shape {tuple(mask_t.shape)} differs from the image grid {tuple(images.shape[2:])}")
    n, n_scales, n_voxels = len(images), len(sigmas_t), int(mask_t.sum())
    if voxel_scores_out is not None and voxel_scores_out.shape != (n, n_scales, n_voxels):
        raise ValueError(f"voxel_scores_out: expected shape {(n, n_scales, n_voxels)}, got {voxel_scores_out.shape}")
    flat_mask = mask_t.flatten().to(device)
    model = model.to(device=device, memory_format=torch.channels_last_3d).eval()
    squared = np.zeros((n, n_scales), dtype=np.float64)
    autocast = device.startswith("cuda")
    with torch.inference_mode(), tqdm(total=n, desc="score norms", unit="subject", disable=not progress) as bar:
        for start in range(0, n, batch_size):
            subjects = slice(start, min(start + batch_size, n))
            x = images[subjects].to(device).contiguous(memory_format=torch.channels_last_3d)
            for j in range(n_scales):
                # One scale per forward pass: the analytic Gaussian's k x k solve is shared by the batch.
                sigma = sigmas_t[j].expand(len(x)).to(device)
                if autocast:
                    with torch.autocast("cuda", dtype=torch.bfloat16):
                        score = model(x, sigma).float()
                else:
                    score = model(x, sigma)
                scaled = (score.flatten(1)[:, flat_mask] * sigma[:, None]).cpu()
                squared[subjects, j] = scaled.double().pow(2).sum(dim=1).numpy()
                if voxel_scores_out is not None:
                    voxel_scores_out[subjects, j] = scaled.numpy()
            bar.update(len(x))
    return ScorePasses(norms=np.sqrt(squared), sigmas=sigmas_t.numpy(), voxel_scores=voxel_scores_out)


def score_norms_naive(model: ScoreNet, images: np.ndarray | torch.Tensor, mask: np.ndarray, sigmas) -> np.ndarray:
    """Reference implementation: one forward pass per scale per subject (float32, contiguous layout).

    Used by ``bench/score_norms.py`` and the tests to check :func:`score_norms`; returns (n, L).
    """
    images = _as_images(images)
    model = model.to(memory_format=torch.contiguous_format).eval()
    flat_mask = torch.as_tensor(np.asarray(mask, dtype=bool)).flatten()
    sigmas_t = torch.as_tensor(np.asarray(sigmas), dtype=torch.float32)
    out = np.zeros((len(images), len(sigmas_t)))
    with torch.no_grad():
        for i in range(len(images)):
            for j in range(len(sigmas_t)):
                score = model(images[i : i + 1].contiguous(), sigmas_t[j : j + 1])
                out[i, j] = float((score.flatten()[flat_mask] * sigmas_t[j]).double().norm())
    return out
