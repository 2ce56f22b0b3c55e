"""Every method's maps through the protocol and their summary (analysis.lesions.evaluation)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from analysis import lesions
from analysis.study.manifest import load_manifest
from analysis.study.validation import validate_study
from analysis.study.volumes import load_volume
from tests.conftest import make_small_study

# ------------------------------------------------------------------------------------------------------ summary


def test_summarise_against_numpy_and_scipy():
    rng = np.random.default_rng(5)
    table = pd.DataFrame(
        {
            "method": np.repeat(["msma", "spatial", "gnsm"], 7),
            "site": np.tile(["a", "b"], 11)[:21],
            "hd99": rng.gamma(3, 5, 21),
            "msd": rng.gamma(2, 2, 21),
            "tpr": rng.random(21),
            "ppv": rng.random(21),
        }
    )
    table.loc[[0, 3], "ppv"] = np.nan  # msma: 5 non-NaN PPVs
    summary = lesions.summarise(table, "method")
    assert list(summary["method"]) == ["gnsm", "msma", "spatial"]
    assert list(summary["n_subjects"]) == [7, 7, 7]
    for _, row in summary.iterrows():
        group = table[table["method"] == row["method"]]
        for metric in lesions.METRICS:
            values = group[metric].to_numpy()
            assert row[f"{metric}_mean"] == pytest.approx(np.nanmean(values))
            assert row[f"{metric}_se"] == pytest.approx(stats.sem(values, nan_policy="omit"))
    assert summary.loc[summary["method"] == "msma", "ppv_se"].item() == pytest.approx(
        np.std(table["ppv"][[1, 2, 4, 5, 6]], ddof=1) / np.sqrt(5)
    )

    by_two = lesions.summarise(table, ["method", "site"])
    assert len(by_two) == 6 and by_two["n_subjects"].sum() == 21
    assert list(by_two.columns[:3]) == ["method", "site", "n_subjects"]
    single = lesions.summarise(table.iloc[:1], "method")
    assert single["n_subjects"].item() == 1 and np.isnan(single["hd99_se"].item())
    with pytest.raises(ValueError, match="msd"):
        lesions.summarise(table.drop(columns="msd"), "method")


def test_evaluate_methods_runs_every_map_through_evaluate_map_in_parallel():
    rng = np.random.default_rng(11)
    brain = np.zeros((10, 11, 9), dtype=bool)
    brain[1:9, 1:10, 1:8] = True
    truths, maps = [], {"a": [], "b": []}
    for _ in range(3):
        gt = np.zeros(brain.shape, dtype=bool)
        start = rng.integers(2, 5, 3)
        gt[start[0] : start[0] + 2, start[1] : start[1] + 3, start[2] : start[2] + 2] = True
        truths.append(gt)
        maps["a"].append((gt + 0.3 * rng.random(brain.shape))[brain])
        maps["b"].append(rng.random(brain.shape)[brain])
    maps = {k: np.stack(v) for k, v in maps.items()}
    args = (maps, pd.Series(["g1", "g1", "g2"], index=["x", "y", "z"]), truths, brain, (2.0, 2.0, 3.0))
    serial = lesions.evaluate_methods(*args)
    parallel = lesions.evaluate_methods(*args, n_jobs=2)
    pd.testing.assert_frame_equal(serial, parallel)
    assert list(serial["method"]) == ["a", "b"] * 3 and list(serial["subject_id"]) == ["x", "x", "y", "y", "z", "z"]
    for _, row in serial.iterrows():
        k = ["x", "y", "z"].index(row["subject_id"])
        volume = np.full(brain.shape, np.nan)
        volume[brain] = maps[row["method"]][k]
        expected = lesions.evaluate_map(volume, truths[k], brain, (2.0, 2.0, 3.0))
        assert row["msd"] == pytest.approx(expected["msd"])
        assert row["ppv"] == pytest.approx(expected["ppv"], nan_ok=True)
    assert serial.loc[serial["method"] == "a", "tpr"].eq(1.0).all()
    with pytest.raises(ValueError, match="expected shape"):
        lesions.evaluate_methods({"a": maps["a"][:2]}, pd.Series(["g"] * 3, index=["x", "y", "z"]), truths, brain,
                                 (2.0, 2.0, 3.0))


def test_a_map_the_protocol_cannot_threshold_gets_nan_metrics_and_a_note():
    brain = np.zeros((8, 8, 8), dtype=bool)
    brain[1:7, 1:7, 1:7] = True
    gt = np.zeros(brain.shape, dtype=bool)
    gt[3:5, 3:5, 3:5] = True
    maps = {"constant": np.ones((1, int(brain.sum()))), "good": gt[brain][None].astype(float)}
    table = lesions.evaluate_methods(maps, pd.Series(["g"], index=["s"]), [gt], brain, (1.0, 1.0, 1.0))
    constant = table[table["method"] == "constant"].iloc[0]
    assert np.isnan(constant[list(lesions.METRICS)].astype(float)).all() and "empty segmentation" in constant["note"]
    good = table[table["method"] == "good"].iloc[0]
    assert good["tpr"] == 1.0 and pd.isna(good["note"])




def test_evaluate_study_lesions_reads_the_studys_masks_and_equals_evaluate_methods(tmp_path):
    """The one entry point of the refresh, msma evaluate-lesions and the experiments."""
    study = validate_study(load_manifest(make_small_study(tmp_path / "study", with_lesions=True).manifest),
                           progress=False)
    mask, n = study.brain_mask, len(study.lesions)
    truth = [load_volume(path, study.grid) > 0 for path in study.lesions["mask"]]
    rng = np.random.default_rng(5)
    maps = {"truth_plus_noise": np.stack([t[mask] + 0.2 * rng.random(int(mask.sum())) for t in truth]),
            "constant": np.ones((n, int(mask.sum())))}
    evaluation = lesions.evaluate_study_lesions(study, maps)
    expected = lesions.evaluate_methods(maps, study.lesions["group"], truth, mask, study.grid.voxel_size)
    pd.testing.assert_frame_equal(evaluation.per_subject, expected)
    pd.testing.assert_frame_equal(evaluation.summary, lesions.summarise(expected, ["group", "method"]))
    assert list(evaluation.per_subject["subject_id"].unique()) == list(study.lesions.index)
    assert set(evaluation.failed["method"]) == {"constant"} and len(evaluation.failed) == n
    good = evaluation.per_subject[evaluation.per_subject["method"] == "truth_plus_noise"]
    assert good["tpr"].eq(1.0).all()
    with pytest.raises(ValueError, match="no lesions: table"):
        lesions.evaluate_study_lesions(validate_study(load_manifest(make_small_study(tmp_path / "plain").manifest),
                                                      progress=False), maps)
