"""Tests of the manifest loader, the study validation and ``msma validate`` on the tiny ``small_study``.

Over 400 lines on purpose: most of it is one catalogue of error cases (each a few-line mutation of the study that
returns the field and file its problem must name), run by the parametrised tests below with the same helpers;
split, the catalogue and the tests that read it would sit in different files.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from analysis.study.errors import ManifestError
from analysis.study.manifest import load_manifest
from analysis.study.validation import validate_study
from msma.cli import main

SHAPE = (7, 8, 9)


def edit(study, change) -> Path:
    """Apply ``change(doc)`` to the manifest as it is now on disk (so edits compose) and write it back."""
    doc = yaml.safe_load(study.manifest.read_text())
    change(doc)
    study.manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return study.manifest


def problems_of(manifest: Path):
    with pytest.raises(ManifestError) as info:
        validate_study(load_manifest(manifest), progress=False)
    assert info.value.problems, "a ManifestError must list its problems"
    return info.value.problems


def assert_named(problems, field: str, file: str) -> None:
    """Some problem's field contains ``field`` and its file contains ``file`` (either may be '')."""
    assert any(field in p.field and file in p.file for p in problems), [str(p) for p in problems]


def subject_image(study, sid: str) -> Path:
    return study.root / "img" / f"{sid}.nii.gz"


def image_data(path: Path) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def template_affine(study) -> np.ndarray:
    return nib.load(study.root / "template.nii.gz").affine


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(np.asarray(data), affine), path)


def set_cell(study, sid: str, column: str, value: str) -> None:
    table = study.subjects()
    table.loc[table["subject_id"] == sid, column] = value
    study.write_subjects(table)


def set_behaviour_cell(study, row: int, column: str, value: str) -> None:
    table = study.behaviour()
    table.loc[row, column] = value
    study.write_behaviour(table)


def outside_copy(study) -> Path:
    """A valid subject-like volume outside the study folder."""
    target = study.root.parent / "outside.nii.gz"
    shutil.copyfile(subject_image(study, "s01"), target)
    return target


# --- error cases: each mutates the study and returns (field needle, file needle) ---------------------------


def unknown_top_key(s):
    edit(s, lambda d: d.update(colour="red"))
    return "colour", "data_manifest.yaml"


def unknown_nested_key(s):
    edit(s, lambda d: d["subjects"].update(colour="red"))
    return "subjects.colour", "data_manifest.yaml"


def unknown_options_key(s):
    edit(s, lambda d: d.update(options={"resample": True}))
    return "options.resample", "data_manifest.yaml"


def missing_top_key(s):
    edit(s, lambda d: d.pop("reference_cohort"))
    return "reference_cohort", "data_manifest.yaml"


def missing_nested_key(s):
    edit(s, lambda d: d["template"].pop("brain_mask"))
    return "template.brain_mask", "data_manifest.yaml"


def missing_template_file(s):
    (s.root / "template.nii.gz").unlink()
    return "template.image", "template.nii.gz"


def missing_subject_file(s):
    subject_image(s, "s02").unlink()
    return "s02", "s02.nii.gz"


def missing_behaviour_file(s):
    (s.root / "behaviour.csv").unlink()
    return "behaviour.table", "behaviour.csv"


def random_bytes_subject(s):
    subject_image(s, "s01").write_bytes(np.random.default_rng(1).bytes(3000))
    return "s01", "s01.nii.gz"


def random_bytes_template(s):
    (s.root / "template.nii.gz").write_bytes(np.random.default_rng(2).bytes(3000))
    return "template.image", "template.nii.gz"


def truncate(path: Path) -> None:
    """Keep the first half of a file's bytes."""
    payload = path.read_bytes()
    path.write_bytes(payload[: len(payload) // 2])


def truncated_subject(s):
    truncate(subject_image(s, "s01"))
    return "s01", "s01.nii.gz"


def truncated_atlas(s):
    truncate(s.root / "atlas.nii.gz")
    return "atlas.image", "atlas.nii.gz"


def shape_differs(s):
    write_nifti(subject_image(s, "s01"), np.ones((7, 8, 8), dtype=np.float32), template_affine(s))
    return "s01", "s01.nii.gz"


def affine_differs(s):
    shifted = template_affine(s).copy()
    shifted[:3, 3] += 6.0
    path = subject_image(s, "s01")
    write_nifti(path, image_data(path), shifted)
    return "s01", "s01.nii.gz"


def set_voxels(study, sid: str, voxels: dict) -> tuple[str, str]:
    """Write ``voxels`` ((i, j, k) -> value) into a subject's image; the (field, file) needles of the problem."""
    path = subject_image(study, sid)
    data = image_data(path)
    for voxel, value in voxels.items():
        data[voxel] = value
    write_nifti(path, data, template_affine(study))
    return sid, f"{sid}.nii.gz"


def nan_voxels(s):
    return set_voxels(s, "s03", {(3, 3, 3): np.nan})


def inf_voxels(s):
    return set_voxels(s, "s03", {(2, 4, 5): np.inf, (2, 4, 6): -np.inf})


def duplicate_ids(s):
    set_cell(s, "s01", "subject_id", "s00")
    return "column subject_id", "subjects.csv"


def empty_cohort(s):
    set_cell(s, "s05", "cohort", "")
    return "column cohort", "subjects.csv"


def reference_absent(s):
    edit(s, lambda d: d.update(reference_cohort="controls"))
    return "reference_cohort", "data_manifest.yaml"


def bad_split(s):
    set_cell(s, "s04", "split", "training")
    return "column split", "subjects.csv"


def too_few_reference_train(s):
    set_cell(s, "s00", "split", "val")
    set_cell(s, "s01", "split", "test")  # 2 typical train subjects left, min_train_subjects is 3
    return "split", "subjects.csv"


def behaviour_unknown_ids(s):
    table = s.behaviour()
    table.loc[len(table)] = ["s99", "1.0", "2"]
    s.write_behaviour(table)
    return "column subject_id", "behaviour.csv"


def behaviour_not_numeric(s):
    set_behaviour_cell(s, 0, "score_a", "high")  # 'n/a' would be a missing value
    return "column score_a", "behaviour.csv"


def unnamed_atlas_label(s):
    path = s.root / "atlas.nii.gz"
    labels = np.asarray(image_data(path), dtype=np.int16)
    labels[4, 5, 6] = 9  # labels.tsv names 1, 2 and 7 only
    write_nifti(path, labels, template_affine(s))
    return "atlas.labels", "labels.tsv"


def dotdot_template(s):
    outside_copy(s)
    edit(s, lambda d: d["template"].update(image="../outside.nii.gz"))
    return "template.image", "data_manifest.yaml"


def dotdot_subject(s):
    outside_copy(s)
    set_cell(s, "s01", "t1", "../outside.nii.gz")
    return "column t1", "subjects.csv"


def symlink_template(s):
    os.symlink(outside_copy(s), s.root / "linked.nii.gz")
    edit(s, lambda d: d["template"].update(image="linked.nii.gz"))
    return "template.image", "data_manifest.yaml"


def symlink_subject(s):
    target = outside_copy(s)
    subject_image(s, "s01").unlink()
    os.symlink(target, subject_image(s, "s01"))
    return "s01", "subjects.csv"


def empty_manifest(s):
    s.manifest.write_text("")
    return "", "data_manifest.yaml"


def empty_subjects(s):
    (s.root / "subjects.csv").write_bytes(b"")
    return "subjects.table", "subjects.csv"


def empty_nifti(s):
    subject_image(s, "s01").write_bytes(b"")
    return "s01", "s01.nii.gz"


def empty_template_nifti(s):
    (s.root / "template.nii.gz").write_bytes(b"")
    return "template.image", "template.nii.gz"


CASES = [
    unknown_top_key,
    unknown_nested_key,
    unknown_options_key,
    missing_top_key,
    missing_nested_key,
    missing_template_file,
    missing_subject_file,
    missing_behaviour_file,
    random_bytes_subject,
    random_bytes_template,
    truncated_subject,
    truncated_atlas,
    shape_differs,
    affine_differs,
    nan_voxels,
    inf_voxels,
    duplicate_ids,
    empty_cohort,
    reference_absent,
    bad_split,
    too_few_reference_train,
    behaviour_unknown_ids,
    behaviour_not_numeric,
    unnamed_atlas_label,
    dotdot_template,
    dotdot_subject,
    symlink_template,
    symlink_subject,
    empty_manifest,
    empty_subjects,
    empty_nifti,
    empty_template_nifti,
]

CLI_CASES = [
    unknown_nested_key,
    missing_top_key,
    missing_subject_file,
    truncated_subject,
    nan_voxels,
    duplicate_ids,
    bad_split,
    behaviour_not_numeric,
    symlink_subject,
    empty_manifest,
    empty_subjects,
]


# --- happy path ---------------------------------------------------------------------------------------------


def test_valid_study_summary(small_study):
    study = validate_study(load_manifest(small_study.manifest), progress=False)
    text = study.summary()
    assert "7x8x9" in text
    assert "3 labels on the grid" in text
    assert "typical" in text and "patients" in text
    assert "score_a" in text and "score_b" in text
    assert len(study.subjects) == 8 and study.n_reference_train == 4
    assert study.grid.shape == SHAPE


def test_paths_resolve_against_manifest_folder(small_study, tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    manifest = load_manifest(Path("..") / "study" / "data_manifest.yaml")
    root = small_study.root.resolve()
    assert manifest.root == root and manifest.path == root / "data_manifest.yaml"
    paths = (manifest.template.image, manifest.atlas.labels, manifest.subjects.table, manifest.output_dir)
    for path in paths:
        assert path.is_absolute() and path.parent == root
    assert manifest.template.image == root / "template.nii.gz"
    assert manifest.behaviour.table == root / "behaviour.csv"
    validate_study(manifest, progress=False)  # subject paths in the table resolve against the study too


def test_manifest_is_frozen(small_study):
    manifest = load_manifest(small_study.manifest)
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.study_name = "other"
    with pytest.raises(dataclasses.FrozenInstanceError):
        manifest.model.min_train_subjects = 1
    with pytest.raises(TypeError):
        manifest.subjects.images["T2w"] = "t2"


def test_cli_validate_ok(small_study, capsys):
    assert main(["validate", str(small_study.manifest), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "7x8x9" in out and "valid: 8 subjects" in out


# --- error cases --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__)
def test_error_case(small_study, case):
    field, file = case(small_study)
    assert_named(problems_of(small_study.manifest), field, file)


@pytest.mark.parametrize("column", ["cohort", "subject_id"])
def test_blank_cell_of_spaces_counts_as_empty(small_study, column):
    set_cell(small_study, "s05", column, "   ")
    assert_named(problems_of(small_study.manifest), f"column {column}", "subjects.csv")


def test_cohort_names_are_stripped(small_study):
    set_cell(small_study, "s00", "cohort", "typical ")
    study = validate_study(load_manifest(small_study.manifest), progress=False)
    assert study.n_reference_train == 4


def test_infinite_behaviour_score_is_rejected(small_study):
    set_behaviour_cell(small_study, 0, "score_a", "inf")
    assert_named(problems_of(small_study.manifest), "column score_a", "behaviour.csv")


def test_boolean_version_is_rejected(small_study):
    small_study.rewrite(lambda d: d.update(version=True))
    assert_named(problems_of(small_study.manifest), "version", "data_manifest.yaml")


@pytest.mark.parametrize("case", CLI_CASES, ids=lambda c: c.__name__)
def test_cli_reports_error(small_study, case, capsys):
    field, file = case(small_study)
    assert main(["validate", str(small_study.manifest), "--quiet"]) == 1
    captured = capsys.readouterr()
    assert field in captured.err and file in captured.err
    assert "valid:" not in captured.out


def test_resample_to_template_accepts_shifted_affine(small_study):
    affine_differs(small_study)
    edit(small_study, lambda d: d.update(options={"resample_to_template": True}))
    study = validate_study(load_manifest(small_study.manifest), progress=False)
    assert len(study.subjects) == 8


@pytest.mark.parametrize(
    "case", [dotdot_template, dotdot_subject, symlink_template, symlink_subject], ids=lambda c: c.__name__
)
def test_allow_paths_outside_accepts_outside_paths(small_study, case):
    case(small_study)
    edit(small_study, lambda d: d.update(options={"allow_paths_outside": True}))
    validate_study(load_manifest(small_study.manifest), progress=False)


# --- all problems at once; read-only ------------------------------------------------------------------------


def test_all_problems_reported_at_once(small_study):
    nan_voxels(small_study)
    behaviour_not_numeric(small_study)
    problems = problems_of(small_study.manifest)
    assert len(problems) >= 2
    assert_named(problems, "s03", "s03.nii.gz")
    assert_named(problems, "column score_a", "behaviour.csv")


def test_manifest_problems_reported_at_once(small_study):
    edit(small_study, lambda d: (d["subjects"].update(colour="red"), d.pop("output_dir")))
    problems = problems_of(small_study.manifest)
    assert len(problems) == 2
    assert_named(problems, "subjects.colour", "")
    assert_named(problems, "output_dir", "")


def tree_digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        digest.update(str(path.relative_to(root)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("case", [truncated_subject, nan_voxels, affine_differs], ids=lambda c: c.__name__)
def test_validation_is_read_only(small_study, case, capsys):
    case(small_study)
    behaviour_not_numeric(small_study)
    edit(small_study, lambda d: d.update(options={"resample_to_template": True}))
    before = tree_digest(small_study.root.parent)
    with pytest.raises(ManifestError):
        validate_study(load_manifest(small_study.manifest), progress=False)
    assert main(["validate", str(small_study.manifest), "--quiet"]) == 1
    assert tree_digest(small_study.root.parent) == before


def test_long_problem_lists_are_summarised():
    from analysis.study.errors import Problem

    error = ManifestError([Problem("f.csv", f"row {i}", "x", "y") for i in range(60)])
    assert len(error.problems) == 60
    text = str(error)
    assert text.startswith("60 problems") and "row 49" in text and "row 50:" not in text
    assert "and 10 more" in text


def test_parquet_subjects_table_with_numbers_reads_like_csv(small_study):
    table = small_study.subjects()
    table["age"] = table["age"].astype(float)
    table.to_parquet(small_study.root / "subjects.parquet")
    small_study.rewrite(lambda d: d["subjects"].update(table="subjects.parquet"))
    study = validate_study(load_manifest(small_study.manifest), progress=False)
    assert study.subjects["age"].tolist() == table["age"].tolist()
    table["split"] = 1
    table.to_parquet(small_study.root / "subjects.parquet")
    assert_named(problems_of(small_study.manifest), "column split", "subjects.parquet")


def test_repeated_yaml_key_is_rejected(small_study):
    text = small_study.manifest.read_text() + "reference_cohort: patients\n"
    small_study.manifest.write_text(text)
    with pytest.raises(ManifestError) as info:
        load_manifest(small_study.manifest)
    assert "appears twice" in str(info.value) and "reference_cohort" in str(info.value)


def test_unknown_sex_value_is_rejected(small_study):
    set_cell(small_study, "s02", "sex", "x")
    assert_named(problems_of(small_study.manifest), "column sex", "subjects.csv")
    set_cell(small_study, "s02", "sex", "female")
    study = validate_study(load_manifest(small_study.manifest), progress=False)
    assert study.subjects.loc["s02", "sex"] == "F"


def test_only_the_reference_cohort_trains(small_study):
    set_cell(small_study, "s06", "split", "train")
    assert_named(problems_of(small_study.manifest), "(s06), column split", "subjects.csv")


def test_behaviour_row_without_id_is_rejected(small_study):
    set_behaviour_cell(small_study, 0, "subject_id", "")
    assert_named(problems_of(small_study.manifest), "row 2, column subject_id", "behaviour.csv")


def test_folder_instead_of_image_is_named(small_study):
    (small_study.root / "img" / "folder.nii.gz").mkdir()
    set_cell(small_study, "s03", "t1", "img/folder.nii.gz")
    problems = problems_of(small_study.manifest)
    assert any("folder" in p.found for p in problems), [str(p) for p in problems]


def test_affine_tolerance_is_absolute(small_study):
    path = subject_image(small_study, "s01")
    affine = template_affine(small_study).copy()
    affine[1, 3] += 0.002  # 2 micrometres: within numpy's default relative tolerance, beyond 0.001 mm
    write_nifti(path, image_data(path), affine)
    assert_named(problems_of(small_study.manifest), "s01", "s01.nii.gz")


def test_readme_example_manifest_is_a_valid_manifest(tmp_path):
    """The schema example in the README parses (its files are not there: only the structure is checked)."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme.split("## Your own data", 1)[1]
    example = section.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "data_manifest.yaml").write_text(example)
    manifest = load_manifest(tmp_path / "data_manifest.yaml")
    assert manifest.behaviour.scores == ("cbcl_withdrawn_depressed", "das_recall_of_designs")
    assert manifest.subjects.images == {"T1w": "t1_path"} and manifest.demo is None
    assert manifest.gnsm.columns == {"sex": "categorical", "site": "categorical", "age": "numeric"}
