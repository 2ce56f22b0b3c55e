"""Tests of the table schema: reading the YAML, its round trip, level text, and every error naming its file and
field."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from analysis.tabular.schema import (
    MISSING_LEVEL,
    Column,
    Inliers,
    TabularError,
    TabularSchema,
    level_text,
    load_schema,
)

SCHEMA_YAML = """\
id_column: subject_id
columns:
  sex:  {type: categorical, levels: [F, M]}
  site: {type: categorical}
  age:  {type: continuous}
  item3: {type: categorical, levels: [1, 2, 3], missing: level}
  bmi:  {type: continuous, missing: mean}
inliers:
  column: diagnosis
  values: [control]
ignore: [notes]
missing_values: [-999]
"""


@pytest.fixture
def schema_dict():
    return yaml.safe_load(SCHEMA_YAML)


def error_of(data, source="s.yaml") -> TabularError:
    with pytest.raises(TabularError) as info:
        TabularSchema.from_dict(data, source=source)
    return info.value


def assert_names(error: TabularError, file: str, field: str, *words: str) -> None:
    assert error.file == file and error.field == field
    message = str(error)
    assert message.startswith(f"{file}: {field}: expected " if field else f"{file}: expected ")
    assert "; found " in message
    for word in words:
        assert word in message, message


def test_load_schema_reads_every_part(tmp_path):
    path = tmp_path / "schema.yaml"
    path.write_text(SCHEMA_YAML)
    schema = load_schema(path)
    assert schema.id_column == "subject_id"
    assert schema.columns == (
        Column("sex", "categorical", ("F", "M")),
        Column("site", "categorical"),
        Column("age", "continuous"),
        Column("item3", "categorical", ("1", "2", "3"), "level"),
        Column("bmi", "continuous", None, "mean"),
    )
    assert [c.name for c in schema.categorical] == ["sex", "site", "item3"]
    assert [c.name for c in schema.continuous] == ["age", "bmi"]
    assert schema.inliers == Inliers("diagnosis", ("control",)) and not schema.inliers.all
    assert schema.ignore == ("notes",)
    assert schema.missing_values == (-999,)
    assert {"NA", "nan", "-999"} <= schema.markers.texts and -999.0 in schema.markers.numbers


def test_round_trip_through_dict_and_yaml(tmp_path, schema_dict):
    schema = TabularSchema.from_dict(schema_dict)
    assert TabularSchema.from_dict(schema.as_dict()) == schema
    path = tmp_path / "again.yaml"
    path.write_text(yaml.safe_dump(schema.as_dict(), sort_keys=False))
    assert load_schema(path) == schema
    assert list(load_schema(path).as_dict()["columns"]) == ["sex", "site", "age", "item3", "bmi"]


def test_defaults_without_optional_keys():
    schema = TabularSchema.from_dict({"columns": {"a": {"type": "continuous"}}})
    assert schema.id_column is None and schema.inliers.all and schema.ignore == () and schema.missing_values == ()
    assert schema.columns[0].missing == "error"
    assert schema.as_dict() == {"columns": {"a": {"type": "continuous"}}, "inliers": {"all": True}}


def test_inliers_all_true():
    schema = TabularSchema.from_dict({"columns": {"a": {"type": "continuous"}}, "inliers": {"all": True}})
    assert schema.inliers == Inliers() and schema.inliers.all


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1, "1"),
        (1.0, "1"),
        ("1.0", "1"),
        (" 2.00 ", "2"),
        ("-3.0", "-3"),
        (np.float64(4.0), "4"),
        (np.int64(5), "5"),
        (1.5, "1.5"),
        ("01", "01"),
        (" F ", "F"),
        ("1e3", "1e3"),
        (True, "True"),
    ],
)
def test_level_text(value, text):
    assert level_text(value) == text


def test_levels_are_text_and_whole_numbers_match():
    schema = TabularSchema.from_dict({"columns": {"x": {"type": "categorical", "levels": [1, 2.0, "3", "a"]}}})
    assert schema.columns[0].levels == ("1", "2", "3", "a")


def test_from_columns():
    schema = TabularSchema.from_columns({"c": ["u", "v", "w"], "n": None, "k": (0, 1)})
    assert schema.columns == (
        Column("c", "categorical", ("u", "v", "w")),
        Column("n", "continuous"),
        Column("k", "categorical", ("0", "1")),
    )
    assert schema.inliers.all and schema.id_column is None
    keyed = TabularSchema.from_columns({"c": ["u", "v"]}, False, id_column="id", inlier_column="g", inlier_values=[0])
    assert keyed.id_column == "id" and keyed.inliers == Inliers("g", ("0",))


def test_from_columns_errors():
    assert_names(error_of_call(lambda: TabularSchema.from_columns({"c": ["u"]})), "<columns>", "columns.c.levels")
    error = error_of_call(lambda: TabularSchema.from_columns({"c": ["u", "v"]}, inlier_column="g"))
    assert_names(error, "<columns>", "inliers", "inliers_all")
    assert_names(error_of_call(lambda: TabularSchema.from_columns({}, False)), "<columns>", "columns")


def error_of_call(call) -> TabularError:
    with pytest.raises(TabularError) as info:
        call()
    return info.value


def test_missing_file_and_bad_yaml(tmp_path):
    missing = tmp_path / "none.yaml"
    assert_names(error_of_call(lambda: load_schema(missing)), str(missing), "", "existing schema file")
    bad = tmp_path / "bad.yaml"
    bad.write_text("columns: {a: [\n")
    assert_names(error_of_call(lambda: load_schema(bad)), str(bad), "", "valid YAML")
    twice = tmp_path / "twice.yaml"
    twice.write_text("columns:\n  a: {type: continuous}\n  a: {type: continuous}\n")
    assert_names(error_of_call(lambda: load_schema(twice)), str(twice), "", "appears twice")
    listed = tmp_path / "list.yaml"
    listed.write_text("- a\n- b\n")
    assert_names(error_of_call(lambda: load_schema(listed)), str(listed), "", "mapping")


def edited(schema_dict, change):
    data = copy.deepcopy(schema_dict)
    change(data)
    return data


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda d: d.update(colums=d.pop("columns")), "colums", ("unknown key 'colums'", "did you mean 'columns'")),
        (lambda d: d["columns"]["sex"].update(level=["F", "M"]), "columns.sex.level", ("unknown key 'level'",)),
        (lambda d: d["inliers"].update(value=["x"]), "inliers.value", ("unknown key 'value'",)),
        (lambda d: d["columns"]["age"].update(type="numeric"), "columns.age.type", ("categorical", "'numeric'")),
        (lambda d: d["columns"]["age"].pop("type"), "columns.age.type", ("nothing",)),
        (lambda d: d["columns"].update(age="continuous"), "columns.age", ("{type: continuous}",)),
        (lambda d: d["columns"]["sex"].update(levels=["F"]), "columns.sex.levels", ("at least 2 levels", "1 level")),
        (lambda d: d["columns"]["sex"].update(levels=[]), "columns.sex.levels", ("0 levels",)),
        (lambda d: d["columns"]["sex"].update(levels=["F", "M", "F"]), "columns.sex.levels", ("repeated", "'F'")),
        (lambda d: d["columns"]["item3"].update(levels=[1, "1.0", 2]), "columns.item3.levels", ("repeated", "'1'")),
        (lambda d: d["columns"]["sex"].update(levels=[True, False]), "columns.sex.levels", ("quote",)),
        (lambda d: d["columns"]["sex"].update(levels="F, M"), "columns.sex.levels", ("a list of levels",)),
        (lambda d: d["columns"]["age"].update(levels=[1, 2]), "columns.age.levels", ("continuous",)),
        (lambda d: d["columns"]["age"].update(missing="level"), "columns.age.missing", ("'error', 'mean'", "'level'")),
        (lambda d: d["columns"]["sex"].update(missing="mean"), "columns.sex.missing", ("'error', 'level'", "'mean'")),
        (lambda d: d["columns"]["item3"].update(levels=[1, MISSING_LEVEL]), "columns.item3.levels", ("adds it",)),
        (lambda d: d.update(columns={}), "columns", ("at least one",)),
        (lambda d: d.pop("columns"), "columns", ("nothing",)),
        (lambda d: d.update(ignore=["notes", "age"]), "ignore", ("both", "'age'")),
        (lambda d: d.update(ignore="notes"), "ignore", ("list of column names",)),
        (lambda d: d.update(id_column="sex"), "id_column", ("'sex' declared",)),
        (lambda d: d.update(id_column=["a"]), "id_column", ("name of the id column",)),
        (lambda d: d.update(ignore=["diagnosis"]), "inliers.column", ("'diagnosis' listed under ignore",)),
        (lambda d: d.update(id_column="diagnosis"), "inliers.column", ("other than the id column",)),
        (lambda d: d.update(inliers=["control"]), "inliers", ("{all: true}",)),
        (lambda d: d.update(inliers={"all": False}), "inliers", ("all: False",)),
        (lambda d: d["inliers"].update(all=True), "inliers", ("'all', 'column', 'values'",)),
        (lambda d: d["inliers"].pop("values"), "inliers", ("keys ['column']",)),
        (lambda d: d["inliers"].update(values=[]), "inliers.values", ("non-empty list",)),
        (lambda d: d["inliers"].update(values="control"), "inliers.values", ("non-empty list",)),
        (lambda d: d["inliers"].update(column=3), "inliers.column", ("int 3",)),
        (lambda d: d.update(missing_values=[-999, None]), "missing_values", ("[-999, None]",)),
        (lambda d: d.update(missing_values=-999), "missing_values", ("int -999",)),
    ],
)
def test_schema_errors_name_file_and_field(schema_dict, change, field, words):
    assert_names(error_of(edited(schema_dict, change), source="study/schema.yaml"), "study/schema.yaml", field, *words)


def test_a_column_name_must_be_text(schema_dict):
    data = edited(schema_dict, lambda d: d["columns"].update({2019: {"type": "continuous"}}))
    assert_names(error_of(data), "s.yaml", "columns", "column names as text", "int 2019")


def test_a_non_mapping_schema():
    assert_names(error_of(["columns"]), "s.yaml", "", "mapping", "list")


def test_error_message_format():
    error = TabularError("f.csv", "age", "numbers", "text")
    assert str(error) == "f.csv: age: expected numbers; found text"
    assert isinstance(error, ValueError)
    assert (error.file, error.field, error.expected, error.found) == ("f.csv", "age", "numbers", "text")
