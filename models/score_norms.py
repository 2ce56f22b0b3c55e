"""Multiscale score norms (MSMA, dissertation ch. 3.2): per subject, ``(||sigma_i s(x, sigma_i)||_2)_i`` over the
brain voxels, for the L read-out sigmas of the schedule.

Each (subject, scale) forward pass runs once. The (subject, scale) pairs are packed into batches of
``batch_size`` images in the channels-last-3d memory layout under ``torch.inference_mode``; every operation of the
network acts on one image at a time (GroupNorm, not BatchNorm), so a subject's norms do not depend on which
subjects share its batch. The per-voxel values ``sigma_i s(x, sigma_i)`` inside the brain can be kept (written
into an array the caller provides, e.g. a memory map) for Spatial-MSMA's patch norms, so nothing is recomputed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from models.score_net import ScoreNet


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
        Images per forward pass; (subject, scale) pairs are packed across subjects.
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
    pairs = [(i, j) for i in range(n) for j in range(n_scales)]
    squared = np.zeros((n, n_scales), dtype=np.float64)
    autocast = device.startswith("cuda")
    with torch.inference_mode(), tqdm(total=n, desc="score norms", unit="subject", disable=not progress) as bar:
        done = 0
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start : start + batch_size]
            subject = torch.tensor([p[0] for p in chunk])
            scale = torch.tensor([p[1] for p in chunk])
            x = images[subject].to(device).contiguous(memory_format=torch.channels_last_3d)
            sigma = sigmas_t[scale].to(device)
            if autocast:
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    score = model(x, sigma).float()
            else:
                score = model(x, sigma)
            scaled = (score.flatten(1)[:, flat_mask] * sigma[:, None]).cpu()
            values = scaled.double().pow(2).sum(dim=1).numpy()
            squared[subject.numpy(), scale.numpy()] = values
            if voxel_scores_out is not None:
                block = scaled.numpy()
                for row, (i, j) in enumerate(chunk):
                    voxel_scores_out[i, j] = block[row]
            finished = (chunk[-1][0] + 1) if chunk[-1][1] == n_scales - 1 else chunk[-1][0]
            bar.update(finished - done)
            done = finished
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
