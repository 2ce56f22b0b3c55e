"""The known-answer hook: the demo's ground truth enters the refresh only as a PlantedTruth, and the recovery
figures computed from it."""

from __future__ import annotations

from dataclasses import replace

from analysis.demo.truth import planted_truth
from analysis.exploration.recovery import PlantedTruth, prototype_recovery, with_planted_groups
from analysis.study.manifest import load_manifest
from tests.conftest import make_small_study

TRUTH = PlantedTruth(cohort="ds", subgroup=("a", "b", "c"), regions={"g": ["Caudate_L"]}, behaviour_pairs=[])


def test_planted_groups_split_the_cohort_into_the_subgroup_and_the_rest():
    groups = {"ds": ["a", "b", "x", "y"], "asd": ["z"]}
    assert with_planted_groups(groups, None) == groups
    out = with_planted_groups(groups, TRUTH)
    assert out["ds (planted subgroup)"] == ["a", "b"] and out["ds (rest)"] == ["x", "y"]
    assert out["ds"] == groups["ds"] and out["asd"] == ["z"] and len(groups) == 2  # the input is not changed
    assert with_planted_groups({"asd": ["z"]}, TRUTH) == {"asd": ["z"]}


def test_prototype_recovery_is_precision_and_recall_of_the_subgroup():
    prototypes = {"ds": {"members": ["a", "b", "x", "y"]}}
    assert prototype_recovery(prototypes, TRUTH) == {
        "cohort": "ds", "planted": 3, "prototype_size": 4, "precision": 2 / 4, "recall": 2 / 3,
    }
    assert prototype_recovery(prototypes, None) is None
    assert prototype_recovery(prototypes, replace(TRUTH, cohort="asd")) is None
    assert prototype_recovery(prototypes, replace(TRUTH, subgroup=())) is None


def test_only_a_demo_manifest_with_ground_truth_has_a_known_answer(tmp_path):
    study = make_small_study(tmp_path / "study")
    assert planted_truth(load_manifest(study.manifest)) is None  # a study of real data: no demo: block
