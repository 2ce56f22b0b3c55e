"""The demo cohort: determinism, grid, labels, planted effects, lesions, behaviour, manifest round trip."""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage, stats

from analysis.demo.behaviour import PLANTED_BEHAVIOUR, SCORE_COLUMNS, behaviour_table
from analysis.demo.config import CohortSizes, DemoConfig, demo_config_from_mapping
from analysis.demo.plan import CLINICAL_COHORTS, LESION_COHORT, PLANTED_REGIONS, Phenotype, lesion_kind, plan_cohort
from analysis.demo.simulator import DemoSimulator, achieved_volume_change
from analysis.demo.truth import GROUND_TRUTH_FILE, planted_truth
from analysis.demo.writer import build_demo_cohort, cohort_is_current, render_demo_manifest, write_demo_study
from analysis.study.errors import ManifestError
from analysis.study.manifest import load_manifest
from analysis.study.reference_space import ReferenceSpace, load_aal
from analysis.study.validation import validate_study
from msma.cli import main

REPO = Path(__file__).resolve().parents[3]

SMALL = DemoConfig(
    seed=3,
    sizes=CohortSizes(
        reference_train=5,
        reference_val=2,
        reference_test=2,
        down_syndrome=5,
        down_syndrome_subgroup=3,
        subgroup_female=2,
        autism=2,
        atypical=2,
        high_risk_typical=2,
        lesion=4,
    ),
)


@pytest.fixture(scope="module")
def space6() -> ReferenceSpace:
    return ReferenceSpace(6.0)


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory) -> Path:
    """A small demo study built once for the module; returns its manifest."""
    return write_demo_study(SMALL, tmp_path_factory.mktemp("demo"), progress=False)


def _images(manifest: Path) -> dict[str, np.ndarray]:
    subjects = pd.read_csv(manifest.parent / "data" / "subjects.csv")
    return {r.subject_id: nib.load(manifest.parent / r.t1_path).get_fdata() for r in subjects.itertuples()}


def test_grid_is_cropped_to_the_brain_and_keeps_every_aal_label(space6):
    assert space6.grid.shape == (28, 32, 28)
    np.testing.assert_allclose(np.diag(space6.grid.affine)[:3], 6.0)
    # every brain voxel fits, with the grid no larger than the brain plus padding to a multiple of 4
    assert space6.brain_mask.any()
    assert not space6.brain_mask[[0, -1]].any() and not space6.brain_mask[:, [0, -1]].any()
    _, names = load_aal()
    assert len(names) == 116
    assert set(np.unique(space6.atlas)) - {0} == set(names["index"])


def test_four_mm_grid():
    space = ReferenceSpace(4.0)
    assert space.grid.shape == (40, 48, 40)
    assert len(np.unique(space.atlas)) - 1 == 116


def test_labels_are_resampled_by_nearest_neighbour(space6):
    aal, _ = load_aal()
    world = space6.world
    vox = np.rint(nib.affines.apply_affine(np.linalg.inv(aal.affine), world)).astype(int)
    inside = np.all((vox >= 0) & (vox < np.array(aal.shape)), axis=1)
    expected = np.zeros(len(world), dtype=int)
    expected[inside] = np.asarray(aal.dataobj)[tuple(vox[inside].T)]
    assert np.array_equal(space6.atlas.reshape(-1), expected)


def test_small_demo_validates_and_is_on_the_template_grid(small_demo):
    study = validate_study(load_manifest(small_demo), progress=False)
    assert study.grid.shape == (28, 32, 28)
    assert len(study.subjects) == 5 + 2 + 2 + 5 + 2 + 2 + 2 + 4
    assert set(study.subjects["cohort"]) == {"typical", *CLINICAL_COHORTS, LESION_COHORT}
    assert study.behaviour.shape == (5 + 2 + 2 + 2, 35)
    for path in study.subjects["T1w"]:
        image = nib.load(small_demo.parent / path)
        assert image.shape == study.grid.shape
        np.testing.assert_allclose(image.affine, study.grid.affine)
        assert int(image.header["sform_code"]) == 4


def test_generation_is_deterministic_for_a_seed(small_demo, tmp_path):
    again = write_demo_study(SMALL, tmp_path / "again", progress=False)
    for name in ("subjects.csv", "behaviour.csv", "ground_truth.json", "atlas/aal.nii.gz"):
        assert (small_demo.parent / "data" / name).read_bytes() == (again.parent / "data" / name).read_bytes()
    first, second = _images(small_demo), _images(again)
    assert first.keys() == second.keys()
    for key in first:
        assert np.array_equal(first[key], second[key])
    other = plan_cohort(dataclasses.replace(SMALL, seed=4))
    assert [p.seed for p in other] != [p.seed for p in plan_cohort(SMALL)]


def test_default_plan_matches_the_case_study():
    plans = plan_cohort(DemoConfig())
    by = pd.DataFrame([{"cohort": p.cohort, "split": p.split, "label": p.phenotype.label, "sex": p.sex} for p in plans])
    reference = by[by.cohort == "typical"]
    assert (reference.split == "train").sum() >= 200
    ds = by[by.cohort == "down_syndrome"]
    assert len(ds) == 28
    subgroup = ds[ds.label == "down_syndrome_subgroup"]
    assert len(subgroup) == 16 and (subgroup.sex == "F").sum() == 12
    # the subgroup is not the first 16 ids: membership cannot be read off the ordering
    assert list(ds.label[:16]) != ["down_syndrome_subgroup"] * 16
    assert {"autism", "atypical", "high_risk_typical", "typical_lesion"} <= set(by.cohort)


def _region_fraction(labels: np.ndarray, indices: list[int]) -> float:
    return float(np.isin(labels, indices).sum() / max((labels > 0).sum(), 1))


def test_planted_phenotype_is_present_in_the_volumes(space6):
    """Subgroup members have smaller planted regions (relative to brain size), a smaller brain, and darker
    planted regions; typical subjects do not."""
    config = DemoConfig()
    simulator = DemoSimulator(space6, config)
    plans = plan_cohort(config)
    subgroup = [p for p in plans if p.phenotype.label == "down_syndrome_subgroup"][:10]
    typical = [p for p in plans if p.cohort == "typical"][:10]
    planted = [space6.label_index(n) for names in PLANTED_REGIONS.values() for n in names]
    in_planted = np.isin(space6.atlas, planted) & space6.brain_mask

    def measures(plan):
        s = simulator.simulate(plan)
        relative_intensity = s.image[in_planted].mean() / s.image[space6.brain_mask].mean()
        return _region_fraction(s.warped_labels, planted), s.brain_volume_ml, relative_intensity

    sub = np.array([measures(p) for p in subgroup])
    typ = np.array([measures(p) for p in typical])
    for column in range(3):
        result = stats.mannwhitneyu(sub[:, column], typ[:, column], alternative="less")
        assert result.pvalue < 0.01, column
    # the effect size is about the documented default: -20 % regional volume
    ratio = sub[:, 0].mean() / typ[:, 0].mean()
    assert 0.7 < ratio < 0.92


def test_images_are_in_template_space_with_head_size_kept_as_a_number(space6):
    """As a registered study holds them: brains of very different sizes fill the same template extent, and the
    size is the icv_ml number (the native brain volume seen through a 2 % measurement error). With the whole scale
    left in (registration_residual 1) the smaller brains shrink in the image again."""
    plans = plan_cohort(DemoConfig())
    chosen = ([p for p in plans if p.cohort == "typical" and p.sex == "M"][:6]
              + [p for p in plans if p.phenotype.label == "down_syndrome_subgroup"][:6])

    def extents(config):
        simulator = DemoSimulator(space6, config)
        out = []
        for plan in chosen:
            s = simulator.simulate(plan)
            out.append(((s.image > 0.1 * np.percentile(s.image, 99)).sum(), s.brain_volume_ml, s.icv_ml))
        return np.array(out, dtype=float)

    registered = extents(DemoConfig())
    big, small = registered[:6], registered[6:]
    assert big[:, 1].mean() / small[:, 1].mean() > 1.08  # male typical brains, smaller Down-syndrome-like ones
    assert abs(big[:, 0].mean() / small[:, 0].mean() - 1.0) < 0.03  # ... fill the same template extent
    np.testing.assert_allclose(registered[:, 2], registered[:, 1], rtol=0.08)
    assert np.corrcoef(registered[:, 1], registered[:, 2])[0, 1] > 0.95
    native = extents(DemoConfig(variation=dataclasses.replace(DemoConfig().variation, registration_residual=1.0)))
    assert native[:6, 0].mean() / native[6:, 0].mean() > 1.1
    np.testing.assert_allclose(native[:, 1], registered[:, 1], rtol=0.02)  # the same brains, either way


def test_presets_set_the_planted_effects_and_effects_override_them():
    assert DemoConfig().effects.subgroup_region_intensity_change == -0.10
    hard = demo_config_from_mapping({"preset": "hard"})
    assert hard.effects.subgroup_region_intensity_change == -0.06
    assert hard.effects.subgroup_region_volume_change == -0.20
    mixed = demo_config_from_mapping({"preset": "hard", "effects": {"subgroup_region_intensity_change": -0.2}})
    assert mixed.effects.subgroup_region_intensity_change == -0.2 and mixed.preset == "hard"
    assert hard.digest() != DemoConfig().digest()
    # The rendered manifest of a preset rebuilds the same cohort and writes no redundant effects.
    text = render_demo_manifest(hard, prefix="data/")
    assert "preset: hard" in text and "\n  effects:" not in text


def test_a_demo_without_lesion_subjects_has_no_lesions_table(tmp_path):
    config = demo_config_from_mapping({"sizes": {"reference_train": 6, "reference_val": 2, "reference_test": 2,
                                                 "down_syndrome": 3, "down_syndrome_subgroup": 2,
                                                 "subgroup_female": 1, "autism": 0, "atypical": 0,
                                                 "high_risk_typical": 0, "lesion": 0}})
    manifest = write_demo_study(config, tmp_path / "study", progress=False)
    assert "\nlesions:" not in manifest.read_text()
    study = validate_study(load_manifest(manifest), progress=False, check_voxels=False)
    assert study.lesions is None and "icv_ml" in study.covariate_table


def test_lesions_match_their_ground_truth(small_demo):
    folder = small_demo.parent
    truth = json.loads((folder / "data" / "ground_truth.json").read_text())
    assert len(truth["lesions"]) == 4
    assert {entry["intensity"] for entry in truth["lesions"]} == {1.2, 1.5}
    template = nib.load(folder / "data" / "template" / "mni152_t1.nii.gz").get_fdata()
    subjects = pd.read_csv(folder / "data" / "subjects.csv").set_index("subject_id")
    for entry in truth["lesions"]:
        mask = nib.load(folder / entry["mask"]).get_fdata() > 0
        components, n = ndimage.label(mask, structure=np.ones((3, 3, 3)))
        assert n == len(entry["lesions"]) >= 1
        assert all(lesion["voxels"] >= 3 for lesion in entry["lesions"])
        assert sorted(np.bincount(components.ravel())[1:]) == sorted(x["voxels"] for x in entry["lesions"])
        image = nib.load(folder / subjects.loc[entry["subject_id"], "t1_path"]).get_fdata()
        # lesions are brighter than the same voxels of the template by about their intensity factor
        ratio = np.median(image[mask] / np.maximum(template[mask], 1e-3))
        assert entry["intensity"] - 0.25 < ratio < entry["intensity"] + 0.25


def test_behaviour_scores_follow_the_planted_severity():
    config = DemoConfig()
    plans = plan_cohort(config)
    table = behaviour_table(plans, config).set_index("subject_id")
    assert list(table.columns) == list(SCORE_COLUMNS) and len(SCORE_COLUMNS) == 35
    missing = table.isna().to_numpy().mean()
    assert 0.02 < missing < 0.12
    ds = [p for p in plans if p.cohort == "down_syndrome"]
    planted = {score for score, _, _ in PLANTED_BEHAVIOUR}
    for score, group, direction in PLANTED_BEHAVIOUR:
        severity = pd.Series({p.subject_id: p.phenotype.severity.get(group, 0.0) for p in ds})
        pair = pd.concat([severity, table.loc[severity.index, score]], axis=1).dropna()
        rho = stats.spearmanr(pair.iloc[:, 0], pair.iloc[:, 1]).statistic
        assert direction * rho > 0.5, score
    noise = [c for c in SCORE_COLUMNS if c not in planted]
    severity = pd.Series({p.subject_id: p.phenotype.severity.get("cerebellum", 0.0) for p in ds})
    rhos = [stats.spearmanr(severity, table.loc[severity.index, c], nan_policy="omit").statistic for c in noise]
    assert np.median(np.abs(rhos)) < 0.3


def test_committed_manifest_is_the_rendered_demo_manifest():
    committed = (REPO / "data_manifest.yaml").read_text()
    assert committed == render_demo_manifest(DemoConfig(), "demo_data/", gnsm=True)
    assert demo_config_from_mapping(load_manifest(REPO / "data_manifest.yaml").demo.settings) == DemoConfig()


def test_rendered_manifest_round_trips_non_default_effects(tmp_path):
    config = dataclasses.replace(SMALL, effects=dataclasses.replace(SMALL.effects, subgroup_region_volume_change=-0.3))
    path = tmp_path / "m.yaml"
    path.write_text(render_demo_manifest(config, "data/"))
    assert demo_config_from_mapping(load_manifest(path).demo.settings) == config


def test_unknown_demo_key_is_rejected():
    with pytest.raises(ManifestError) as info:
        demo_config_from_mapping({"sizes": {"reference_trian": 3}})
    assert info.value.problems[0].field == "demo.sizes.reference_trian"
    assert "reference_train" in info.value.problems[0].found


def test_interrupted_build_keeps_the_previous_cohort(small_demo, monkeypatch):
    folder = small_demo.parent / "data"
    before = (folder / "subjects.csv").read_bytes()
    calls = {"n": 0}
    original = DemoSimulator.simulate

    def failing(self, plan):
        calls["n"] += 1
        if calls["n"] > 3:
            raise KeyboardInterrupt
        return original(self, plan)

    monkeypatch.setattr(DemoSimulator, "simulate", failing)
    with pytest.raises(KeyboardInterrupt):
        build_demo_cohort(dataclasses.replace(SMALL, seed=99), folder, progress=False)
    assert (folder / "subjects.csv").read_bytes() == before
    assert cohort_is_current(dataclasses.replace(SMALL, folder="data"), folder)
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".data.")]


def test_cli_demo_builds_validates_refreshes_and_reuses(tmp_path, capsys):
    manifest = tmp_path / "data_manifest.yaml"
    config = dataclasses.replace(SMALL, folder="cohort")
    manifest.write_text(render_demo_manifest(config, "cohort/"))
    fast = ["--no-serve", "--quiet", "--profile", "fast"]
    assert main(["demo", str(manifest), *fast]) == 0
    out = capsys.readouterr().out
    assert "built the demo cohort" in out and "116 of 116 AAL labels" in out and "28x32x28" in out
    assert "down_syndrome (planted subgroup)" in out and "AUROC" in out
    assert (tmp_path / "runs" / "latest").is_file()
    # The known answer is scored with both corrections of the region step.
    assert "planted regions among the prototype's significant ROIs (Bonferroni p < 0.05)" in out
    assert "the same with BH p < 0.05: recall" in out
    assert main(["validate", str(manifest), "--quiet"]) == 0
    assert main(["demo", str(manifest), *fast]) == 0
    out = capsys.readouterr().out
    assert "reusing the demo cohort" in out and "reused checkpoint" in out


@pytest.mark.parametrize(
    ("name", "change"),
    [("Temporal_Mid_L", 0.25), ("Temporal_Mid_L", -0.25), ("Hippocampus_R", 0.25), ("Cerebelum_Crus1_L", -0.28)],
)
def test_regional_volume_changes_match_their_settings(space6, name, change):
    simulator = DemoSimulator(space6, DemoConfig())
    achieved = achieved_volume_change(simulator, name, change, np.random.default_rng(0))
    assert 0.75 * abs(change) < abs(achieved) < 1.1 * abs(change) and np.sign(achieved) == np.sign(change)


def test_regional_deformation_does_not_fold():
    """At the largest default severities, on the finer 4 mm grid, the map keeps a positive Jacobian."""
    space = ReferenceSpace(4.0)
    simulator = DemoSimulator(space, DemoConfig(voxel_size_mm=4.0))
    regions = {n: (-0.2 * 1.4, 0.0) for names in PLANTED_REGIONS.values() for n in names}
    regions |= {n: (0.25 * 1.4, 0.0) for n in ("Insula_L", "Precuneus_R", "Amygdala_L")}
    mapped = simulator.regional_map(space.world, Phenotype("probe", regions)).reshape(*space.grid.shape, 3)
    jacobian = np.stack([np.stack(np.gradient(mapped[..., i], 4.0), axis=-1) for i in range(3)], axis=-2)
    assert np.linalg.det(jacobian)[space.brain_mask].min() > 0.1


@pytest.mark.parametrize(
    ("block", "field"),
    [
        ({"sizes": {"autism": -5}}, "demo.sizes.autism"),
        ({"effects": {"lesion_intensities": []}}, "demo.effects.lesion_intensities"),
        ({"effects": {"heterogeneous_regions": 50}}, "demo.effects.heterogeneous_regions"),
        ({"effects": {"autism_severity_range": [2, 1, 0]}}, "demo.effects.autism_severity_range"),
        ({"effects": {"behaviour_loading": 1.5}}, "demo.effects.behaviour_loading"),
        ({"effects": {"behaviour_missing_fraction": 2}}, "demo.effects.behaviour_missing_fraction"),
        ({"voxel_size_mm": 50}, "demo.voxel_size_mm"),
        ({"seed": "zero"}, "demo.seed"),
        ({"sizez": {}}, "demo.sizez"),
        ({"preset": "easy"}, "demo.preset"),
        ({"variation": {"registration_residual": 1.5}}, "demo.variation.registration_residual"),
    ],
)
def test_bad_demo_settings_are_reported(block, field):
    with pytest.raises(ManifestError) as info:
        demo_config_from_mapping(block)
    assert any(p.field == field for p in info.value.problems), [str(p) for p in info.value.problems]


def test_msma_validate_checks_the_demo_block(tmp_path, capsys):
    manifest = tmp_path / "data_manifest.yaml"
    manifest.write_text((REPO / "data_manifest.yaml").read_text().replace("  seed: 0                 ", "  sed: 0  "))
    assert main(["validate", str(manifest), "--quiet"]) == 1
    assert "demo.sed" in capsys.readouterr().err


@pytest.mark.parametrize("folder", [".", "''", "sub/.."])
def test_demo_folder_may_not_hold_the_manifest(tmp_path, folder):
    manifest = tmp_path / "data_manifest.yaml"
    manifest.write_text(render_demo_manifest(SMALL, "data/").replace("folder: demo_data", f"folder: {folder}"))
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert any(p.field == "demo.folder" for p in info.value.problems)


def test_runs_may_not_live_inside_the_demo_folder(tmp_path):
    manifest = tmp_path / "data_manifest.yaml"
    manifest.write_text(
        render_demo_manifest(SMALL, "data/").replace("output_dir: runs", "output_dir: demo_data/runs")
    )
    with pytest.raises(ManifestError) as info:
        load_manifest(manifest)
    assert any(p.field == "output_dir" for p in info.value.problems)


def test_a_folder_not_built_by_the_demo_is_never_replaced(tmp_path, capsys):
    precious = tmp_path / "demo_data" / "precious.txt"
    precious.parent.mkdir()
    precious.write_text("a user's file")
    manifest = tmp_path / "data_manifest.yaml"
    manifest.write_text(render_demo_manifest(SMALL, "demo_data/"))
    assert main(["demo", str(manifest), "--no-serve", "--quiet"]) == 1
    assert "refusing to replace" in capsys.readouterr().err
    assert precious.read_text() == "a user's file"


def test_lesion_kind_follows_the_configured_intensities():
    assert lesion_kind(1.4, (1.4, 1.6)) == "faint"
    assert lesion_kind(1.6, (1.4, 1.6)) == "bright"
    assert lesion_kind(1.5, (1.4, 1.5, 1.6)) == "x1.5"


def test_the_study_schema_does_not_depend_on_the_demo():
    """The demo reads the study's manifest, never the reverse: no module of analysis/study imports analysis.demo."""
    offenders = []
    for path in (REPO / "analysis" / "study").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            offenders += [f"{path.name}: {n}" for n in names if n == "analysis.demo" or n.startswith("analysis.demo.")]
    assert not offenders


def test_the_demo_hands_its_ground_truth_to_the_refresh_as_a_planted_truth(small_demo):
    """The one way demo knowledge reaches the pipeline: analysis.demo.truth reads what the generator planted."""
    truth = planted_truth(load_manifest(small_demo))
    written = json.loads((small_demo.parent / "data" / GROUND_TRUTH_FILE).read_text())
    assert truth.cohort == written["planted_cohort"] == "down_syndrome"
    assert truth.subgroup == tuple(written["planted_subgroup"]) and truth.subgroup
    assert truth.regions == written["planted_regions"]
    assert truth.behaviour_pairs == written["planted_behaviour_pairs"]
