"""Subject volumes of a validated study as arrays, with the intensity normalisation the models expect.

Scanners and preprocessing pipelines leave T1w intensities on arbitrary scales, so each volume is divided by a
robust maximum of its own brain voxels (the 99th percentile): brain tissue then lies in about [0, 1], the range the
noise schedule and the score network are derived for, and a global intensity difference between sites does not
read as an anomaly.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from tqdm.auto import tqdm

from analysis.study.study import Study
from analysis.study.volumes import load_volume

NORMALISATIONS = ("brain_p99", "none")


def subject_image_paths(study: Study, subject_ids: Sequence[str], modality: str | None = None) -> list:
    """Resolved image paths of ``subject_ids`` for ``modality`` (default: the manifest's first modality)."""
    modality = modality or next(iter(study.manifest.subjects.images))
    return [study.manifest.resolve(str(study.subjects.loc[i, modality])) for i in subject_ids]


def load_images(
    study: Study, subject_ids: Sequence[str], *, modality: str | None = None, progress: bool = False
) -> np.ndarray:
    """Read the volumes of ``subject_ids`` on the study grid: (n, D, H, W) float32, in the order given."""
    paths = subject_image_paths(study, subject_ids, modality)
    resample = study.manifest.options.resample_to_template
    out = np.empty((len(paths), *study.grid.shape), dtype=np.float32)

    def read(item):
        index, path = item
        out[index] = load_volume(path, study.grid, resample=resample)

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        jobs = pool.map(read, enumerate(paths))
        for _ in tqdm(jobs, total=len(paths), desc="reading volumes", unit="volume", disable=not progress):
            pass
    return out


def normalise_intensity(images: np.ndarray, mask: np.ndarray, method: str = "brain_p99") -> np.ndarray:
    """Normalise each volume (n, D, H, W) in place and return it; voxels outside ``mask`` are set to 0.

    ``brain_p99`` divides by the 99th percentile of the volume's brain voxels; ``none`` only clears the background.
    """
    if method not in NORMALISATIONS:
        raise ValueError(f"intensity normalisation: expected one of {NORMALISATIONS}, got {method!r}")
    mask = np.asarray(mask, dtype=bool)
    images[:, ~mask] = 0.0
    if method == "brain_p99":
        scale = np.percentile(images[:, mask], 99, axis=1)
        if np.any(scale <= 0):
            raise ValueError("cannot normalise a volume whose brain voxels are all <= 0")
        images /= scale[:, None, None, None].astype(images.dtype)
    return images


def files_digest(paths: Sequence[os.PathLike | str]) -> str:
    """SHA-256 over the bytes of ``paths`` in order: identifies the training data of a checkpoint."""
    digest = hashlib.sha256()
    for path in paths:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()
