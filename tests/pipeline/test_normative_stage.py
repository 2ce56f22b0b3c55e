"""The refresh's normative stage end to end: with enough held-out reference subjects, the chain reads ROI scores
adjusted for the study's covariates, and the run, the reader and the report all say so."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from analysis.exploration.normative import NormativeModel
from analysis.runs import layout
from analysis.runs.reader import open_run
from analysis.runs.report import format_report
from analysis.study.manifest import load_manifest
from pipeline.refresh import refresh
from tests.conftest import make_small_study


@pytest.fixture(scope="module")
def adjusted_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("normative") / "study"
    root.mkdir()
    study = make_small_study(root, n_train=6, n_test=9)
    return study, refresh(load_manifest(study.manifest), profile="fast", progress=False)


def test_the_chain_reads_adjusted_scores(adjusted_run):
    study, result = adjusted_run
    run = json.loads((result.run_dir / layout.RECORD.name).read_text())
    assert list(run) == [section.key for section in layout.RUN_SECTIONS]
    written = {p.name + ("/" if p.is_dir() else "") for p in result.run_dir.iterdir()}
    no_lesions = {layout.SWEEP, layout.LESION_MAPS, layout.LESION_EVALUATION, layout.GNSM_NORMS, layout.GNSM_MODEL}
    assert written == {f.name for f in layout.RUN_FILES if f not in no_lesions}  # nor a gnsm: block
    # Age and sex say nothing of this study's noise images: the held-out fit keeps each ROI's mean, and says so.
    assert run["normative"]["design"] == "mean"
    assert any("do not predict the ROI scores of held-out reference subjects" in w for w in run["warnings"])
    normative = run["normative"]
    assert [c["name"] for c in normative["covariates"]] == ["age", "sex"]  # the manifest's defaults
    assert normative["fit_subjects"] == 10 and normative["terms"] == ["intercept"]
    for entry in run["hypotheses"].values():
        assert entry["roi_scores"] == "adjusted"
        assert [row["name"] for row in entry["balance"]] == ["age", "sex"]
        assert entry["power"] is None or entry["power"]["correction"] == "bonferroni"

    # The adjusted table is the normative model's deviations, refitted here from the run's raw scores.
    raw = pd.read_parquet(result.run_dir / layout.ROI_SCORES.name).set_index("subject_id")
    adjusted = pd.read_parquet(result.run_dir / layout.ROI_ADJUSTED.name).set_index("subject_id")
    rois = list(run["spatial"]["roi_scores"]["rois"])
    subjects = pd.read_csv(study.root / "subjects.csv", dtype={"sex": str}).set_index("subject_id")
    covariates = subjects.loc[raw.index, ["age", "sex"]].assign(age=lambda t: t["age"].astype(float))
    fit = [i for i in raw.index if raw.loc[i, "cohort"] == "typical" and raw.loc[i, "role"] != "train"]
    model = NormativeModel({"age": "numeric", "sex": "categorical"}, random_state=run["seed"]).fit(
        raw[rois], covariates, fit)
    np.testing.assert_allclose(adjusted[rois].to_numpy(), model.deviations(raw[rois], covariates).to_numpy(),
                               rtol=1e-6)
    coefficients = pd.read_parquet(result.run_dir / layout.NORMATIVE_MODEL.name)
    assert list(coefficients["roi"]) == rois and "sigma" in coefficients


def test_reader_and_report_offer_both_tables(adjusted_run):
    study, result = adjusted_run
    run = open_run(load_manifest(study.manifest))
    assert run.default_roi_scores == "adjusted" and list(run.roi_tables) == ["adjusted", "raw"]
    assert list(run.roi_adjusted.columns) == list(run.roi_scores.columns)
    text = format_report(result.run_dir)
    assert "ROI scores adjusted for covariates (normative model)" in text
    assert "covariates of the patients prototype against the rest of the cohort:" in text
