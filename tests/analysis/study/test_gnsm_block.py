"""The manifest's ``gnsm:`` block: its structure (:mod:`analysis.study.gnsm_block`), its columns against the
subjects table (:mod:`analysis.study.gnsm_columns`) and the imputation of missing values.

The small study's reference cohort ``typical`` has train subjects s00-s03, val s04 and test s05; the patients are
s06 and s07. Sex alternates F, M; ages are 9, 10, 11 in turn.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from analysis.study.errors import ManifestError
from analysis.study.gnsm_block import GNSMSpec
from analysis.study.gnsm_columns import impute
from analysis.study.manifest import load_manifest
from analysis.study.validation import validate_study
from tests.analysis.study.test_validation import edit, problems_of, set_cell

SITES = ["A", "B", "A", "B", "A", "B", "C", "A"]


def with_gnsm(small_study, block) -> None:
    edit(small_study, lambda d: d.update(gnsm=block))


def add_site(small_study, cells=SITES) -> None:
    table = small_study.subjects()
    table["site"] = cells
    small_study.write_subjects(table)


def manifest_problems(small_study):
    with pytest.raises(ManifestError) as info:
        load_manifest(small_study.manifest)
    return info.value.problems


def one_problem(problems, field: str, needle: str):
    """The one problem at ``field``: it names the file, what was expected and what was found, and says ``needle``."""
    matching = [p for p in problems if p.field == field]
    assert len(matching) == 1, [str(p) for p in problems]
    problem = matching[0]
    assert problem.file and problem.expected and problem.found
    assert needle in f"{problem.expected} {problem.found}", str(problem)
    return problem


def test_without_the_block_the_manifest_has_no_gnsm(small_study):
    manifest = load_manifest(small_study.manifest)
    assert manifest.gnsm is None
    assert validate_study(manifest, progress=False).gnsm_table is None


def test_the_block_parses_into_a_frozen_spec_with_score_norms_by_default(small_study):
    add_site(small_study)
    with_gnsm(small_study, {"columns": {"sex": "categorical", "site": "categorical", "age": "numeric"}})
    manifest = load_manifest(small_study.manifest)
    assert manifest.gnsm == GNSMSpec({"sex": "categorical", "site": "categorical", "age": "numeric"}, True)
    assert list(manifest.gnsm.columns) == ["sex", "site", "age"]
    with pytest.raises(TypeError):
        manifest.gnsm.columns["age"] = "categorical"
    study = validate_study(manifest, progress=False)
    table = study.gnsm_table
    assert table.index.equals(study.subjects.index) and list(table.columns) == ["sex", "site", "age"]
    assert table["age"].dtype == np.float64 and table.loc["s07", "site"] == "A"


def test_with_score_norms_false_is_read_and_the_summary_says_what_gnsm_models(small_study):
    with_gnsm(small_study, {"columns": {"sex": "categorical"}, "with_score_norms": False})
    manifest = load_manifest(small_study.manifest)
    assert manifest.gnsm.with_score_norms is False
    assert "gnsm: sex (categorical)\n" in validate_study(manifest, progress=False).summary() + "\n"


@pytest.mark.parametrize(
    ("block", "field", "needle"),
    [
        ({"columns": {"sex": "categorical"}, "with_norms": True}, "gnsm.with_norms", "unknown key 'with_norms'"),
        ({"with_score_norms": True}, "gnsm.columns", "this key is required"),
        ({"columns": {"age": "continuous"}}, "gnsm.columns.age", "categorical or numeric"),
        ({"columns": ["age", "sex"]}, "gnsm.columns", "a mapping of subject-table columns"),
        ({"columns": {}}, "gnsm.columns", "at least one"),
        ({"columns": {"sex": "categorical"}, "with_score_norms": "yes"}, "gnsm.with_score_norms", "true or false"),
        ({"columns": {"cohort": "categorical"}}, "gnsm.columns", "the subjects.cohort_column column"),
        ({"columns": {"norm_03": "numeric"}}, "gnsm.columns", "'norm_03'"),
        (["sex"], "gnsm", "a mapping"),
    ],
)
def test_a_malformed_block_is_named(small_study, block, field, needle):
    with_gnsm(small_study, block)
    problem = one_problem(manifest_problems(small_study), field, needle)
    assert problem.file.endswith("data_manifest.yaml")


def test_a_column_missing_from_the_subjects_table_is_named(small_study):
    with_gnsm(small_study, {"columns": {"site": "categorical", "age": "numeric"}})
    problem = one_problem(problems_of(small_study.manifest), "gnsm.columns", "a column named 'site'")
    assert problem.file.endswith("subjects.csv") and "columns ['subject_id'" in problem.found


def test_text_in_a_numeric_column_is_named_with_its_row(small_study):
    add_site(small_study)
    with_gnsm(small_study, {"columns": {"site": "numeric"}})
    problem = one_problem(problems_of(small_study.manifest), "gnsm.columns.site", "numbers in the numeric GNSM")
    assert problem.file.endswith("subjects.csv")
    assert problem.found.startswith("'A' on row 2 (s00)") and "7 more cells" in problem.found


def test_a_categorical_column_with_one_level_among_the_reference_train_subjects_is_named(small_study):
    # The val, test and patient subjects hold other levels: only the train subjects count.
    add_site(small_study, ["A", "A", "A", "A", "B", "C", "B", "C"])
    with_gnsm(small_study, {"columns": {"site": "categorical"}})
    problem = one_problem(problems_of(small_study.manifest), "gnsm.columns.site", "train subjects")
    assert problem.found == "only 'A' (4 subjects)" and "'typical'" in problem.expected


def test_a_numeric_column_constant_among_the_reference_train_subjects_is_named(small_study):
    for sid in ("s00", "s01", "s02", "s03"):
        set_cell(small_study, sid, "age", "10")
    with_gnsm(small_study, {"columns": {"age": "numeric"}})
    one_problem(problems_of(small_study.manifest), "gnsm.columns.age", "at least two distinct values")


def test_missing_values_are_allowed_and_named_in_a_warning(small_study):
    set_cell(small_study, "s01", "sex", "")
    set_cell(small_study, "s06", "age", "NA")
    with_gnsm(small_study, {"columns": {"sex": "categorical", "age": "numeric"}})
    study = validate_study(load_manifest(small_study.manifest), progress=False)
    warnings = {w.field: w.message for w in study.warnings if w.field.startswith("gnsm.")}
    assert "most frequent level" in warnings["gnsm.columns.sex"] and "s01" in warnings["gnsm.columns.sex"]
    assert "their mean" in warnings["gnsm.columns.age"] and "s06" in warnings["gnsm.columns.age"]
    assert study.gnsm_table["sex"].isna().sum() == 1


def test_impute_fills_numeric_with_the_fit_mean_and_categorical_with_the_most_frequent_level():
    frame = pd.DataFrame(
        {"age": [9.0, 11.0, np.nan, 30.0, np.nan], "site": ["B", "A", None, "B", "A"]},
        index=["a", "b", "c", "d", "e"],
    )
    filled, counts = impute(frame, {"age": "numeric", "site": "categorical"}, ["a", "b", "c", "e"])
    assert counts == {"age": 2, "site": 1}
    assert filled.loc["c", "age"] == 10.0 and filled.loc["e", "age"] == 10.0  # d (30) is not a fit subject
    assert filled.loc["c", "site"] == "A"  # A and B tie among the fit subjects: alphabetical
    assert frame["site"].isna().sum() == 1  # the input is left as it was
