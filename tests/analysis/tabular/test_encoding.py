"""Tests of reading and encoding tables against a schema: one-hot blocks, standardisation checked against numpy,
CSV and Parquet alike, missing-value markers, the ``missing: level`` and ``missing: mean`` paths, the encoder's
JSON round trip, and every error naming the table file, the column and the offending rows. The table has 7 rows,
5 of them inliers, and 3-level categoricals, so axis mix-ups fail."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from analysis.tabular.encoding import EncodedTable, TableEncoder, fit_encoder, load_table
from analysis.tabular.schema import MISSING_LEVEL, TabularError, TabularSchema
from tests.analysis.tabular.test_schema import SCHEMA_YAML, assert_names

IDS = ["s1", "s2", "s3", "s4", "s5", "s6", "s7"]
INLIER = np.array([True, True, False, True, True, False, True])
TABLE = {
    "subject_id": IDS,
    "diagnosis": ["control", "control", "case", "control", "control", "case", "control"],
    "sex": ["F", "M", "M", "F", "F", "M", "M"],
    "site": ["b", "a", "a", "c", "a", "b", "c"],
    "age": ["30", "41.5", "50", "27", "35", "62", "44"],
    "item3": ["1", "3", "NA", "2", "", "2", "3"],
    "bmi": ["22.5", "-999", "30.1", "nan", "24.0", "28", "26.5"],
    "notes": ["x", "", "y", "z", "", "w", "v"],
}
AGE = np.array([30, 41.5, 50, 27, 35, 62, 44])
BMI = np.array([22.5, np.nan, 30.1, np.nan, 24.0, 28, 26.5])


@pytest.fixture
def schema():
    return TabularSchema.from_dict(yaml.safe_load(SCHEMA_YAML), source="schema.yaml")


def write_csv(path, columns: dict) -> str:
    pd.DataFrame(columns).to_csv(path, index=False)
    return str(path)


@pytest.fixture
def csv_path(tmp_path):
    return write_csv(tmp_path / "train.csv", TABLE)


@pytest.fixture
def table(csv_path, schema):
    return load_table(csv_path, schema)


@pytest.fixture
def encoder(table, schema, csv_path):
    return fit_encoder(table, schema, csv_path)


def fit_error(columns: dict, schema: TabularSchema, tmp_path, name="bad.csv") -> TabularError:
    path = write_csv(tmp_path / name, columns)
    with pytest.raises(TabularError) as info:
        fit_encoder(load_table(path, schema), schema, path)
    return info.value


def changed(**columns) -> dict:
    return {**TABLE, **columns}


def test_fit_learns_levels_and_scales(encoder):
    assert encoder.levels == {"sex": ("F", "M"), "site": ("a", "b", "c"), "item3": ("1", "2", "3", MISSING_LEVEL)}
    assert encoder.sizes == (2, 3, 4) and encoder.n_categorical_features == 9 and encoder.n_continuous == 2
    assert encoder.means["age"] == pytest.approx(np.mean(AGE[INLIER]))
    assert encoder.sds["age"] == pytest.approx(np.std(AGE[INLIER]))
    inlier_bmi = BMI[INLIER][~np.isnan(BMI[INLIER])]
    assert inlier_bmi.size == 3
    assert encoder.means["bmi"] == pytest.approx(inlier_bmi.mean())
    assert encoder.sds["bmi"] == pytest.approx(inlier_bmi.std())


def test_transform_encodes_every_row(encoder, table, csv_path):
    encoded = encoder.transform(table, csv_path)
    assert isinstance(encoded, EncodedTable)
    assert encoded.ids.tolist() == IDS and encoded.ids.dtype.kind == "U"
    assert encoded.onehot.dtype == np.float32 and encoded.onehot.shape == (7, 9)
    assert encoded.continuous.dtype == np.float32 and encoded.continuous.shape == (7, 2)
    assert encoded.sizes == (2, 3, 4)
    assert encoded.categorical_names == ("sex", "site", "item3") and encoded.continuous_names == ("age", "bmi")
    np.testing.assert_array_equal(encoded.inlier, INLIER)
    blocks = np.split(encoded.onehot, np.cumsum(encoded.sizes)[:-1], axis=1)
    for block in blocks:
        np.testing.assert_array_equal(block.sum(axis=1), np.ones(7))
    np.testing.assert_array_equal(blocks[0].argmax(axis=1), [0, 1, 1, 0, 0, 1, 1])
    np.testing.assert_array_equal(blocks[1].argmax(axis=1), [1, 0, 0, 2, 0, 1, 2])
    np.testing.assert_array_equal(blocks[2].argmax(axis=1), [0, 2, 3, 1, 3, 1, 2])


def test_standardisation_matches_numpy(encoder, table, csv_path):
    encoded = encoder.transform(table, csv_path)
    age = (AGE - AGE[INLIER].mean()) / AGE[INLIER].std()
    np.testing.assert_allclose(encoded.continuous[:, 0], age, rtol=1e-6)
    np.testing.assert_allclose(encoded.continuous[INLIER, 0].mean(), 0, atol=1e-6)
    np.testing.assert_allclose(encoded.continuous[INLIER, 0].std(), 1, rtol=1e-6)
    known = BMI[INLIER][~np.isnan(BMI[INLIER])]
    bmi = np.where(np.isnan(BMI), 0.0, (BMI - known.mean()) / known.std())
    np.testing.assert_allclose(encoded.continuous[:, 1], bmi, rtol=1e-6, atol=1e-7)


def test_missing_mean_fills_with_the_inlier_mean(encoder, table, csv_path):
    """s2 (-999, a declared marker) and s4 (nan) get the inlier mean: 0 once standardised."""
    encoded = encoder.transform(table, csv_path)
    assert encoded.continuous[1, 1] == 0.0 and encoded.continuous[3, 1] == 0.0
    assert encoded.continuous[2, 1] != 0.0


def test_missing_level_is_its_own_level(encoder, table, csv_path):
    """s3 (NA) and s5 (empty) are the level 'missing', the last of item3's block."""
    item3 = encoder.transform(table, csv_path).onehot[:, 5:9]
    np.testing.assert_array_equal(item3[:, 3], [0, 0, 1, 0, 1, 0, 0])


def test_missing_level_is_kept_when_the_inliers_have_none(schema, tmp_path):
    path = write_csv(tmp_path / "full.csv", changed(item3=["1", "3", "NA", "2", "1", "2", "3"]))
    encoder = fit_encoder(load_table(path, schema), schema, path)
    assert encoder.levels["item3"] == ("1", "2", "3", MISSING_LEVEL)


def test_markers_without_declaring_them(schema, tmp_path):
    """Without missing_values: [-999] the cell -999 is a number like any other."""
    plain = TabularSchema.from_dict({k: v for k, v in schema.as_dict().items() if k != "missing_values"})
    path = write_csv(tmp_path / "t.csv", TABLE)
    encoder = fit_encoder(load_table(path, plain), plain, path)
    values = np.array([22.5, -999, 24.0, 26.5])
    assert encoder.means["bmi"] == pytest.approx(values.mean())


def test_markers_in_a_frame_not_read_from_a_file(schema, encoder, table, csv_path):
    """fit_encoder applies the schema's markers itself, so a frame built in code gets the same encoding."""
    frame = pd.DataFrame(TABLE)
    frame["item3"] = frame["item3"].replace("", " ")  # a cell of spaces is empty too
    np.testing.assert_array_equal(
        encoder.transform(frame, "<frame>").continuous, encoder.transform(table, csv_path).continuous
    )
    assert fit_encoder(frame, schema, "<frame>") == encoder


def test_csv_and_parquet_read_the_same(schema, tmp_path, encoder, table, csv_path):
    typed = pd.DataFrame(
        {
            **TABLE,
            "age": AGE,
            "item3": [1.0, 3.0, np.nan, 2.0, np.nan, 2.0, 3.0],
            "bmi": [22.5, -999.0, 30.1, np.nan, 24.0, 28.0, 26.5],
            "notes": ["x", None, "y", "z", None, "w", "v"],
        }
    )
    parquet = tmp_path / "train.parquet"
    typed.to_parquet(parquet)
    from_parquet = load_table(parquet, schema)
    assert fit_encoder(from_parquet, schema, str(parquet)) == encoder
    a, b = encoder.transform(table, csv_path), encoder.transform(from_parquet, str(parquet))
    for field in ("ids", "onehot", "continuous", "inlier"):
        np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
    # The typed frame itself (float columns, -999.0 and NaN) encodes the same without a file.
    assert fit_encoder(typed, schema, "<frame>") == encoder
    np.testing.assert_array_equal(encoder.transform(typed, "<frame>").onehot, a.onehot)
    np.testing.assert_array_equal(encoder.transform(typed, "<frame>").continuous, a.continuous)


def test_tsv_reads_like_csv(schema, tmp_path, encoder, table, csv_path):
    tsv = tmp_path / "train.tsv"
    pd.DataFrame(TABLE).to_csv(tsv, sep="\t", index=False)
    np.testing.assert_array_equal(
        encoder.transform(load_table(tsv, schema), str(tsv)).onehot, encoder.transform(table, csv_path).onehot
    )


def test_json_round_trip_gives_identical_encodings(encoder, table, csv_path):
    text = json.dumps(encoder.as_dict())
    again = TableEncoder.from_dict(json.loads(text), source="encoder.json")
    assert again == encoder
    a, b = encoder.transform(table, csv_path), again.transform(table, csv_path)
    for field in ("ids", "onehot", "continuous", "inlier"):
        assert np.array_equal(getattr(a, field), getattr(b, field))


def test_rows_without_an_id_column_are_numbered(tmp_path):
    schema = TabularSchema.from_columns({"c": ["u", "v", "w"], "n": None})
    path = write_csv(tmp_path / "t.csv", {"c": ["w", "u", "v", "u", "w", "v", "u"], "n": [1, 2, 3, 4, 5, 6, 8]})
    encoded = fit_encoder(load_table(path, schema), schema, path).transform(load_table(path, schema), path)
    assert encoded.ids.tolist() == ["0", "1", "2", "3", "4", "5", "6"]
    assert encoded.inlier.all()
    np.testing.assert_array_equal(encoded.onehot.argmax(axis=1), [2, 0, 1, 0, 2, 1, 0])


def test_learned_levels_sort_numerically_when_numbers(tmp_path):
    schema = TabularSchema.from_dict({"columns": {"k": {"type": "categorical"}, "n": {"type": "continuous"}}})
    path = write_csv(tmp_path / "t.csv", {"k": ["10", "2", "9.0", "2", "10", "9", "2"], "n": [1, 2, 3, 4, 5, 6, 8]})
    assert fit_encoder(load_table(path, schema), schema, path).levels["k"] == ("2", "9", "10")


def test_a_scoring_table_without_the_inlier_column(encoder, table):
    encoded = encoder.transform(table.drop(columns="diagnosis"), "score.csv")
    assert not encoded.inlier.any() and encoded.ids.tolist() == IDS


def test_no_categorical_or_no_continuous_columns(tmp_path):
    schema = TabularSchema.from_columns({"n": None})
    path = write_csv(tmp_path / "t.csv", {"n": [1, 2, 3, 4, 5, 6, 8]})
    encoded = fit_encoder(load_table(path, schema), schema, path).transform(load_table(path, schema), path)
    assert encoded.onehot.shape == (7, 0) and encoded.sizes == () and encoded.continuous.shape == (7, 1)


def test_unseen_level_at_scoring(encoder, tmp_path, schema):
    path = write_csv(tmp_path / "score.csv", changed(site=["a", "d", "a", "b", "e", "c", "d"]))
    with pytest.raises(TabularError) as info:
        encoder.transform(load_table(path, schema), path)
    assert_names(info.value, path, "site", "unseen levels", "'d' (row s2)", "'e' (row s5)", "'d' (row s7)")


def test_a_level_only_outliers_show_is_unseen(encoder, tmp_path, schema):
    """Levels come from the inlier rows: a level only a case row holds cannot be encoded."""
    path = write_csv(tmp_path / "score.csv", changed(site=["b", "a", "q", "c", "a", "b", "c"]))
    with pytest.raises(TabularError) as info:
        fit_encoder(load_table(path, schema), schema, path).transform(load_table(path, schema), path)
    assert_names(info.value, path, "site", "unseen level", "'q' (row s3)")


@pytest.mark.parametrize(
    ("columns", "field", "words"),
    [
        ({k: v for k, v in TABLE.items() if k != "age"}, "age", ("every column the schema declares", "['age']")),
        ({**TABLE, "extra": IDS, "more": IDS}, "extra, more", ("declare its type or list it under ignore",)),
        ({k: v for k, v in TABLE.items() if k != "diagnosis"}, "diagnosis", ("inlier column",)),
        ({k: v for k, v in TABLE.items() if k != "subject_id"}, "subject_id", ("id column",)),
        (changed(subject_id=["s1", "s2", "s1", "s4", "s5", "s4", "s7"]), "subject_id", ("each id once", "s1, s4")),
        (changed(subject_id=["s1", "", "s3", "NA", "s5", "s6", "s7"]), "subject_id", ("missing id", "rows 1, 3")),
        (changed(diagnosis=["case"] * 7), "diagnosis", ("at least one inlier row", "no inlier rows", "case")),
        (changed(sex=["F", "F", "M", "F", "F", "M", "F"]), "sex", ("at least 2 levels among the inlier", "['F']")),
        (changed(site=["a", "a", "b", "a", "a", "c", "a"]), "site", ("at least 2 levels", "['a']")),
        (changed(sex=["F", "M", "X", "F", "f", "M", "M"]), "sex", ("declared levels", "'X' (row s3)", "'f' (row s5)")),
        (changed(item3=["1", "3", "4", "2", "", "2", "3"]), "item3", ("declared levels", "'4' (row s3)")),
        (
            changed(age=["30", "41.5", "old", "27", "?", "62", "44"]),
            "age",
            ("finite numbers", "'old' (row s3)", "'?' (row s5)"),
        ),
        (changed(age=["30", "41.5", "inf", "27", "35", "62", "44"]), "age", ("finite numbers", "'inf' (row s3)")),
        (changed(age=["30", "", "50", "27", "NA", "62", "44"]), "age", ("missing: mean", "rows s2, s5")),
        (changed(sex=["F", "M", "", "F", "F", "M", "M"]), "sex", ("missing: level", "row s3")),
        (changed(age=["30", "30", "50", "30.0", "30", "62", "30"]), "age", ("constant column", "30")),
        (changed(bmi=["22.5", "-999", "30.1", "nan", "NA", "28", ""]), "bmi", ("at least 2 values", "1 value")),
    ],
)
def test_table_errors_name_file_column_and_rows(schema, tmp_path, columns, field, words):
    assert_names(fit_error(columns, schema, tmp_path, name="study.csv"), str(tmp_path / "study.csv"), field, *words)


def test_transform_runs_the_same_checks(encoder, schema, tmp_path):
    path = write_csv(tmp_path / "score.csv", changed(age=["30", "41", "50", "27", "x", "62", "44"]))
    with pytest.raises(TabularError) as info:
        encoder.transform(load_table(path, schema), path)
    assert_names(info.value, path, "age", "finite numbers", "'x' (row s5)")
    path = write_csv(tmp_path / "score2.csv", {**TABLE, "extra": IDS})
    with pytest.raises(TabularError) as info:
        encoder.transform(load_table(path, schema), path)
    assert_names(info.value, path, "extra", "undeclared column")


def test_long_lists_of_rows_are_cut(tmp_path):
    schema = TabularSchema.from_columns({"n": None}, id_column="id")
    ids = [f"r{i}" for i in range(9)]
    path = write_csv(tmp_path / "t.csv", {"id": ids, "n": ["a"] * 9})
    with pytest.raises(TabularError) as info:
        fit_encoder(load_table(path, schema), schema, path)
    assert "(row r4)" in str(info.value) and "(row r5)" not in str(info.value) and "and 4 more" in str(info.value)


def test_load_table_errors_name_the_file(schema, tmp_path):
    missing = tmp_path / "none.csv"
    with pytest.raises(TabularError) as info:
        load_table(missing, schema)
    assert_names(info.value, str(missing), "", "existing table file")
    empty = tmp_path / "header.csv"
    empty.write_text("subject_id,sex\n")
    with pytest.raises(TabularError) as info:
        load_table(empty, schema)
    assert_names(info.value, str(empty), "", "at least one data row")


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        (lambda d: d.update(extra=1), "", ("exactly the keys",)),
        (lambda d: d.pop("levels"), "", ("exactly the keys",)),
        (lambda d: d["levels"].pop("site"), "levels", ("'sex', 'site', 'item3'",)),
        (lambda d: d["levels"].update(site=["a"]), "levels.site", ("at least 2 distinct",)),
        (lambda d: d["levels"].update(site=["a", "a"]), "levels.site", ("at least 2 distinct",)),
        (lambda d: d["levels"].update(sex=["M", "F"]), "levels.sex", ("the schema's levels ['F', 'M']",)),
        (lambda d: d["levels"].update(item3=["1", "2", "3"]), "levels.item3", ("'3', 'missing'",)),
        (lambda d: d["continuous"]["age"].update(sd=0.0), "continuous.age", ("positive",)),
        (lambda d: d["continuous"]["age"].pop("mean"), "continuous.age", ("mean",)),
        (lambda d: d["continuous"].pop("bmi"), "continuous", ("'age', 'bmi'",)),
    ],
)
def test_encoder_from_dict_errors(encoder, change, field, words):
    data = json.loads(json.dumps(encoder.as_dict()))
    change(data)
    with pytest.raises(TabularError) as info:
        TableEncoder.from_dict(data, source="encoder.json")
    assert_names(info.value, "encoder.json", field, *words)


def test_encoder_from_dict_checks_its_schema(encoder):
    data = encoder.as_dict()
    data["schema"]["columns"]["age"]["type"] = "numeric"
    with pytest.raises(TabularError) as info:
        TableEncoder.from_dict(data, source="encoder.json")
    assert_names(info.value, "encoder.json: schema", "columns.age.type")


def test_a_missing_inlier_cell_is_not_an_inlier(encoder, schema, tmp_path):
    path = write_csv(tmp_path / "t.csv", changed(diagnosis=["", "control", "case", "control", "NA", "case", "control"]))
    encoded = encoder.transform(load_table(path, schema), path)
    np.testing.assert_array_equal(encoded.inlier, [False, True, False, True, False, False, True])
