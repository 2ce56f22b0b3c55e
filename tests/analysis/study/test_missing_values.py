"""Tests of missing values in the study's tables (the usual markers, a study's own ``missing_values``, ids that are
markers), on the tiny ``small_study``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.study.errors import ManifestError
from analysis.study.manifest import load_manifest
from analysis.study.tables import DEFAULT_MISSING_MARKERS
from analysis.study.validation import validate_study
from tests.analysis.study.test_validation import assert_named, edit, problems_of, set_behaviour_cell, set_cell
from tests.conftest import make_small_study


def study_of(small_study):
    return validate_study(load_manifest(small_study.manifest), progress=False)


@pytest.mark.parametrize("marker", DEFAULT_MISSING_MARKERS)
def test_usual_markers_are_missing(small_study, marker):
    set_behaviour_cell(small_study, 0, "score_a", marker)
    set_cell(small_study, "s03", "age", marker)
    set_cell(small_study, "s04", "sex", marker)
    study = study_of(small_study)
    assert np.isnan(study.behaviour.loc["s06", "score_a"])
    assert np.isnan(study.subjects.loc["s03", "age"]) and pd.isna(study.subjects.loc["s04", "sex"])
    assert np.isnan(study.covariate_table.loc["s03", "age"]) and study.covariate_table.loc["s04", "sex"] is None


def test_study_markers_match_numerically(small_study):
    edit(small_study, lambda d: d.update(missing_values=[-1, -999, "unknown"]))
    set_behaviour_cell(small_study, 0, "score_a", "-1.0")
    set_behaviour_cell(small_study, 1, "score_a", "-999")
    set_behaviour_cell(small_study, 0, "score_b", "-1")
    set_cell(small_study, "s02", "age", "-1e0")
    set_cell(small_study, "s05", "sex", "unknown")
    study = study_of(small_study)
    assert study.behaviour.isna().all().all()
    assert np.isnan(study.subjects.loc["s02", "age"]) and pd.isna(study.subjects.loc["s05", "sex"])
    assert load_manifest(small_study.manifest).missing_values == (-1, -999, "unknown")


def test_numbers_are_not_markers_unless_declared(small_study):
    set_behaviour_cell(small_study, 0, "score_a", "-1.0")
    assert study_of(small_study).behaviour.loc["s06", "score_a"] == -1.0


def test_marker_in_a_parquet_float_column(small_study):
    table = small_study.subjects()
    table["age"] = table["age"].astype(float)
    table.loc[2, "age"] = -999.0
    table.to_parquet(small_study.root / "subjects.parquet")
    edit(small_study, lambda d: d.update(missing_values=[-999]) or d["subjects"].update(table="subjects.parquet"))
    study = study_of(small_study)
    assert np.isnan(study.covariate_table.loc["s02", "age"]) and study.covariate_table.loc["s03", "age"] == 9.0


@pytest.mark.parametrize(
    ("value", "found"),
    [("NA", "str"), ([True], "list"), ([[1]], "list"), ([float("nan")], "list"), ([" "], "list")],
    ids=["not a list", "boolean", "nested", "nan", "blank"],
)
def test_malformed_missing_values_key(small_study, value, found):
    edit(small_study, lambda d: d.update(missing_values=value))
    with pytest.raises(ManifestError) as info:
        load_manifest(small_study.manifest)
    assert_named(info.value.problems, "missing_values", "data_manifest.yaml")
    assert any(p.found.startswith(found) for p in info.value.problems)


@pytest.mark.parametrize(
    ("column", "marker", "field"),
    [("subject_id", "NA", "row 5, column subject_id"), ("subject_id", "-1.0", "row 5, column subject_id"),
     ("cohort", "n/a", "row 5 (s03), column cohort")],
)
def test_marker_as_id_or_cohort_is_refused(small_study, column, marker, field):
    edit(small_study, lambda d: d.update(missing_values=[-1]))
    set_cell(small_study, "s03", column, marker)
    problems = problems_of(small_study.manifest)
    assert_named(problems, field, "subjects.csv")
    assert any(f"'{marker}', which this study's tables read as a missing value" in p.found for p in problems)


@pytest.mark.parametrize("table", ["behaviour", "lesions"])
def test_marker_as_id_in_another_table_is_refused(tmp_path, table):
    study = make_small_study(tmp_path, with_lesions=True)
    path = tmp_path / f"{table}.csv"
    cells = pd.read_csv(path, dtype=str, keep_default_na=False)
    cells.loc[1, "subject_id"] = "NaN"
    cells.to_csv(path, index=False)
    assert_named(problems_of(study.manifest), "row 3, column subject_id", f"{table}.csv")
