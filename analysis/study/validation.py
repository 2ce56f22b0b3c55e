"""Check that the files a manifest names exist, are readable and agree with each other.

:func:`validate_study` walks the whole study once and reports every problem it finds (file, field or row,
expected, found) instead of stopping at the first; when there are none it returns the loaded :class:`Study`.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from analysis.study.atlas import labels_present, read_label_table
from analysis.study.errors import ManifestError, Problem
from analysis.study.manifest import SPLITS, Manifest, check_inside
from analysis.study.tables import TableError, read_table
from analysis.study.volumes import Grid, VolumeError, check_grid, load_header, load_volume, read_data


@dataclass(frozen=True)
class Study:
    """A validated study: its manifest, grid, atlas and tables, ready for the models and the analysis."""

    manifest: Manifest
    grid: Grid
    brain_mask: np.ndarray
    atlas_labels: np.ndarray
    label_names: pd.DataFrame
    subjects: pd.DataFrame
    """One row per subject, indexed by subject id, with columns cohort, split, sex, age and one path per modality."""
    behaviour: pd.DataFrame | None
    """Score columns as floats (NaN = missing), indexed by subject id."""
    lesions: pd.DataFrame | None = None
    """Ground-truth lesion masks, indexed by subject id: columns ``mask`` (resolved path) and ``group``."""

    def summary(self) -> str:
        """A human-readable overview: subjects per cohort and split, grid, atlas, behaviour."""
        m = self.manifest
        counts = pd.crosstab(self.subjects["cohort"], self.subjects["split"], margins=True, margins_name="total")
        named = set(self.label_names["index"])
        present = set(labels_present(self.atlas_labels).tolist())
        absent = f"; {len(named - present)} named labels absent" if named - present else ""
        lines = [
            f"study: {m.study_name} ({m.path})",
            f"grid: {self.grid.describe()}; brain mask {int(self.brain_mask.sum())} voxels",
            f"atlas: {m.atlas.name}, {len(present)} labels on the grid ({len(named)} named in "
            f"{m.atlas.labels.name}{absent})",
            f"reference cohort: {m.reference_cohort} ({int((self.subjects['cohort'] == m.reference_cohort).sum())} "
            f"subjects, {self.n_reference_train} for training)",
            f"modalities: {', '.join(m.subjects.images)}",
            "subjects per cohort and split:",
            *("  " + line for line in counts.to_string().splitlines()),
        ]
        if self.behaviour is not None:
            missing = float(self.behaviour.isna().to_numpy().mean())
            lines.append(
                f"behaviour: {len(self.behaviour)} subjects x {self.behaviour.shape[1]} scores "
                f"({missing:.1%} missing): {', '.join(self.behaviour.columns)}"
            )
        else:
            lines.append("behaviour: none")
        if self.lesions is not None:
            groups = self.lesions["group"].value_counts().sort_index()
            lines.append(
                f"lesions: ground-truth masks of {len(self.lesions)} subjects ("
                + ", ".join(f"{g}: {n}" for g, n in groups.items()) + ")"
            )
        return "\n".join(lines)

    @property
    def n_reference_train(self) -> int:
        s = self.subjects
        return int(((s["cohort"] == self.manifest.reference_cohort) & (s["split"] == "train")).sum())


@dataclass
class _Collector:
    problems: list[Problem] = field(default_factory=list)

    def add(self, file: Path | str, field_name: str, expected: str, found: str) -> None:
        self.problems.append(Problem(str(file), field_name, expected, found))


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
    out = _Collector()
    grid, mask = _check_template(manifest, out)
    atlas, names = _check_atlas(manifest, grid, out)
    subjects = _check_subjects(manifest, out)
    if subjects is not None and grid is not None and subject_volumes:
        _check_subject_volumes(manifest, subjects, grid, out, progress=progress, check_voxels=check_voxels)
    behaviour = _check_behaviour(manifest, subjects, out)
    lesions = _check_lesions(manifest, subjects, grid if subject_volumes else None, mask, out)
    if out.problems:
        raise ManifestError(out.problems)
    return Study(manifest, grid, mask, atlas, names, subjects, behaviour, lesions)


def _check_template(manifest: Manifest, out: _Collector) -> tuple[Grid | None, np.ndarray | None]:
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


def _check_atlas(manifest: Manifest, grid: Grid | None, out: _Collector):
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
                f"{len(unnamed)} labels without names: {_preview(unnamed)}",
            )
    return labels, names


def _check_subjects(manifest: Manifest, out: _Collector) -> pd.DataFrame | None:
    spec = manifest.subjects
    file = spec.table
    try:
        table = read_table(file)
    except TableError as exc:
        out.add(file, "subjects.table", exc.expected, exc.found)
        return None
    columns = {
        "id": spec.id_column,
        "cohort": spec.cohort_column,
        "split": spec.split_column,
        "sex": spec.sex_column,
        "age": spec.age_column,
    }
    columns.update({f"image:{m}": c for m, c in spec.images.items()})
    missing = [c for c in columns.values() if c not in table.columns]
    for column in missing:
        setting = next(k for k, v in columns.items() if v == column)
        where = f"subjects.images.{setting[6:]}" if setting.startswith("image:") else f"subjects.{setting}_column"
        out.add(file, where, f"a column named '{column}'", f"columns {list(table.columns)}")
    if missing:
        return None

    ids = table[spec.id_column]
    for row in table.index[ids.isna()]:
        out.add(file, f"row {row + 2}, column {spec.id_column}", "a subject id", "an empty cell")
    duplicated = ids[ids.duplicated(keep=False) & ids.notna()]
    for subject_id, rows in duplicated.groupby(duplicated).groups.items():
        out.add(
            file,
            f"column {spec.id_column}",
            "each subject id once",
            f"'{subject_id}' on rows {[int(r) + 2 for r in rows]}",
        )
    cohort = table[spec.cohort_column]
    for row in table.index[cohort.isna()]:
        out.add(file, f"row {row + 2} ({ids[row]}), column {spec.cohort_column}", "a cohort name", "an empty cell")
    split = table[spec.split_column].fillna("none").str.strip().str.lower()
    for row in table.index[~split.isin(SPLITS)]:
        out.add(
            file,
            f"row {row + 2} ({ids[row]}), column {spec.split_column}",
            f"one of {list(SPLITS)}",
            f"'{table[spec.split_column][row]}'",
        )
    sex = table[spec.sex_column].str.upper().replace({"FEMALE": "F", "MALE": "M"})
    for row in table.index[sex.notna() & ~sex.isin(["F", "M"])]:
        out.add(
            file,
            f"row {row + 2} ({ids[row]}), column {spec.sex_column}",
            "F, M (or female, male) or an empty cell",
            f"'{table[spec.sex_column][row]}'",
        )
    age = pd.to_numeric(table[spec.age_column], errors="coerce")
    for row in table.index[age.isna() & table[spec.age_column].notna()]:
        out.add(
            file,
            f"row {row + 2} ({ids[row]}), column {spec.age_column}",
            "a number (age in years) or an empty cell",
            f"'{table[spec.age_column][row]}'",
        )

    reference = manifest.reference_cohort
    cohorts = sorted(cohort.dropna().unique().tolist())
    if reference not in cohorts:
        out.add(
            manifest.path,
            "reference_cohort",
            f"a cohort of the subjects table (one of {cohorts})",
            f"'{reference}', which no subject belongs to",
        )
    else:
        for row in table.index[(split == "train") & (cohort != reference) & cohort.notna()]:
            out.add(
                file,
                f"row {row + 2} ({ids[row]}), column {spec.split_column}",
                f"'train' only for the reference cohort '{reference}' (the models learn only from it)",
                f"'train' for cohort '{cohort[row]}'",
            )
        n_train = int(((cohort == reference) & (split == "train")).sum())
        if n_train < manifest.model.min_train_subjects:
            out.add(
                file,
                f"column {spec.split_column}",
                f"at least model.min_train_subjects = {manifest.model.min_train_subjects} subjects of the "
                f"reference cohort '{reference}' with split 'train'",
                f"{n_train}",
            )

    subjects = pd.DataFrame(
        {
            "cohort": cohort,
            "split": split,
            "sex": sex,
            "age": age,
            **{m: table[c] for m, c in spec.images.items()},
        }
    )
    subjects.index = pd.Index(ids, name="subject_id")
    return subjects


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
                out.add(file, where, f"a path to the subject's {modality} image", "an empty cell")
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


def _check_behaviour(manifest: Manifest, subjects: pd.DataFrame | None, out: _Collector) -> pd.DataFrame | None:
    spec = manifest.behaviour
    if spec is None:
        return None
    file = spec.table
    table = _read_section_table(file, "behaviour.table", out)
    if table is None:
        return None
    if spec.id_column not in table.columns:
        out.add(
            file,
            "behaviour.id_column",
            f"a column named '{spec.id_column}'",
            f"columns {list(table.columns)}",
        )
        return None
    ids = table[spec.id_column]
    for row in table.index[ids.isna()]:
        out.add(file, f"row {row + 2}, column {spec.id_column}", "a subject id", "an empty cell")
    dupes = sorted(ids[ids.duplicated()].dropna().unique().tolist())
    if dupes:
        out.add(
            file,
            f"column {spec.id_column}",
            "each subject id at most once",
            f"repeated ids {_preview(dupes)}",
        )
    _check_known_ids(manifest, subjects, ids, file, spec.id_column, out)
    score_columns = list(spec.scores) if spec.scores is not None else [c for c in table.columns if c != spec.id_column]
    absent = [c for c in score_columns if c not in table.columns]
    if absent:
        out.add(file, "behaviour.scores", "columns present in the behaviour table", f"missing columns {absent}")
    scores = {}
    for column in score_columns:
        if column in absent:
            continue
        values = pd.to_numeric(table[column], errors="coerce")
        bad = table.index[(values.isna() & table[column].notna()) | np.isinf(values)]
        if len(bad):
            row = int(bad[0])
            out.add(
                file,
                f"column {column}",
                "numbers (empty cells for missing values)",
                f"'{table[column][row]}' on row {row + 2}"
                + (f" and {len(bad) - 1} more non-numeric cells" if len(bad) > 1 else ""),
            )
        scores[column] = values.astype(float)
    frame = pd.DataFrame(scores)
    frame.index = pd.Index(ids, name="subject_id")
    return frame


def _read_section_table(file, field_name: str, out: _Collector) -> pd.DataFrame | None:
    try:
        return read_table(file)
    except TableError as exc:
        out.add(file, field_name, exc.expected, exc.found)
        return None


def _check_known_ids(manifest: Manifest, subjects, ids: pd.Series, file, column: str, out: _Collector) -> None:
    if subjects is None:
        return
    unknown = [i for i in ids.dropna().unique() if i not in subjects.index]
    if unknown:
        out.add(
            file,
            f"column {column}",
            f"ids of the subjects table {manifest.subjects.table.name}",
            f"{len(unknown)} ids not in it: {_preview(unknown)}",
        )


def _check_lesions(manifest: Manifest, subjects, grid, brain_mask, out: _Collector) -> pd.DataFrame | None:
    """The lesion table: known, unique subject ids; binary masks on the template grid with lesion voxels in the
    brain mask."""
    spec = manifest.lesions
    if spec is None:
        return None
    file = spec.table
    table = _read_section_table(file, "lesions.table", out)
    if table is None:
        return None
    columns = {"lesions.id_column": spec.id_column, "lesions.mask_column": spec.mask_column}
    if spec.group_column is not None:
        columns["lesions.group_column"] = spec.group_column
    missing = {k: c for k, c in columns.items() if c not in table.columns}
    for key, column in missing.items():
        out.add(file, key, f"a column named '{column}'", f"columns {list(table.columns)}")
    if missing:
        return None
    if table.empty:
        out.add(file, "lesions.table", "at least one subject with a lesion mask", "no rows")
        return None
    ids = table[spec.id_column]
    dupes = sorted(ids[ids.duplicated()].dropna().astype(str).unique().tolist())
    if dupes:
        out.add(file, f"column {spec.id_column}", "each subject id at most once", f"repeated ids {_preview(dupes)}")
    _check_known_ids(manifest, subjects, ids, file, spec.id_column, out)
    paths, groups = [], []
    for row in table.index:
        subject_id, value = table.at[row, spec.id_column], table.at[row, spec.mask_column]
        where = f"row {row + 2} ({subject_id}), column {spec.mask_column}"
        group = "all" if spec.group_column is None else table.at[row, spec.group_column]
        groups.append("all" if pd.isna(group) else str(group))
        if pd.isna(subject_id):
            out.add(file, f"row {row + 2}, column {spec.id_column}", "a subject id", "an empty cell")
        if pd.isna(value):
            out.add(file, where, "a path to the subject's lesion mask", "an empty cell")
            paths.append(None)
            continue
        path = manifest.resolve(str(value))
        paths.append(path)
        if not check_inside(manifest, str(value), where, out.problems, file=str(file)) or grid is None:
            continue
        try:
            data = load_volume(path, grid)
        except VolumeError as exc:
            out.add(path, f"lesion mask of subject {subject_id} ({where})", exc.expected, exc.found)
            continue
        values = np.unique(data)
        if not np.isin(values, (0, 1)).all():
            out.add(path, f"lesion mask of subject {subject_id}", "a binary mask (0 and 1)",
                    f"values {_preview(values.tolist())}")
        elif brain_mask is not None and not (data[brain_mask] > 0).any():
            out.add(path, f"lesion mask of subject {subject_id}", "lesion voxels inside the brain mask",
                    "none" if not data.any() else "lesion voxels only outside the brain mask")
    frame = pd.DataFrame({"mask": paths, "group": groups})
    frame.index = pd.Index(ids, name="subject_id")
    return frame


def _preview(values, limit: int = 8) -> str:
    values = list(values)
    head = ", ".join(str(v) for v in values[:limit])
    return head + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")
