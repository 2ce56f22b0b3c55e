"""Voxel anomaly heatmaps of Spatial-MSMA and of the simple maps it is compared with, and their files in a run.

A run stores the heatmaps twice:

- ``heatmaps.npy``: one float32 stack (subjects in ``score_norms`` order, D, H, W), NaN outside the brain mask,
  which the app opens as a memory map;
- ``heatmaps/<nnnn>_<subject>.nii.gz``: one NIfTI per subject on the template grid (the template's affine), to
  open in FSLeyes or ITK-SNAP next to the subject's image.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import grey_erosion
from tqdm.auto import tqdm

from analysis.study.volumes import Grid, save_volume
from models.spatial.torch_model import SpatialMSMA

VOXEL_MAPPINGS = ("centre", "min")
"""How patch scores become voxel scores (:func:`patches_to_voxels`)."""
HEATMAP_MAPPING = "centre"
"""The voxel mapping of Spatial-MSMA's heatmaps."""

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


def heatmap_file_names(ids: list[str]) -> list[str]:
    """``<nnnn>_<subject id with anything but letters, digits, '.', '_' and '-' replaced by '_'>.nii.gz``.

    The row number keeps names unique and the id never becomes a path of its own (no separators, no ``..``).
    """
    return [f"{k:04d}_{_UNSAFE.sub('_', str(sid)).strip('.') or 'subject'}.nii.gz" for k, sid in enumerate(ids)]


def patches_to_voxels(patch_values: np.ndarray, mask: np.ndarray, patch_size: int,
                      mapping: str = HEATMAP_MAPPING) -> np.ndarray:
    """Voxel scores from patch scores (one per brain voxel, the patch centred on it).

    ``"centre"``: each voxel keeps the score of the patch centred on it. ``"min"``: each voxel gets the lowest score
    of the k^3 patches (centred on brain voxels) that contain it, a grey-level erosion with a k^3 box, which flags a
    voxel only when every patch around it is atypical.

    The minimum gives an anomaly larger than the patch back its own extent, but it erases one smaller than the
    patch: a 1-voxel lesion sits in the corner of most patches covering it, where it barely moves their norms. On
    the demo's 6 mm grid a 3^3 patch is 18 mm wide, wider than most of its lesions (semi-axes 5-12 mm), and the
    minimum lost most faint lesions (``experiments/spatial_ablation.py``), so heatmaps keep each patch's score at its
    centre (:data:`HEATMAP_MAPPING`). ``patch_size`` 1 returns the input unchanged either way.

    Parameters
    ----------
    patch_values : array (n_subjects, n_brain_voxels) or (n_brain_voxels,)
        One score per patch, indexed by its centre voxel (C order of ``mask``).
    """
    if mapping not in VOXEL_MAPPINGS:
        raise ValueError(f"mapping must be one of {VOXEL_MAPPINGS}; received {mapping!r}")
    values = np.asarray(patch_values)
    if patch_size == 1 or mapping == "centre":
        return values.copy()
    single = values.ndim == 1
    values = values[None] if single else values
    out = np.empty(values.shape, dtype=values.dtype)
    volume = np.empty(mask.shape, dtype=np.float64)
    for i, row in enumerate(values):
        volume.fill(np.inf)  # no patch is centred outside the brain
        volume[mask] = row
        out[i] = grey_erosion(volume, size=(patch_size,) * 3, mode="constant", cval=np.inf)[mask]
    return out[0] if single else out


def compute_heatmaps(
    model: SpatialMSMA,
    images: np.ndarray,
    norms: np.ndarray,
    rows,
    *,
    mapping: str = HEATMAP_MAPPING,
    out: np.ndarray | None = None,
    progress: bool = False,
) -> np.ndarray:
    """Voxel heatmaps (len(rows), n_brain_voxels) float32 of the given subjects, one subject at a time: the score of
    every patch under ``model`` (:meth:`~models.spatial.torch_model.SpatialMSMA.heatmaps`: the NLL, calibrated per voxel
    when the model is), mapped to voxels by :func:`patches_to_voxels` with ``mapping``."""
    rows = list(rows)
    if out is None:
        out = np.empty((len(rows), norms.shape[1]), dtype=np.float32)
    mask = model.brain_mask.numpy()
    with torch.inference_mode():
        for k, r in enumerate(tqdm(rows, desc="heatmaps", unit="subject", disable=not progress)):
            image = torch.as_tensor(np.asarray(images[r : r + 1]), dtype=torch.float32)
            patch = torch.as_tensor(np.asarray(norms[r : r + 1]), dtype=torch.float32)
            out[k] = patches_to_voxels(model.heatmaps(image, patch)[0].numpy(), mask, model.config.patch_size, mapping)
    return out


def write_heatmaps(folder: Path, heatmaps: np.ndarray, mask: np.ndarray, grid: Grid, ids: list[str],
                   *, progress: bool = False) -> list[str]:
    """Write ``heatmaps.npy`` and ``heatmaps/*.nii.gz`` into ``folder``; returns the NIfTI names (ids' order)."""
    stack = np.lib.format.open_memmap(
        folder / "heatmaps.npy", mode="w+", dtype=np.float32, shape=(len(ids), *mask.shape)
    )
    names = heatmap_file_names(ids)
    (folder / "heatmaps").mkdir(exist_ok=True)
    volume = np.full(mask.shape, np.nan, dtype=np.float32)
    for k, name in enumerate(tqdm(names, desc="heatmap files", unit="subject", disable=not progress)):
        volume[mask] = heatmaps[k]
        stack[k] = volume
        save_volume(folder / "heatmaps" / name, volume, grid, dtype=np.float32)  # NaN outside the brain
    stack.flush()
    del stack
    return names


def baseline_maps(
    rows,
    images: np.ndarray,
    mask: np.ndarray,
    train_rows,
    voxel_scores: np.ndarray,
    norms: np.ndarray,
    unconditional: SpatialMSMA,
    patch_size: int,
) -> dict[str, np.ndarray]:
    """The maps of the lesion baselines (:data:`analysis.methods.LESION_BASELINES`), (len(rows), n_brain_voxels)
    float32, of the given subjects."""
    rows, train_rows = list(rows), list(train_rows)
    brain_train = np.stack([np.asarray(images[r])[mask] for r in train_rows]).astype(np.float64)
    mean, sd = brain_train.mean(axis=0), brain_train.std(axis=0)
    sd = np.where(sd > 0, sd, sd[sd > 0].min() if (sd > 0).any() else 1.0)
    brain = np.stack([np.asarray(images[r])[mask] for r in rows]).astype(np.float64)
    patch_sums = np.stack([np.asarray(norms[r], dtype=np.float32).sum(axis=1) for r in rows])
    return {
        "z_score": (np.abs(brain - mean) / sd).astype(np.float32),
        "voxel_magnitude": np.stack(
            [np.abs(np.asarray(voxel_scores[r], dtype=np.float32)).sum(axis=0) for r in rows]
        ),
        "patch_magnitude": patches_to_voxels(patch_sums, mask, patch_size, "centre"),
        "patch_magnitude_min": patches_to_voxels(patch_sums, mask, patch_size, "min"),
        "unconditional_flow": compute_heatmaps(unconditional, images, norms, rows),
    }
