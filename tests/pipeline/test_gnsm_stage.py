"""The refresh's GNSM stage (``gnsm:`` block of the manifest) end to end on a tiny study: the norm set ``gnsm``,
its detectors and metrics, ``run.json``, the report, the explorer's reader, and the reuse of the network.

The study has 12 reference train subjects (s00-s11), val s12, test s13 and two patients (s14, s15); the patients'
site C is a level no reference subject holds.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.exploration.subject import detector_label
from analysis.runs import layout
from analysis.runs.reader import open_run
from analysis.study.manifest import load_manifest
from msma.cli import main
from pipeline.refresh import refresh
from tests.conftest import make_small_study

SITES = ["A", "B"] * 7 + ["C", "C"]
BLOCK = {"columns": {"sex": "categorical", "site": "categorical", "age": "numeric"}}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("gnsm") / "study"
    root.mkdir()
    study = make_small_study(root, n_train=12)
    table = study.subjects()
    table["site"] = SITES
    table.loc[table["subject_id"] == "s03", "age"] = ""  # a reference train subject without an age
    study.write_subjects(table)
    study.rewrite(lambda d: d.update(gnsm=BLOCK))
    return study


@pytest.fixture(scope="module")
def gnsm_run(study):
    return refresh(load_manifest(study.manifest), profile="fast", progress=False)


def test_gnsm_norms_are_a_norm_set_the_detectors_score(gnsm_run):
    run_dir, run = gnsm_run.run_dir, gnsm_run.run
    norms = pd.read_parquet(run_dir / layout.GNSM_NORMS.name)
    assert list(norms.columns[:4]) == ["subject_id", "cohort", "split", "role"] and len(norms) == 16
    values = norms[[f"norm_{i:02d}" for i in range(6)]].to_numpy()  # the fast tabular profile: 6 scales
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    scores = pd.read_parquet(run_dir / layout.DETECTOR_SCORES.name)
    for detector in ("gmm", "knn", "flow"):
        assert np.all(np.isfinite(scores[f"gnsm_{detector}"]))
    assert {("gnsm", d, "patients") for d in ("gmm", "knn", "flow")} <= {
        (m["norms"], m["detector"], m["group"]) for m in run["metrics"]}
    metrics = pd.read_parquet(run_dir / layout.DETECTION_METRICS.name)
    assert set(metrics[metrics.norms == "gnsm"].detector) == {"gmm", "knn", "flow"}
    assert (run_dir / layout.GNSM_MODEL.name).is_file()


def test_run_json_records_what_gnsm_fitted(gnsm_run):
    run = gnsm_run.run
    assert list(run) == [section.key for section in layout.RUN_SECTIONS]
    record = run["gnsm"]
    assert record["columns"] == BLOCK["columns"] and record["with_score_norms"] is True
    assert record["categorical"] == ["sex", "site"]
    assert record["continuous"] == ["age", *[f"norm_{i:02d}" for i in range(20)]]
    assert record["levels"]["site"] == ["A", "B", "C"] and record["imputed"] == {"age": 1}
    assert record["fit_on"] == {"train": 12, "val": 1} and record["profile"] == "fast"
    assert record["reused"] is False and 0 < record["steps"] <= 40 and record["stopped"] in {"max_steps",
                                                                                            "early_stopping"}
    assert record["seconds"] >= 0 and "gnsm" in run["timings_s"]
    assert "gnsm" in run["norm_sets"] and run["tables"]["gnsm_norms"] == layout.GNSM_NORMS.name
    assert set(run["detectors"]) == {"msma", "lowrank", "gaussian", "gnsm"}


def test_report_shows_gnsm_detection_rows(study, gnsm_run, capsys):
    assert main(["report", str(study.manifest), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["detection"]["norms"]["gnsm"] == "GNSM"
    entry = data["detection"]["results"]["gnsm"]["gmm"]["patients"]
    assert entry["n_outliers"] == 2 and 0 <= entry["auroc"] <= 1
    assert main(["report", str(study.manifest)]) == 0
    assert "### GNSM: each cohort vs held-out reference test subjects" in capsys.readouterr().out


def test_the_explorer_opens_a_run_with_gnsm(study, gnsm_run):
    from app import create_app

    run = open_run(load_manifest(study.manifest), gnsm_run.run_dir.name)
    assert "gnsm_gmm" in run.detector_scores.columns
    assert detector_label("gnsm_gmm")[0] == "GNSM GMM"
    assert create_app(run).layout is not None


def test_a_second_refresh_reuses_the_network_and_a_changed_block_trains_anew(study, gnsm_run):
    again = refresh(load_manifest(study.manifest), profile="fast", progress=False)
    assert again.run["gnsm"]["reused"] is True and again.run["gnsm"]["key"] == gnsm_run.run["gnsm"]["key"]
    first = pd.read_parquet(gnsm_run.run_dir / layout.GNSM_NORMS.name)
    pd.testing.assert_frame_equal(pd.read_parquet(again.run_dir / layout.GNSM_NORMS.name), first)

    study.rewrite(lambda d: d.update(gnsm={**BLOCK, "with_score_norms": False}))
    try:
        changed = refresh(load_manifest(study.manifest), profile="fast", progress=False).run["gnsm"]
    finally:
        study.rewrite(lambda d: d.update(gnsm=BLOCK))
    assert changed["reused"] is False and changed["key"] != gnsm_run.run["gnsm"]["key"]
    assert changed["continuous"] == ["age"]
