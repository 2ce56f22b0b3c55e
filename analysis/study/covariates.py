"""Covariates: the properties of a subject (age, sex, site, head size) that a normative model adjusts ROI scores
for, named by the manifest's ``subjects.covariates`` (:class:`analysis.study.manifest.SubjectsSpec`).

:func:`check_covariates` decides each covariate's kind, checks its values against the reference cohort the model
is fitted on, and builds the covariate table (:func:`covariate_table`) that :class:`analysis.study.study.Study`
carries.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.study.manifest import Manifest
from analysis.study.table_checks import Collector, missing_values, normalise_sex, preview


@dataclass(frozen=True)
class Covariate:
    """A column of the subjects table that the normative model adjusts for."""

    name: str
    kind: str
    """``numeric`` (a float per subject) or ``categorical`` (a level per subject)."""


@dataclass(frozen=True)
class _Context:
    """What every check of one study's covariates shares."""

    manifest: Manifest
    out: Collector
    ids: pd.Series
    """Subject id per row of the subjects table."""
    reference: np.ndarray
    """True for the rows of the reference cohort's subjects."""

    @property
    def file(self):
        return self.manifest.subjects.table

    @property
    def hint(self) -> str:
        """Said of a covariate the manifest did not ask for."""
        if self.manifest.subjects.covariates is not None:
            return ""
        return (" (a default covariate, used because the manifest has no subjects.covariates: name the covariates "
                "there, or write subjects.covariates: [] for none)")

    def row(self, row: int, column: str) -> str:
        return f"row {row + 2} ({self.ids[row]}), column {column}"


def declared_covariates(manifest: Manifest, table: pd.DataFrame) -> dict[str, str | None]:
    """Covariate column -> kind as the manifest declares it (None: read from the data).

    Without ``subjects.covariates`` the age column (numeric) and the sex column (categorical), each only when the
    table has it with at least one known value.
    """
    spec = manifest.subjects
    if spec.covariates is not None:
        return dict(spec.covariates)
    defaults = ((spec.age_column, "numeric"), (spec.sex_column, "categorical"))
    return {c: kind for c, kind in defaults if c in table.columns and table[c].notna().any()}


def covariate_table(
    table: pd.DataFrame, covariates: Sequence[Covariate], index: pd.Index, sex_column: str | None = None
) -> pd.DataFrame:
    """The covariates of each subject: one column per covariate, one row per row of ``table``.

    Parameters
    ----------
    table
        The subjects table as read (:func:`analysis.study.table_checks.read_subjects`), missing values as NaN.
    covariates
        Which columns, of which kind; their values already checked (:func:`check_covariates`).
    index
        The rows' subject ids (the index of :attr:`analysis.study.study.Study.subjects`).
    sex_column
        The study's sex column, whose levels are normalised to ``F`` and ``M`` as in ``Study.subjects``.

    Returns
    -------
    pandas.DataFrame
        Indexed by ``index``: numeric covariates as float (NaN = missing), categorical ones as ``str`` objects
        (None = missing). No columns when there are no covariates.
    """
    columns = {}
    for covariate in covariates:
        raw = table[covariate.name]
        if covariate.kind == "numeric":
            values = pd.to_numeric(raw, errors="coerce").to_numpy(dtype=float)
            columns[covariate.name] = pd.Series(values, index=index, dtype=float)
        else:
            levels = normalise_sex(raw) if covariate.name == sex_column else raw
            values = [None if pd.isna(v) else str(v) for v in levels]
            # object, not pandas' str dtype: the levels are plain str, and None is missing.
            columns[covariate.name] = pd.Series(values, index=index, dtype=object)
    return pd.DataFrame(columns, index=index)


def check_covariates(
    manifest: Manifest, table: pd.DataFrame | None, subjects: pd.DataFrame | None, out: Collector
) -> tuple[tuple[Covariate, ...], pd.DataFrame | None]:
    """Check the study's covariates and build their table.

    Parameters
    ----------
    manifest
        The study; ``subjects.covariates`` names the covariates (:func:`declared_covariates`).
    table
        The subjects table as read (:func:`analysis.study.table_checks.read_subjects`); None when unreadable.
    subjects
        What :func:`analysis.study.table_checks.check_subjects` made of it (None: only the columns are checked).
    out
        Receives the problems: a column the table lacks; a column mixing numbers and text without a declared
        kind; a non-numeric value of a numeric covariate; a covariate with fewer than two known values among the
        reference cohort's subjects; a level of a categorical covariate held only outside the reference cohort.
        Missing values are allowed and reported as warnings.

    Returns
    -------
    tuple
        The covariates, in the manifest's order, and their table (:func:`covariate_table`); None for the table
        when the subjects could not be read.
    """
    if table is None:
        return (), None
    file = manifest.subjects.table
    declared = declared_covariates(manifest, table)
    for name in declared:
        if name not in table.columns:
            out.add(file, "subjects.covariates", f"a column named '{name}' in the subjects table",
                    f"columns {list(table.columns)}")
    if subjects is None:
        return (), None
    reference = (subjects["cohort"] == manifest.reference_cohort).to_numpy(dtype=bool)
    context = _Context(manifest, out, table[manifest.subjects.id_column], reference)
    covariates = []
    for name, kind in declared.items():
        if name in table.columns:
            kind = kind or _contract_kind(manifest, name) or _infer_kind(context, table[name])
            if kind == "numeric" and not _numbers_ok(context, table[name]):
                continue
            if kind is not None:
                covariates.append(Covariate(name, kind))
    frame = covariate_table(table, covariates, subjects.index, manifest.subjects.sex_column)
    if reference.any():  # else the subjects check has reported the reference cohort absent
        for covariate in covariates:
            _check_against_reference(context, covariate, frame[covariate.name])
    for covariate in covariates:
        _warn_missing(context, frame[covariate.name])
    return tuple(covariates), frame


def _contract_kind(manifest: Manifest, name: str) -> str | None:
    """The age column is numeric and the sex column categorical by the subjects table's contract."""
    return {manifest.subjects.age_column: "numeric", manifest.subjects.sex_column: "categorical"}.get(name)


def _finite_numbers(values: pd.Series) -> pd.Series:
    """True for each cell that is a finite number (False for text, infinities and missing cells)."""
    numbers = pd.to_numeric(values, errors="coerce").astype(float)
    return pd.Series(np.isfinite(numbers.to_numpy()), index=values.index)


def _infer_kind(context: _Context, values: pd.Series) -> str | None:
    """``numeric`` when every known value is a number, ``categorical`` when none is; None (a problem) when the
    column mixes them. The problem names the first cell of the rarer kind."""
    known = values.dropna()
    is_number = _finite_numbers(known)
    if is_number.all():
        return "numeric"
    if not is_number.any():
        return "categorical"
    n_numbers, n_texts = int(is_number.sum()), int((~is_number).sum())
    odd = known.index[~is_number] if n_numbers >= n_texts else known.index[is_number]
    row = int(odd[0])
    name = str(values.name)
    context.out.add(
        context.file,
        context.row(row, name),
        f"covariate '{name}' to hold either numbers or text levels; to treat its values as levels, declare "
        f"'{name}: categorical' (subjects.covariates as a mapping, e.g. {{{name}: categorical}}); if the text "
        "marks a missing value, list it under missing_values",
        f"'{values[row]}' in a column of {_count(n_numbers, 'number')} and {_count(n_texts, 'text value')}",
    )
    return None


def _numbers_ok(context: _Context, values: pd.Series) -> bool:
    """Whether every known value of a numeric covariate is a finite number (a problem when not)."""
    name = str(values.name)
    bad = values.index[values.notna() & ~_finite_numbers(values)]
    if not len(bad):
        return True
    if name == context.manifest.subjects.age_column:
        return False  # each bad age is already a problem of the subjects check
    row = int(bad[0])
    context.out.add(
        context.file,
        f"column {name}",
        f"numbers in the numeric covariate '{name}' (missing values as "
        f"{missing_values(context.manifest).describe()}){context.hint}",
        f"'{values[row]}' on row {row + 2} ({context.ids[row]})"
        + (f" and {_count(len(bad) - 1, 'more cell')} that are not numbers" if len(bad) > 1 else ""),
    )
    return False


def _check_against_reference(context: _Context, covariate: Covariate, values: pd.Series) -> None:
    """The model is fitted on the reference cohort: it needs two values there, and every level seen elsewhere."""
    name, cohort = covariate.name, context.manifest.reference_cohort
    inside = values[context.reference].dropna()
    levels = pd.unique(inside)
    if len(levels) < 2:
        context.out.add(
            context.file,
            f"column {name}",
            f"at least two distinct values of covariate '{name}' among the subjects of the reference cohort "
            f"'{cohort}' (the normative model is fitted on them; a constant covariate explains nothing)"
            + context.hint,
            f"only '{_show(levels[0])}' ({_count(len(inside), 'subject')})" if len(levels) else "no known value",
        )
        return
    if covariate.kind != "categorical":
        return
    outside = values[~context.reference].dropna()
    unseen = outside[~outside.isin(levels)]
    for level, holders in unseen.groupby(unseen, sort=False).groups.items():
        context.out.add(
            context.file,
            f"column {name}",
            f"levels of covariate '{name}' seen among the subjects of the reference cohort '{cohort}' "
            f"({preview(sorted(levels))}): the normative model fitted on them cannot predict for another level"
            + context.hint,
            f"level '{level}', held by {_count(len(holders), 'subject')} outside it ({preview(holders)})",
        )


def _warn_missing(context: _Context, values: pd.Series) -> None:
    """Missing covariate values are allowed; the study's user is told whose they are."""
    absent = values.isna().to_numpy()
    if not absent.any():
        return
    name = str(values.name)
    in_reference = int((absent & context.reference).sum())
    context.out.warn(
        context.file,
        f"column {name}",
        f"{int(absent.sum())} of {_count(len(values), 'subject')} have no value for covariate '{name}' "
        f"({in_reference} of them in the reference cohort '{context.manifest.reference_cohort}'): "
        f"{preview(values.index[absent])}",
    )


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' if n != 1 else ''}"


def _show(value) -> str:
    """A covariate value as the table would hold it: 1500 rather than 1500.0."""
    return f"{value:g}" if isinstance(value, float | np.floating) else str(value)
