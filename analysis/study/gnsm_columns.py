"""The subject columns of the manifest's ``gnsm:`` block (:mod:`analysis.study.gnsm_block`) checked against the
subjects table, and their values as GNSM learns them.

GNSM is fitted on the reference cohort's ``train`` subjects, so each column needs two distinct values there.
Missing values are allowed, as for covariates: they are imputed with what the fit subjects hold (a numeric column
their mean, a categorical one their most frequent level, ties broken alphabetically; :func:`impute`), and
validation says whose they are.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.study.covariates import Covariate, covariate_table
from analysis.study.manifest import Manifest
from analysis.study.table_checks import Collector, missing_values, preview


def check_gnsm_columns(manifest: Manifest, table: pd.DataFrame | None, subjects: pd.DataFrame | None,
                       out: Collector) -> pd.DataFrame | None:
    """Check the ``gnsm:`` block's columns and build their table.

    Parameters
    ----------
    manifest
        The study; ``gnsm.columns`` names the columns and their kinds.
    table
        The subjects table as read (:func:`analysis.study.table_checks.read_subjects`); None when unreadable.
    subjects
        What :func:`analysis.study.table_checks.check_subjects` made of it (None: only the columns are checked).
    out
        Receives the problems (a column the table lacks, a cell of a numeric column that is not a number, a column
        with fewer than two distinct values among the reference cohort's train subjects) and a warning per column
        with missing values.

    Returns
    -------
    pandas.DataFrame or None
        Indexed like ``subjects``, one column per GNSM column in the manifest's order: numeric ones float (NaN =
        missing), categorical ones ``str`` objects (None = missing). None without a ``gnsm:`` block or when the
        subjects could not be read.
    """
    spec = manifest.gnsm
    if spec is None or table is None:
        return None
    file = manifest.subjects.table
    present = [name for name in spec.columns if name in table.columns]
    for name in spec.columns:
        if name not in table.columns:
            out.add(file, "gnsm.columns", f"a column named '{name}' in the subjects table",
                    f"columns {list(table.columns)}")
    if subjects is None:
        return None
    ids = table[manifest.subjects.id_column]
    usable = [name for name in present if spec.columns[name] != "numeric" or _numbers_ok(manifest, table[name], ids,
                                                                                           out)]
    frame = covariate_table(table, [Covariate(n, spec.columns[n]) for n in usable], subjects.index,
                            manifest.subjects.sex_column)
    fit = ((subjects["cohort"] == manifest.reference_cohort) & (subjects["split"] == "train")).to_numpy(dtype=bool)
    if fit.any():  # else the subjects check has reported the reference cohort's train split empty
        for name in usable:
            _check_fit_values(manifest, frame[name], fit, out)
    for name in usable:
        _warn_missing(manifest, frame[name], fit, out)
    return frame


def _numbers_ok(manifest: Manifest, values: pd.Series, ids: pd.Series, out: Collector) -> bool:
    name = str(values.name)
    numbers = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    bad = np.flatnonzero(values.notna().to_numpy() & ~np.isfinite(numbers))
    if not len(bad):
        return True
    row = int(bad[0])
    more = f" and {len(bad) - 1} more cell{'s' if len(bad) > 2 else ''} that are not numbers" if len(bad) > 1 else ""
    out.add(manifest.subjects.table, f"gnsm.columns.{name}",
            f"numbers in the numeric GNSM column '{name}' (missing values as "
            f"{missing_values(manifest).describe()}; declare it categorical to model its values as levels)",
            f"'{values.iloc[row]}' on row {row + 2} ({ids.iloc[row]}){more}")
    return False


def _check_fit_values(manifest: Manifest, values: pd.Series, fit: np.ndarray, out: Collector) -> None:
    name, kind = str(values.name), manifest.gnsm.columns[str(values.name)]
    known = values[fit].dropna()
    distinct = pd.unique(known)
    if len(distinct) >= 2:
        return
    what = "levels" if kind == "categorical" else "values"
    found = f"only '{distinct[0]}' ({len(known)} subjects)" if len(distinct) else "no known value"
    out.add(manifest.subjects.table, f"gnsm.columns.{name}",
            f"at least two distinct {what} of the {kind} GNSM column '{name}' among the reference cohort "
            f"'{manifest.reference_cohort}' train subjects (GNSM is fitted on them; a constant column carries "
            "nothing)", found)


def _warn_missing(manifest: Manifest, values: pd.Series, fit: np.ndarray, out: Collector) -> None:
    absent = values.isna().to_numpy()
    if not absent.any():
        return
    name = str(values.name)
    kind = manifest.gnsm.columns[name]
    imputed = "their mean" if kind == "numeric" else "their most frequent level"
    out.warn(manifest.subjects.table, f"gnsm.columns.{name}",
             f"{int(absent.sum())} of {len(values)} subjects have no value for GNSM column '{name}' "
             f"({int((absent & fit).sum())} of them reference train subjects), imputed for GNSM with {imputed} "
             f"over the reference train subjects: {preview(values.index[absent])}")


def impute(frame: pd.DataFrame, kinds: dict[str, str], fit_ids: list[str]) -> tuple[pd.DataFrame, dict[str, int]]:
    """``frame`` with its missing values filled from the subjects ``fit_ids`` (numeric: their mean; categorical:
    their most frequent level, ties alphabetical), and how many values of each column were filled."""
    filled, counts = frame.copy(), {}
    for name, kind in kinds.items():
        values, fit = frame[name], frame.loc[fit_ids, name].dropna()
        counts[name] = int(values.isna().sum())
        if kind == "numeric":
            filled[name] = values.fillna(float(fit.mean()))
        else:
            frequency = fit.astype(str).value_counts()
            mode = sorted(frequency.index, key=lambda level: (-frequency[level], level))[0]
            filled[name] = values.where(values.notna(), mode).astype(object)
    return filled, counts
