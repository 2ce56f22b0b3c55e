"""NIfTI volumes on a study grid: reading with checks, resampling, atomic writing."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from nibabel.processing import resample_from_to

AFFINE_ATOL_MM = 1e-3


@dataclass(frozen=True)
class Grid:
    """A voxel grid in world (MNI, mm) space: array shape and voxel-to-world affine."""

    shape: tuple[int, int, int]
    affine: np.ndarray

    @property
    def voxel_size(self) -> tuple[float, float, float]:
        return tuple(float(v) for v in np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0)))

    def same_as(self, other: Grid) -> bool:
        return self.shape == other.shape and np.allclose(self.affine, other.affine, rtol=0.0, atol=AFFINE_ATOL_MM)

    def describe(self) -> str:
        size = "x".join(f"{v:g}" for v in self.voxel_size)
        origin = ", ".join(f"{v:g}" for v in self.affine[:3, 3])
        return f"{'x'.join(map(str, self.shape))} voxels of {size} mm, origin ({origin}) mm"

    @classmethod
    def of(cls, image: nib.spatialimages.SpatialImage) -> Grid:
        return cls(tuple(int(s) for s in image.shape[:3]), np.asarray(image.affine, dtype=float))


class VolumeError(ValueError):
    """A volume file cannot be used; the message says what was expected and what was found."""

    def __init__(self, expected: str, found: str):
        self.expected = expected
        self.found = found
        super().__init__(f"expected {expected}; found {found}")


def load_header(path: str | os.PathLike) -> nib.spatialimages.SpatialImage:
    """Open a NIfTI file (header only; data stay on disk). Raises :class:`VolumeError` if it cannot be read."""
    path = Path(path)
    if path.is_dir():
        raise VolumeError("a NIfTI file", "a folder")
    if not path.is_file():
        raise VolumeError("an existing NIfTI file", "no such file")
    if path.stat().st_size == 0:
        raise VolumeError("a NIfTI image", "an empty file")
    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises many types for a corrupt header
        raise VolumeError("a readable NIfTI image", f"a file nibabel cannot open ({exc})") from None
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise VolumeError("a NIfTI image", f"a {type(image).__name__}")
    shape = image.shape
    if len(shape) == 4 and shape[3] == 1:
        image = image.slicer[..., 0]
    elif len(shape) != 3:
        raise VolumeError("a 3-D volume", f"an image of shape {shape}")
    return image


def read_data(image: nib.spatialimages.SpatialImage, dtype=np.float32) -> np.ndarray:
    """Read the voxel array; a truncated or corrupt data block raises :class:`VolumeError`."""
    try:
        data = np.asarray(image.dataobj, dtype=dtype)
    except (OSError, EOFError, ValueError, zlib.error, gzip.BadGzipFile) as exc:
        raise VolumeError("a complete NIfTI data block", f"a corrupt or truncated file ({exc})") from None
    return data


def check_grid(image: nib.spatialimages.SpatialImage, grid: Grid) -> None:
    """Raise :class:`VolumeError` when the image does not lie on ``grid``."""
    found = Grid.of(image)
    if found.shape != grid.shape:
        raise VolumeError(f"shape {grid.shape} of the template grid", f"shape {found.shape}")
    if not np.allclose(found.affine, grid.affine, rtol=0.0, atol=AFFINE_ATOL_MM):
        raise VolumeError(
            f"the template affine {np.round(grid.affine, 3).tolist()}",
            f"affine {np.round(found.affine, 3).tolist()} (resample the image to the template grid, or set "
            "options.resample_to_template: true)",
        )


def load_volume(path: str | os.PathLike, grid: Grid, *, resample: bool = False, order: int = 1) -> np.ndarray:
    """Read a volume as float32 on ``grid``.

    Parameters
    ----------
    resample
        Resample a volume on another grid (``order`` 1: trilinear; 0: nearest neighbour for labels). Without it a
        grid mismatch is an error: volumes are never resampled silently.

    Raises
    ------
    VolumeError
        Unreadable file, wrong grid (without ``resample``), or NaN/Inf voxels.
    """
    image = load_header(path)
    if not Grid.of(image).same_as(grid):
        if not resample:
            check_grid(image, grid)
        data = read_data(image)
        image = resample_from_to(nib.Nifti1Image(data, image.affine), (grid.shape, grid.affine), order=order)
    data = read_data(image)
    bad = ~np.isfinite(data)
    if bad.any():
        raise VolumeError("finite voxel values", f"{int(bad.sum())} NaN or Inf voxels")
    return data


def resample_labels(image: nib.spatialimages.SpatialImage, grid: Grid) -> np.ndarray:
    """Nearest-neighbour resampling of an integer label image onto ``grid`` (labels are never interpolated)."""
    labels = np.asarray(image.dataobj)
    src = nib.Nifti1Image(labels.astype(np.int32), image.affine)
    out = resample_from_to(src, (grid.shape, grid.affine), order=0, mode="constant", cval=0)
    return np.asarray(out.dataobj).astype(np.int32)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so a reader sees the old file or the new one, never a partial one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def swap_in_folder(staging: str | os.PathLike, folder: str | os.PathLike) -> None:
    """Put the finished folder ``staging`` where ``folder`` is: an existing ``folder`` is moved aside first and
    removed only once ``staging`` has taken its place, so a reader finds the old folder or the new one."""
    staging, folder = Path(staging), Path(folder)
    old = None
    if folder.exists():
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        os.replace(folder, old)
    os.replace(staging, folder)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_volume(path: str | os.PathLike, data: np.ndarray, grid: Grid, dtype=np.float32) -> None:
    """Save ``data`` as NIfTI on ``grid`` atomically (qform and sform set, openable in FSLeyes or ITK-SNAP)."""
    if tuple(data.shape) != grid.shape:
        raise ValueError(f"data of shape {data.shape} does not fit grid {grid.shape}")
    image = nib.Nifti1Image(np.asarray(data, dtype=dtype), grid.affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(grid.affine, code=4)  # 4 = MNI152 space
    image.set_sform(grid.affine, code=4)
    payload = image.to_bytes()
    if str(path).endswith(".gz"):
        payload = gzip.compress(payload, compresslevel=6, mtime=0)
    atomic_write_bytes(path, payload)
