"""``msma tabular fit|score``: the model folder, the scores in Parquet and CSV, the errors a user meets (unseen level,
undeclared column, text in a continuous column, a missing model), and a failed fit leaving the last good folder."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from msma.cli import main

SCHEMA = """\
id_column: id
columns:
  a: {type: categorical}
  b: {type: categorical, levels: [p, q, r]}
  age: {type: continuous}
inliers: {column: label, values: [normal]}
"""


def _table(n: int = 90, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.integers(3, size=n)
    b = a.copy()
    b[-9:] = (a[-9:] + 1) % 3
    return pd.DataFrame({
        "id": [f"r{i:03d}" for i in range(n)],
        "a": np.array(["x", "y", "z"])[a],
        "b": np.array(["p", "q", "r"])[b],
        "age": 30 + 10 * a + rng.normal(0, 2, n),
        "label": ["normal"] * (n - 9) + ["odd"] * 9,
    })


@pytest.fixture
def study(tmp_path):
    _table().to_csv(tmp_path / "table.csv", index=False)
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    return tmp_path


def _fit(study, *extra) -> int:
    return main(["tabular", "fit", str(study / "table.csv"), "--schema", str(study / "schema.yaml"),
                 "--out", str(study / "model"), "--profile", "fast", "--quiet", *extra])


def test_fit_writes_the_model_folder_and_score_reproduces_its_scores(study, capsys):
    assert _fit(study) == 0
    assert "inlier rows of 90" in capsys.readouterr().out
    folder = study / "model"
    assert sorted(p.name for p in folder.iterdir()) == ["fit.json", "gnsm.pt", "scores.csv", "scores.parquet"]
    fit = json.loads((folder / "fit.json").read_text())
    assert fit["inliers"] == 81 and fit["train_rows"] + fit["validation_rows"] == 81
    assert fit["categorical"] == ["a", "b"] and fit["continuous"] == ["age"]
    fitted = pd.read_parquet(folder / "scores.parquet")
    assert list(fitted.columns[:3]) == ["id", "inlier", "score"] and fitted.shape[1] == 3 + 6
    assert fitted["inlier"].sum() == 81
    pd.testing.assert_frame_equal(pd.read_csv(folder / "scores.csv"), fitted, check_dtype=False)

    assert main(["tabular", "score", str(study / "table.csv"), "--model", str(folder),
                 "--out", str(study / "out" / "scores.parquet")]) == 0
    scored = pd.read_parquet(study / "out" / "scores.parquet")
    np.testing.assert_allclose(scored["score"], fitted["score"], rtol=1e-6)
    assert (study / "out" / "scores.csv").is_file()


def test_scoring_a_level_the_model_has_not_seen_names_column_level_and_row(study, capsys):
    assert _fit(study) == 0
    table = _table()
    table.loc[4, "a"] = "w"
    table.drop(columns="label").to_csv(study / "new.csv", index=False)
    code = main(["tabular", "score", str(study / "new.csv"), "--model", str(study / "model"),
                 "--out", str(study / "new.parquet")])
    err = capsys.readouterr().err
    assert code == 2
    assert "new.csv" in err and "'a'" in err or "a:" in err
    assert "w" in err and "r004" in err
    assert not (study / "new.parquet").exists()


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda t: t.assign(extra=1), "extra"),
        (lambda t: t.drop(columns="b"), "b"),
        (lambda t: t.assign(age=["old"] + list(t["age"][1:])), "age"),
    ],
    ids=["undeclared column", "missing column", "text in a continuous column"],
)
def test_bad_tables_are_refused_and_the_last_good_model_stays(study, capsys, change, expected):
    assert _fit(study) == 0
    before = (study / "model" / "gnsm.pt").read_bytes()
    change(_table()).to_csv(study / "table.csv", index=False)
    assert _fit(study) == 2
    err = capsys.readouterr().err
    assert "table.csv" in err and expected in err
    assert (study / "model" / "gnsm.pt").read_bytes() == before


def test_score_without_a_model_folder_says_what_it_expected(study, capsys):
    code = main(["tabular", "score", str(study / "table.csv"), "--model", str(study / "nothing"),
                 "--out", str(study / "s.parquet")])
    assert code == 2
    assert "--model" in capsys.readouterr().err


def test_a_categorical_column_with_one_level_is_refused(study, capsys):
    _table().assign(a="x").to_csv(study / "table.csv", index=False)
    assert _fit(study) == 2
    err = capsys.readouterr().err
    assert "a" in err and "level" in err
