"""Check that the files a manifest names exist, are readable and agree with each other.

:func:`validate_study` walks the whole study once and reports every problem it finds (file, field or row,
expected, found) instead of stopping at the first; when there are none it returns the loaded
:class:`~analysis.study.study.Study`. The images (template, brain mask, atlas, subject volumes) are checked here, the
tables (subjects, behaviour, lesions) in :mod:`analysis.study.table_checks`, the covariates in
:mod:`analysis.study.covariates`, the GNSM columns in :mod:`analysis.study.gnsm_columns`. What is worth saying but
stops nothing (missing covariate or GNSM values) comes back as ``Study.warnings``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from analysis.study.atlas import labels_present, read_label_table
from analysis.study.covariates import check_covariates
from analysis.study.errors import ManifestError
from analysis.study.gnsm_columns import check_gnsm_columns
from analysis.study.manifest import Manifest, check_inside
from analysis.study.study import Study
from analysis.study.table_checks import (
    Collector,
    check_behaviour,
    check_lesions,
    check_subjects,
    preview,
    read_subjects,
)
from analysis.study.tables import TableError
from analysis.study.volumes import Grid, VolumeError, check_grid, load_header, load_volume, read_data


def validate_study(
    manifest: Manifest, *, progress: bool = True, check_voxels: bool = True, subject_volumes: bool = True
) -> Study:
    """Check every file of the study and load it.

    Parameters
    ----------
    progress
        Show a progress bar while subject volumes are checked.
    check_voxels
        Read every subject volume (corrupt data, NaN/Inf). Without it only headers (shape, affine) are read.
    subject_volumes
        Open the subject images and lesion masks at all. Without them only the template, mask, atlas and tables
        are checked: what a reader of published runs (the explorer) needs, in a fraction of a second.

    Raises
    ------
    ManifestError
        Listing every problem found.
    """
    out = Collector()
    grid, mask = _check_template(manifest, out)
    atlas, names = _check_atlas(manifest, grid, out)
    table = read_subjects(manifest, out)
    subjects = check_subjects(manifest, table, out)
    covariates, covariate_table = check_covariates(manifest, table, subjects, out)
    gnsm_table = check_gnsm_columns(manifest, table, subjects, out)
    if subjects is not None and grid is not None and subject_volumes:
        _check_subject_volumes(manifest, subjects, grid, out, progress=progress, check_voxels=check_voxels)
    behaviour = check_behaviour(manifest, subjects, out)
    lesions = check_lesions(manifest, subjects, grid if subject_volumes else None, mask, out)
    if out.problems:
        raise ManifestError(out.problems)
    return Study(
        manifest, grid, mask, atlas, names, subjects, behaviour, lesions,
        covariates=covariates, covariate_table=covariate_table, warnings=tuple(out.warnings), gnsm_table=gnsm_table,
    )


def _check_template(manifest: Manifest, out: Collector) -> tuple[Grid | None, np.ndarray | None]:
    grid = mask = None
    spec = manifest.template
    try:
        image = load_header(spec.image)
        grid = Grid.of(image)
        load_volume(spec.image, grid)
    except VolumeError as exc:
        out.add(spec.image, "template.image", exc.expected, exc.found)
        return None, None
    try:
        mask_image = load_header(spec.brain_mask)
        check_grid(mask_image, grid)
        mask = load_volume(spec.brain_mask, grid) > 0
        if not mask.any():
            out.add(spec.brain_mask, "template.brain_mask", "a mask with brain voxels (> 0)", "an all-zero image")
    except VolumeError as exc:
        out.add(spec.brain_mask, "template.brain_mask", exc.expected, exc.found)
    return grid, mask


def _check_atlas(manifest: Manifest, grid: Grid | None, out: Collector):
    spec = manifest.atlas
    names = labels = None
    try:
        names = read_label_table(spec.labels)
    except TableError as exc:
        out.add(spec.labels, f"atlas.labels{' ' + exc.field if exc.field else ''}", exc.expected, exc.found)
    try:
        image = load_header(spec.image)
        if grid is not None:
            check_grid(image, grid)
        labels = read_data(image, dtype=np.float64)
        if not np.isfinite(labels).all() or (labels % 1 != 0).any() or (labels < 0).any():
            out.add(spec.image, "atlas.image", "non-negative integer labels", "fractional, negative or NaN values")
            labels = None
        else:
            labels = labels.astype(np.int32)
    except VolumeError as exc:
        out.add(spec.image, "atlas.image", exc.expected, exc.found)
    if labels is not None and names is not None:
        unnamed = sorted(set(labels_present(labels).tolist()) - set(names["index"]))
        if unnamed:
            out.add(
                spec.labels,
                "atlas.labels",
                f"a name for every label in {spec.image.name}",
                f"{len(unnamed)} labels without names: {preview(unnamed)}",
            )
    return labels, names



def _check_subject_volumes(manifest, subjects, grid, out, *, progress, check_voxels) -> None:
    """Check every subject image; volumes are read on a thread pool (decompression releases the GIL)."""
    file = manifest.subjects.table
    resample = manifest.options.resample_to_template
    jobs = []
    for row, subject_id in enumerate(subjects.index):
        for modality, column in manifest.subjects.images.items():
            value = subjects[modality].iloc[row]
            where = f"row {row + 2} ({subject_id}), column {column}"
            if pd.isna(value):
                out.add(file, where, f"a path to the subject's {modality} image", "a missing value")
            elif check_inside(manifest, str(value), where, out.problems, file=str(file)):
                jobs.append((manifest.resolve(str(value)), f"{modality} image of subject {subject_id} ({where})"))

    def check(path: Path) -> VolumeError | None:
        try:
            if check_voxels:
                load_volume(path, grid, resample=resample)
            else:
                image = load_header(path)
                if not resample:
                    check_grid(image, grid)
        except VolumeError as exc:
            return exc
        return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        results = pool.map(check, [path for path, _ in jobs])
        bar = tqdm(results, total=len(jobs), desc="checking subject volumes", unit="volume", disable=not progress)
        for (path, what), error in zip(jobs, bar, strict=True):
            if error is not None:
                out.add(path, what, error.expected, error.found)

