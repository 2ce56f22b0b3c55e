"""The run reader on a synthetic published run: typed tables in run order, a memory-mapped heatmap stack, and named
errors for a study without runs or a broken run folder."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from analysis.demo.synthetic_run import write_synthetic_study
from analysis.exploration.roi_stats import percentile_reference
from analysis.runs.reader import RunUnreadable, open_run
from analysis.runs.store import RunNotFound
from tests.conftest import make_small_study


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    return write_synthetic_study(tmp_path_factory.mktemp("reader") / "study", 150, seed=3)


def test_open_run_reads_tables_in_run_order_and_maps_the_heatmaps(synthetic):
    run = open_run(synthetic)
    ids = pd.read_parquet(run.run_dir / "score_norms.parquet")["subject_id"].tolist()
    assert run.subjects.index.tolist() == ids == run.roi_scores.index.tolist() == run.score_norms.index.tolist()
    assert isinstance(run.heatmaps, np.memmap) and run.heatmaps.shape == (150, *run.study.grid.shape)
    som = pd.read_parquet(run.run_dir / "som.parquet")
    np.testing.assert_array_equal(run.subjects["bmu_row"], som["bmu_row"])
    np.testing.assert_array_equal(run.som.u_matrix, np.load(run.run_dir / "som_u_matrix.npy"))
    table = pd.read_csv(synthetic.parent / "subjects.csv", index_col="subject_id")
    assert run.subjects["sex"].tolist() == table.loc[ids, "sex"].tolist()
    assert run.cohorts[0] == run.reference_cohort == "typical"
    s = run.subjects
    assert run.reference_ids == percentile_reference(ids, list(s["cohort"]), list(s.index[s["role"] == "train"]),
                                                     "typical")
    assert set(run.roi_labels) == set(run.roi_scores.columns)
    assert run.heatmap_unit == "reference SD"
    assert run.behaviour is not None and set(run.behaviour.index) <= set(ids)


def test_a_named_run_and_a_study_without_runs(synthetic, tmp_path):
    run = open_run(synthetic)
    assert open_run(synthetic, run.run_id).run_id == run.run_id
    with pytest.raises(RunNotFound, match="no published run 20990101T000000Z-00000000"):
        open_run(synthetic, "20990101T000000Z-00000000")
    with pytest.raises(RunNotFound, match="expected the form"):
        open_run(synthetic, "../../etc")
    empty = make_small_study(tmp_path / "empty")
    with pytest.raises(RunNotFound, match="no published run yet"):
        open_run(empty.manifest)


def _copy_study(synthetic, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(synthetic.parent, root)
    run_dir = next(p for p in (root / "runs").iterdir() if p.is_dir())
    return root / "data_manifest.yaml", run_dir


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "som_u_matrix.npy").unlink(), "som_u_matrix.npy: not a readable msma run.*no such file"),
        (lambda d: np.save(d / "heatmaps.npy", np.zeros((3, 2, 2, 2), np.float32)), "heatmaps.npy.*shape"),
        (lambda d: (d / "run.json").write_text("{not json"), "run.json: not a readable msma run.*JSON"),
        (lambda d: (d / "roi_scores.parquet").write_bytes(b"garbage"), "roi_scores.parquet.*Parquet"),
        (lambda d: pd.read_parquet(d / "som.parquet").iloc[::-1].to_parquet(d / "som.parquet"),
         "som.parquet.*order of score_norms"),
    ],
    ids=["missing file", "wrong heatmap shape", "corrupt record", "corrupt table", "reordered table"],
)
def test_a_broken_run_is_a_named_error(synthetic, tmp_path, damage, message):
    manifest, run_dir = _copy_study(synthetic, tmp_path)
    damage(run_dir)
    with pytest.raises(RunUnreadable, match=message):
        open_run(manifest)


def test_prototype_members_must_be_run_subjects(synthetic, tmp_path):
    manifest, run_dir = _copy_study(synthetic, tmp_path)
    record = json.loads((run_dir / "run.json").read_text())
    record["som"]["prototypes"]["typical"]["members"].append("sub-NOBODY")
    (run_dir / "run.json").write_text(json.dumps(record))
    with pytest.raises(RunUnreadable, match="members of typical's prototype"):
        open_run(manifest)


def test_som_units_off_the_grid_are_named(synthetic, tmp_path):
    manifest, run_dir = _copy_study(synthetic, tmp_path)
    record = json.loads((run_dir / "run.json").read_text())
    record["som"]["prototypes"]["autism"]["unit"] = [0, 99]
    (run_dir / "run.json").write_text(json.dumps(record))
    with pytest.raises(RunUnreadable, match="autism's prototype unit on the 7 x 9 grid"):
        open_run(manifest)
    table = pd.read_parquet(run_dir / "som.parquet")
    table.loc[3, "bmu_col"] = -1
    table.to_parquet(run_dir / "som.parquet")
    with pytest.raises(RunUnreadable, match="BMUs on the 7 x 9 grid"):
        open_run(manifest)
