"""``msma refresh`` and ``msma report`` end to end on a tiny study, and the atomicity of publishing a run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analysis.runs import layout
from analysis.runs.store import LATEST, RunStore
from analysis.study.manifest import load_manifest
from msma.cli import main
from pipeline.refresh import refresh
from tests.conftest import make_small_study

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("refresh") / "study"
    root.mkdir()
    return make_small_study(root, n_train=12, with_lesions=True)


@pytest.fixture(scope="module")
def first_run(study):
    return refresh(load_manifest(study.manifest), profile="fast", progress=False)


def test_refresh_publishes_a_complete_run(study, first_run):
    store = RunStore(study.root / "runs")
    assert store.latest() == first_run.run_dir
    run = json.loads((first_run.run_dir / "run.json").read_text())
    norms = pd.read_parquet(first_run.run_dir / "score_norms.parquet")
    assert len(norms) == 16 and list(norms.columns[:4]) == ["subject_id", "cohort", "split", "role"]
    values = norms[[f"norm_{i:02d}" for i in range(20)]].to_numpy()
    assert np.all(np.isfinite(values)) and np.all(values > 0)
    scores = pd.read_parquet(first_run.run_dir / "detector_scores.parquet")
    assert {f"{n}_{d}" for n in ("msma", "lowrank", "gaussian") for d in ("gmm", "knn", "flow")} <= set(scores)
    voxel_scores = np.load(first_run.run_dir / "voxel_scores.npy", mmap_mode="r")
    assert voxel_scores.shape == (16, 20, run["brain_voxels"])
    np.testing.assert_allclose(np.linalg.norm(voxel_scores.astype(np.float64), axis=2), values, rtol=2e-3)
    assert run["schedule"]["sigmas"] == sorted(run["schedule"]["sigmas"])
    assert set(run["timings_s"]) >= {"validate", "read_volumes", "train", "score_norms", "detectors"}
    assert run["score_model"]["reused"] is False and run["versions"]["torch"]
    assert {(m["norms"], m["detector"], m["group"]) for m in run["metrics"]} >= {("msma", "gmm", "patients")}


def test_the_run_holds_exactly_the_files_and_sections_of_the_run_layout(first_run):
    """The refresh writes its run with the names of analysis.runs.layout, so the reader and the README's outputs
    table describe what is really there."""
    run = json.loads((first_run.run_dir / layout.RECORD.name).read_text())
    assert list(run) == [section.key for section in layout.RUN_SECTIONS]
    written = {p.name + ("/" if p.is_dir() else "") for p in first_run.run_dir.iterdir()}
    # Too few held-out reference subjects for the normative model: its two files are left out, and the run says so.
    # Without a gnsm: block there is no GNSM network, no GNSM norm set and no gnsm_* detector.
    optional = {layout.SWEEP, layout.ROI_ADJUSTED, layout.NORMATIVE_MODEL, layout.GNSM_NORMS, layout.GNSM_MODEL}
    described = {f.name for f in layout.RUN_FILES if f not in optional}
    assert written == described
    assert run["gnsm"] is None and list(run["norm_sets"]) == ["msma", "lowrank", "gaussian"]
    assert "gnsm_norms" not in run["tables"] and all(m["norms"] != "gnsm" for m in run["metrics"])
    scores = pd.read_parquet(first_run.run_dir / layout.DETECTOR_SCORES.name)
    assert not [c for c in scores.columns if c.startswith("gnsm_")]
    assert run["normative"] is None and any("normative model cannot be fitted" in w for w in run["warnings"])
    assert "recovery" not in run["som"]  # a study without a known answer has nothing to recover


def test_second_refresh_reuses_the_checkpoint_and_gives_the_same_norms(study, first_run):
    second = refresh(load_manifest(study.manifest), profile="fast", progress=False)
    assert second.run_dir != first_run.run_dir
    assert second.run["score_model"]["reused"] is True
    assert second.run["score_passes"]["reused_from_run"] == first_run.run_dir.name
    a = pd.read_parquet(first_run.run_dir / "score_norms.parquet")
    b = pd.read_parquet(second.run_dir / "score_norms.parquet")
    pd.testing.assert_frame_equal(a, b)


def test_a_changed_volume_is_scored_again_with_the_same_model(study, first_run):
    import nibabel as nib

    path = study.root / "img" / "s14.nii.gz"
    saved = path.read_bytes()
    image = nib.load(path)
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj) * 1.5, image.affine), path)
    try:
        run = refresh(load_manifest(study.manifest), profile="fast", progress=False).run
    finally:
        path.write_bytes(saved)
    assert run["score_model"]["reused"] is True  # s14 is not a training subject
    assert run["score_passes"]["reused_from_run"] is None


def test_report_json_prints_the_latest_runs_metrics(study, first_run, capsys):
    assert main(["report", str(study.manifest), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["run_id"] == RunStore(study.root / "runs").latest_id()
    entry = data["detection"]["results"]["msma"]["gmm"]["patients"]
    assert entry["n_outliers"] == 2 and 0 <= entry["auroc"] <= 1
    assert main(["report", str(study.manifest)]) == 0
    assert "AUROC" in capsys.readouterr().out


def test_report_without_a_run_says_so(small_study, capsys):
    assert main(["report", str(small_study.manifest), "--json"]) == 1
    assert "no published run yet" in capsys.readouterr().err


def test_refresh_of_a_broken_study_exits_1_and_keeps_the_last_run(study, first_run, capsys):
    store = RunStore(study.root / "runs")
    before = store.latest_id()
    image = study.root / "img" / "s03.nii.gz"
    saved = image.read_bytes()
    image.write_bytes(b"not a nifti")
    try:
        assert main(["refresh", str(study.manifest), "--profile", "fast", "--quiet"]) == 1
    finally:
        image.write_bytes(saved)
    assert "s03" in capsys.readouterr().err
    assert store.latest_id() == before


def test_killed_refresh_leaves_the_previous_run_published(study, first_run):
    """Kill a refresh (SIGKILL) once it has started writing its run; the published run must be untouched."""
    store = RunStore(study.root / "runs")
    before_id = store.latest_id()
    before_files = sorted(p.relative_to(store.root / before_id) for p in (store.root / before_id).rglob("*"))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-m", "msma.cli", "refresh", str(study.manifest), "--profile", "fast", "--quiet"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not any(store.root.glob(".staging-*/voxel_scores.npy")):
        time.sleep(0.01)
    assert any(store.root.glob(".staging-*")), "the refresh never started writing a run"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert store.latest_id() == before_id
    assert (store.root / LATEST).read_text().strip() == before_id
    after_files = sorted(p.relative_to(store.root / before_id) for p in (store.root / before_id).rglob("*"))
    assert after_files == before_files
    assert all(not p.name.startswith(".staging-") for p in [store.latest()])
    # The next refresh cleans the killed one's staging folder and publishes normally.
    result = refresh(load_manifest(study.manifest), profile="fast", progress=False)
    assert store.latest() == result.run_dir and not any(store.root.glob(".staging-*"))


def test_a_second_refresh_on_the_same_store_is_refused_while_one_runs(study, first_run, capsys):
    store = RunStore(study.root / "runs")
    before = store.latest_id()
    with store.lock():
        assert main(["refresh", str(study.manifest), "--profile", "fast", "--quiet"]) == 1
    assert "another refresh is writing runs here" in capsys.readouterr().err
    assert store.latest_id() == before


def test_too_few_reference_training_subjects_is_a_clear_error(tmp_path, capsys):
    root = tmp_path / "few"
    root.mkdir()
    few = make_small_study(root, n_train=4)
    assert main(["refresh", str(few.manifest), "--profile", "fast", "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "subjects.csv" in err and "at least 5" in err and "'typical'" in err
    assert not (root / "runs" / "latest").exists()


def test_a_study_without_reference_test_subjects_publishes_with_a_warning(tmp_path, capsys):
    root = tmp_path / "notest"
    root.mkdir()
    study = make_small_study(root, n_train=8)
    table = study.subjects()
    table.loc[table["split"] == "test", "split"] = "val"
    study.write_subjects(table)
    assert main(["refresh", str(study.manifest), "--profile", "fast", "--quiet"]) == 0
    assert "warning: the reference cohort 'typical' has no subjects in split 'test'" in capsys.readouterr().out
    assert main(["report", str(study.manifest), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["warnings"]


def test_a_corrupt_run_record_is_reported_not_a_traceback(tmp_path, capsys):
    root = tmp_path / "corrupt"
    root.mkdir()
    study = make_small_study(root, n_train=8)
    assert main(["refresh", str(study.manifest), "--profile", "fast", "--quiet"]) == 0
    capsys.readouterr()
    run_json = RunStore(root / "runs").latest() / "run.json"
    run_json.write_text("{ not json")
    assert main(["report", str(study.manifest)]) == 1
    assert "run.json: not a readable msma run record" in capsys.readouterr().err


def test_a_corrupt_checkpoint_is_retrained_with_a_warning(tmp_path):
    root = tmp_path / "ckpt"
    root.mkdir()
    study = make_small_study(root, n_train=8)
    refresh(load_manifest(study.manifest), profile="fast", progress=False)
    (checkpoint,) = (root / "runs" / "models").glob("score_model-*.pt")
    checkpoint.write_bytes(b"truncated")
    with pytest.warns(UserWarning, match="training a new score model"):
        result = refresh(load_manifest(study.manifest), profile="fast", progress=False)
    assert result.run["score_model"]["reused"] is False


def test_sweep_adds_its_table_to_the_latest_run(study, first_run, capsys):
    assert main(["sweep", str(study.manifest), "--cohort", "patients", "--rows", "2:3", "--cols", "2", "--quiet",
                 "--jobs", "1"]) == 0
    out = capsys.readouterr().out
    assert "3 grids" not in out and "2 grids" in out
    table = pd.read_parquet(RunStore(study.root / "runs").latest() / "sweep_patients.parquet")
    assert list(table.rows) == [2, 3] and all(set(m) <= {"s14", "s15"} for m in table.members)
    assert main(["sweep", str(study.manifest), "--cohort", "nobody", "--quiet"]) == 1
    assert "--cohort: expected one of" in capsys.readouterr().err
    assert main(["sweep", str(study.manifest), "--cohort", "patients", "--rows", "9:3"]) == 2


def test_run_holds_the_som_and_every_cohorts_prototype(study, first_run):
    run_dir = RunStore(study.root / "runs").latest()  # earlier tests' refreshes may have pruned the first run
    run = json.loads((run_dir / "run.json").read_text())
    som = run["som"]
    assert som["grid"] == [7, 9] and set(som["prototypes"]) == {"typical", "patients"}
    bmus = pd.read_parquet(run_dir / "som.parquet")
    patients = bmus[bmus.cohort == "patients"]
    unit = tuple(som["prototypes"]["patients"]["unit"])
    in_unit = patients[(patients.bmu_row == unit[0]) & (patients.bmu_col == unit[1])]
    assert sorted(in_unit.subject_id) == sorted(som["prototypes"]["patients"]["members"])
    assert np.load(run_dir / "som_weights.npy").shape == (7, 9, 20)


def test_run_holds_heatmaps_roi_scores_and_the_lesion_evaluation(study, first_run):
    import nibabel as nib

    from analysis.study.validation import validate_study

    run_dir = RunStore(study.root / "runs").latest()  # earlier tests refresh again and prune old runs
    run = json.loads((run_dir / "run.json").read_text())
    loaded = validate_study(load_manifest(study.manifest), progress=False)
    mask = loaded.brain_mask
    stack = np.load(run_dir / "heatmaps.npy", mmap_mode="r")
    assert stack.shape == (16, *mask.shape) and stack.dtype == np.float32
    assert np.isnan(stack[:, ~mask]).all() and np.isfinite(stack[:, mask]).all()
    files = pd.read_parquet(run_dir / "heatmaps.parquet")
    image = nib.load(run_dir / files["heatmap_file"].iloc[3])
    np.testing.assert_allclose(image.affine, nib.load(study.root / "template.nii.gz").affine)
    np.testing.assert_allclose(np.asarray(image.dataobj)[mask], stack[3][mask], rtol=1e-6)
    assert not (run_dir / ".patch_norms.npy").exists()

    rois = pd.read_parquet(run_dir / "roi_scores.parquet").set_index("subject_id")
    atlas = loaded.atlas_labels
    np.testing.assert_allclose(rois["Right_B"], [np.mean(s[(atlas == 2) & mask]) for s in stack], rtol=1e-5)
    assert list(rois.columns[:3]) == ["cohort", "split", "role"]
    percentiles = pd.read_parquet(run_dir / "roi_percentiles.parquet").set_index("subject_id")
    values = percentiles[["Left_A", "Right_B", "Mid_C"]].to_numpy()
    assert ((values >= 0) & (values <= 100)).all()
    assert run["spatial"]["roi_scores"]["reference_subjects"] == 2  # the reference val and test subjects

    lesions = run["spatial"]["lesions"]
    assert lesions["subjects"] == ["s14", "s15"]
    per_subject = pd.read_parquet(run_dir / "lesion_evaluation.parquet")
    assert len(per_subject) == 2 * 7 and set(per_subject["group"]) == {"faint", "bright"}
    assert set(per_subject["method"]) == set(lesions["methods"])
    maps = np.load(run_dir / "lesion_maps.npy")
    assert maps.shape == (2, 7, int(mask.sum()))
    np.testing.assert_allclose(maps[:, 0], stack[[14, 15]][:, mask], rtol=1e-6)
    assert run["spatial"]["heatmaps"]["voxel_mapping"] == "centre"
    assert {"auroc", "tpr_at_zero_fp", "predicted_fraction"} <= set(per_subject.columns)
    assert {"patch_norms", "spatial_flow", "heatmaps", "lesions"} <= set(run["timings_s"])


def test_evaluate_lesions_and_report_print_table_5_1(study, first_run, capsys):
    assert main(["evaluate-lesions", str(study.manifest), "--json", "--quiet"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["run_id"] == RunStore(study.root / "runs").latest().name
    methods = {row["method"] for row in payload["summary"]}
    assert methods == {
        "spatial_msma", "spatial_msma_min", "z_score", "voxel_magnitude", "patch_magnitude",
        "patch_magnitude_min", "unconditional_flow"
    }
    run = json.loads((RunStore(study.root / "runs").latest() / "run.json").read_text())
    stored = {(r["group"], r["method"]): r for r in run["spatial"]["lesions"]["summary"]}
    for row in payload["summary"]:
        assert row["msd_mean"] == pytest.approx(stored[(row["group"], row["method"])]["msd_mean"])
    assert main(["evaluate-lesions", str(study.manifest), "--quiet", "--dilation", "0"]) == 0
    text = capsys.readouterr().out
    assert "| Spatial-MSMA |" in text and "99-HD (mm)" in text and "'dilation_radius': 0" in text
    assert main(["report", str(study.manifest)]) == 0
    assert "Lesion detection" in capsys.readouterr().out


def test_evaluate_lesions_without_a_lesion_table_is_a_clear_error(small_study, capsys):
    assert main(["evaluate-lesions", str(small_study.manifest), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "lesions" in err and "data_manifest.yaml" in err


def test_run_holds_the_cohort_hypothesis_tables(study, first_run):
    run_dir = RunStore(study.root / "runs").latest()
    run = json.loads((run_dir / "run.json").read_text())
    assert set(run["hypotheses"]) == {"patients"}
    entry = run["hypotheses"]["patients"]
    assert entry["correlations"] is None  # two patients: too few for a correlation
    tests = pd.read_parquet(run_dir / "roi_tests.parquet")
    prototype = run["som"]["prototypes"]["patients"]
    both_sides = 0 < prototype["size"] < prototype["cohort_size"]
    assert len(tests) == (entry["kept_rois"] if both_sides else 0)
    assert tests.empty or set(tests["cohort"]) == {"patients"}
    assert (run_dir / "correlations.parquet").is_file()
    assert "hypotheses" in run["timings_s"]


def test_evaluate_lesions_reports_unusable_lesion_maps_without_a_traceback(study, first_run, capsys):
    maps = RunStore(study.root / "runs").latest() / "lesion_maps.npy"
    saved = maps.read_bytes()
    try:
        np.save(maps, np.zeros((2, 6, 3), dtype=np.float32))  # as if the brain mask had changed since the refresh
        assert main(["evaluate-lesions", str(study.manifest), "--quiet"]) == 1
        err = capsys.readouterr().err
        assert "lesion_maps.npy" in err and "run msma refresh" in err
        maps.write_bytes(b"not an array")
        assert main(["evaluate-lesions", str(study.manifest), "--quiet"]) == 1
        assert "unreadable" in capsys.readouterr().err
    finally:
        maps.write_bytes(saved)
