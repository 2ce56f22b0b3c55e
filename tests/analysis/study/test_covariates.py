"""Tests of ``subjects.covariates`` (kinds, checks, ``Study.covariate_table``) on the tiny ``small_study``.

The small study has six subjects of the reference cohort ``typical`` (s00-s05) and two ``patients`` (s06, s07);
ages 9, 10, 11 in turn, sex F and M in turn.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from analysis.study.covariates import Covariate
from analysis.study.errors import ManifestError
from analysis.study.manifest import load_manifest
from analysis.study.validation import validate_study
from msma.cli import main
from tests.analysis.study.test_validation import assert_named, edit, problems_of, set_cell

SITES = ["A", "B", "A", "B", "A", "B", "A", "B"]
ETIV = ["1510.5", "1402", "1333.25", "1620", "", "1480", "1555", "1390"]


def study_of(small_study):
    return validate_study(load_manifest(small_study.manifest), progress=False)


def add_columns(small_study, **columns) -> pd.DataFrame:
    """Add columns (name -> 8 cell texts) to the subjects table; returns the table as written."""
    table = small_study.subjects()
    for name, cells in columns.items():
        table[name] = cells
    small_study.write_subjects(table)
    return table


def declare(small_study, covariates) -> None:
    edit(small_study, lambda d: d["subjects"].update(covariates=covariates))


def problems_named(small_study, field: str, needle: str):
    """The problems are reported on the subjects table, at ``field``, and one says ``needle``."""
    problems = problems_of(small_study.manifest)
    assert_named(problems, field, "subjects.csv")
    assert any(needle in f"{p.expected} {p.found}" for p in problems), [str(p) for p in problems]
    return problems


# --- which covariates, of which kind -----------------------------------------------------------------------


def test_default_covariates_are_age_and_sex(small_study):
    study = study_of(small_study)
    assert study.covariates == (Covariate("age", "numeric"), Covariate("sex", "categorical"))
    written = small_study.subjects().set_index("subject_id")
    table = study.covariate_table
    assert table.index.equals(study.subjects.index) and list(table.columns) == ["age", "sex"]
    assert table["age"].dtype == np.float64 and table["sex"].dtype == object
    assert table["age"].tolist() == written["age"].astype(float).tolist()
    assert table["sex"].tolist() == written["sex"].tolist()
    assert "covariates: age (numeric), sex (categorical: F, M)" in study.summary()
    assert study.warnings == ()


@pytest.mark.parametrize(
    ("emptied", "left"),
    [(["age"], ["sex"]), (["sex"], ["age"]), (["age", "sex"], [])],
    ids=["no ages", "no sexes", "neither"],
)
def test_default_leaves_out_age_or_sex_without_a_value(small_study, emptied, left):
    add_columns(small_study, **{column: [""] * 8 for column in emptied})
    study = study_of(small_study)
    assert [c.name for c in study.covariates] == left
    assert list(study.covariate_table.columns) == left
    assert study.covariate_table.index.equals(study.subjects.index)


def test_empty_list_means_no_covariates(small_study):
    declare(small_study, [])
    study = study_of(small_study)
    assert study.covariates == ()
    assert study.covariate_table.empty and study.covariate_table.index.equals(study.subjects.index)
    assert "covariates: none" in study.summary()


def test_list_form_reads_the_kinds_from_the_data(small_study):
    written = add_columns(small_study, site=SITES, etiv=ETIV)
    set_cell(small_study, "s02", "sex", "female")
    declare(small_study, ["etiv", "site", "sex", "age"])
    study = study_of(small_study)
    assert study.covariates == (
        Covariate("etiv", "numeric"),
        Covariate("site", "categorical"),
        Covariate("sex", "categorical"),
        Covariate("age", "numeric"),
    )
    table = study.covariate_table
    assert list(table.columns) == ["etiv", "site", "sex", "age"]
    assert table.index.tolist() == written["subject_id"].tolist()
    assert table["etiv"].dtype == np.float64 and table["age"].dtype == np.float64
    assert table["site"].dtype == object and table["sex"].dtype == object
    expected_etiv = [float(v) if v else math.nan for v in ETIV]
    assert np.array_equal(table["etiv"].to_numpy(), np.array(expected_etiv), equal_nan=True)
    assert table["site"].tolist() == SITES and all(type(v) is str for v in table["site"])
    assert table.loc["s02", "sex"] == "F"  # normalised like the sex column
    assert table["age"].tolist() == [9.0, 10.0, 11.0] * 2 + [9.0, 10.0]


def test_mapping_form_declares_the_kinds(small_study):
    add_columns(small_study, site=["1", "2"] * 4, etiv=ETIV)
    set_cell(small_study, "s03", "site", "")
    declare(small_study, {"site": "categorical", "etiv": "numeric"})
    study = study_of(small_study)
    assert study.covariates == (Covariate("site", "categorical"), Covariate("etiv", "numeric"))
    site = study.covariate_table["site"]
    assert site.dtype == object and site.tolist() == ["1", "2", "1", None, "1", "2", "1", "2"]
    assert "site (categorical: 1, 2; 1 missing)" in study.summary()


def test_missing_covariate_values_are_warned_about(small_study, capsys):
    add_columns(small_study, etiv=ETIV)
    set_cell(small_study, "s07", "age", "NA")
    declare(small_study, ["age", "etiv"])
    study = study_of(small_study)
    assert np.isnan(study.covariate_table.loc["s07", "age"])
    warnings = {w.field: w for w in study.warnings}
    assert set(warnings) == {"column age", "column etiv"}
    assert "subjects.csv" in warnings["column age"].file
    assert "1 of 8 subjects" in warnings["column age"].message and "s07" in warnings["column age"].message
    assert "1 of them in the reference cohort 'typical'" in warnings["column etiv"].message
    assert main(["validate", str(small_study.manifest), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert "warning:" in captured.err and "covariate 'etiv'" in captured.err and "valid:" in captured.out


# --- problems ----------------------------------------------------------------------------------------------


def test_missing_column(small_study):
    declare(small_study, ["age", "icv"])
    problems_named(small_study, "subjects.covariates", "a column named 'icv'")


def test_column_of_numbers_and_text(small_study):
    add_columns(small_study, site=["A", "B", "3", "A", "B", "A", "B", "A"])
    declare(small_study, ["site"])
    problems = problems_named(small_study, "row 4 (s02), column site", "'3'")
    assert any("declare 'site: categorical'" in p.expected for p in problems), [str(p) for p in problems]


def test_text_in_a_numeric_covariate(small_study):
    add_columns(small_study, etiv=["1500", "1400", "large", "1600", "1450", "big", "1500", "1400"])
    declare(small_study, {"etiv": "numeric"})
    problems_named(small_study, "column etiv", "'large' on row 4 (s02) and 1 more")


@pytest.mark.parametrize(
    ("cells", "found"),
    [(["A"] * 6 + ["B", "B"], "only 'A' (6 subjects)"), (["1500"] * 6 + ["1400", ""], "only '1500' (6 subjects)")],
    ids=["categorical", "numeric"],
)
def test_constant_among_the_reference_cohort(small_study, cells, found):
    add_columns(small_study, site=cells)
    declare(small_study, ["site"])
    problems = problems_named(small_study, "column site", found)
    assert any("reference cohort 'typical'" in p.expected for p in problems)


def test_no_value_among_the_reference_cohort(small_study):
    add_columns(small_study, etiv=[""] * 6 + ["1400", "1500"])
    declare(small_study, ["etiv"])
    problems_named(small_study, "column etiv", "no known value")


def test_default_covariate_that_is_constant_says_how_to_choose(small_study):
    add_columns(small_study, sex=["F"] * 8)
    problems = problems_named(small_study, "column sex", "only 'F'")
    assert any("subjects.covariates: []" in p.expected for p in problems)


def test_level_seen_only_outside_the_reference_cohort(small_study):
    add_columns(small_study, site=SITES[:6] + ["C", "C"])
    declare(small_study, {"site": "categorical"})
    problems_named(small_study, "column site", "level 'C', held by 2 subjects outside it (s06, s07)")


@pytest.mark.parametrize(
    ("column", "setting"),
    [("subject_id", "subjects.id_column"), ("cohort", "subjects.cohort_column"),
     ("split", "subjects.split_column"), ("t1", "subjects.images.T1w")],
)
def test_a_covariate_cannot_be_who_or_where_a_subject_is(small_study, column, setting):
    declare(small_study, ["age", column])
    with pytest.raises(ManifestError) as info:
        load_manifest(small_study.manifest)
    assert_named(info.value.problems, "subjects.covariates", "data_manifest.yaml")
    assert f"'{column}', the {setting} column" in str(info.value)


@pytest.mark.parametrize(
    ("value", "field"),
    [("age", "subjects.covariates"), (["age", 3], "subjects.covariates"), (["age", "age"], "subjects.covariates"),
     ({"age": "number"}, "subjects.covariates.age"), (None, "subjects.covariates")],
    ids=["string", "not a name", "repeated", "unknown kind", "empty key"],
)
def test_malformed_covariates_key(small_study, value, field):
    declare(small_study, value)
    with pytest.raises(ManifestError) as info:
        load_manifest(small_study.manifest)
    assert_named(info.value.problems, field, "data_manifest.yaml")
