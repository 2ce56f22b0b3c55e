"""Checks of the manifest's tables: the subjects table, and the optional behaviour and lesion tables (with the
lesion masks they name), for :func:`analysis.study.validation.validate_study`.

Each check adds every problem it finds to a :class:`Collector` (file, field or row, expected, found) and returns
what it could read, or None when the table is unusable. Every table is read with the study's missing-value markers
(:func:`missing_values`); ids and cohort names are read as written, and a marker there is refused.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.study.errors import Problem, StudyWarning
from analysis.study.manifest import SPLITS, Manifest, check_inside
from analysis.study.tables import MissingValues, TableError, read_table
from analysis.study.volumes import VolumeError, load_volume


@dataclass
class Collector:
    """Every problem found so far, in the order found."""

    problems: list[Problem] = field(default_factory=list)
    warnings: list[StudyWarning] = field(default_factory=list)
    """What the study may have but its user should know; they do not stop validation."""

    def add(self, file: Path | str, field_name: str, expected: str, found: str) -> None:
        self.problems.append(Problem(str(file), field_name, expected, found))

    def warn(self, file: Path | str, field_name: str, message: str) -> None:
        self.warnings.append(StudyWarning(str(file), field_name, message))


def missing_values(manifest: Manifest) -> MissingValues:
    """What the study's tables mean by a missing value: empty cells, the usual markers and the manifest's own."""
    return MissingValues.of(manifest.missing_values)


def preview(values, limit: int = 8) -> str:
    """The first ``limit`` values, comma-separated, and how many more there are."""
    values = list(values)
    head = ", ".join(str(v) for v in values[:limit])
    return head + (f", ... ({len(values) - limit} more)" if len(values) > limit else "")


def read_subjects(manifest: Manifest, out: Collector) -> pd.DataFrame | None:
    """The subjects table as written, with missing values (ids and cohort names kept, for :func:`check_subjects`
    to refuse a marker there), or None when it cannot be read."""
    spec = manifest.subjects
    return _section_table(manifest, spec, "subjects", out, keep=(spec.id_column, spec.cohort_column))


def check_subjects(manifest: Manifest, table: pd.DataFrame | None, out: Collector) -> pd.DataFrame | None:
    """Check the subjects table (:func:`read_subjects`) and return its subjects, indexed by id: cohort, split, sex
    (F, M or missing), age (float) and one image path per modality; None when a column it needs is absent."""
    spec = manifest.subjects
    if table is None:
        return None
    file = spec.table
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

    markers = missing_values(manifest)
    ids = table[spec.id_column]
    for row in table.index[ids.isna()]:
        out.add(file, f"row {row + 2}, column {spec.id_column}", "a subject id", "an empty cell")
    refuse_markers(ids, markers, file, "a subject id", out)
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
    refuse_markers(cohort, markers, file, "a cohort name", out, ids=ids)
    split = table[spec.split_column].fillna("none").str.strip().str.lower()
    for row in table.index[~split.isin(SPLITS)]:
        out.add(
            file,
            f"row {row + 2} ({ids[row]}), column {spec.split_column}",
            f"one of {list(SPLITS)}",
            f"'{table[spec.split_column][row]}'",
        )
    sex = normalise_sex(table[spec.sex_column])
    for row in table.index[sex.notna() & ~sex.isin(["F", "M"])]:
        out.add(
            file,
            f"row {row + 2} ({ids[row]}), column {spec.sex_column}",
            f"F, M (or female, male) or a missing value ({markers.describe()})",
            f"'{table[spec.sex_column][row]}'",
        )
    age = pd.to_numeric(table[spec.age_column], errors="coerce")
    for row in table.index[(age.isna() & table[spec.age_column].notna()) | np.isinf(age)]:
        out.add(
            file,
            f"row {row + 2} ({ids[row]}), column {spec.age_column}",
            f"a number (age in years) or a missing value ({markers.describe()})",
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


def normalise_sex(values: pd.Series) -> pd.Series:
    """Sex as the study reads it: ``F`` or ``M`` (``female``, ``male`` and lower case accepted), missing kept; other
    values are returned upper-cased for :func:`check_subjects` to refuse."""
    return values.str.upper().replace({"FEMALE": "F", "MALE": "M"})


def refuse_markers(values: pd.Series, missing: MissingValues, file, expected: str, out: Collector, ids=None) -> None:
    """A problem for each cell of ``values`` (an id or cohort column, read as written) holding a missing-value
    marker: an id or a cohort cannot be missing, and reading it as written could take one subject for another."""
    for row in values.index[missing.matches(values)]:
        subject = f" ({ids[row]})" if ids is not None else ""
        out.add(
            file,
            f"row {row + 2}{subject}, column {values.name}",
            expected,
            f"'{values[row]}', which this study's tables read as a missing value ({missing.describe()})",
        )

def check_behaviour(manifest: Manifest, subjects: pd.DataFrame | None, out: Collector) -> pd.DataFrame | None:
    spec = manifest.behaviour
    table = _section_table(manifest, spec, "behaviour", out, keep=(spec.id_column,) if spec else ())
    if table is None:
        return None
    file = spec.table
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
    refuse_markers(ids, missing_values(manifest), file, "a subject id", out)
    dupes = sorted(ids[ids.duplicated()].dropna().unique().tolist())
    if dupes:
        out.add(
            file,
            f"column {spec.id_column}",
            "each subject id at most once",
            f"repeated ids {preview(dupes)}",
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
                f"numbers (missing values as {missing_values(manifest).describe()})",
                f"'{table[column][row]}' on row {row + 2}"
                + (f" and {len(bad) - 1} more non-numeric cells" if len(bad) > 1 else ""),
            )
        scores[column] = values.astype(float)
    frame = pd.DataFrame(scores)
    frame.index = pd.Index(ids, name="subject_id")
    return frame


def _section_table(manifest: Manifest, spec, section: str, out: Collector, keep=()) -> pd.DataFrame | None:
    """The table of a manifest section (``spec.table``) with the study's missing values (but the ``keep`` columns
    as written), or None when the section is absent or its table cannot be read (a problem at
    ``<section>.table``)."""
    if spec is None:
        return None
    try:
        return read_table(spec.table, missing_values(manifest), keep=keep)
    except TableError as exc:
        out.add(spec.table, f"{section}.table", exc.expected, exc.found)
        return None


def _check_known_ids(manifest: Manifest, subjects, ids: pd.Series, file, column: str, out: Collector) -> None:
    if subjects is None:
        return
    unknown = [i for i in ids.dropna().unique() if i not in subjects.index]
    if unknown:
        out.add(
            file,
            f"column {column}",
            f"ids of the subjects table {manifest.subjects.table.name}",
            f"{len(unknown)} ids not in it: {preview(unknown)}",
        )


def check_lesions(manifest: Manifest, subjects, grid, brain_mask, out: Collector) -> pd.DataFrame | None:
    """The lesion table: known, unique subject ids; binary masks on the template grid with lesion voxels in the
    brain mask."""
    spec = manifest.lesions
    table = _section_table(manifest, spec, "lesions", out, keep=(spec.id_column,) if spec else ())
    if table is None:
        return None
    file = spec.table
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
        out.add(file, f"column {spec.id_column}", "each subject id at most once", f"repeated ids {preview(dupes)}")
    refuse_markers(ids, missing_values(manifest), file, "a subject id", out)
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
            out.add(file, where, "a path to the subject's lesion mask", "a missing value")
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
                    f"values {preview(values.tolist())}")
        elif brain_mask is not None and not (data[brain_mask] > 0).any():
            out.add(path, f"lesion mask of subject {subject_id}", "lesion voxels inside the brain mask",
                    "none" if not data.any() else "lesion voxels only outside the brain mask")
    frame = pd.DataFrame({"mask": paths, "group": groups})
    frame.index = pd.Index(ids, name="subject_id")
    return frame

