"""Shared fixtures: a tiny synthetic study on an odd (7, 8, 9) grid so axis mix-ups fail loudly."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

SHAPE = (7, 8, 9)
AFFINE = np.array([[3.0, 0, 0, -9.0], [0, 3.0, 0, -12.0], [0, 0, 3.0, -10.5], [0, 0, 0, 1]])


def write_nifti(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.asarray(data), affine), path)
    return path


@dataclass
class SmallStudy:
    """A valid study in ``root``; ``manifest_dict`` is what ``data_manifest.yaml`` holds."""

    root: Path
    manifest: Path
    manifest_dict: dict

    def rewrite(self, change) -> Path:
        """Apply ``change(dict)`` to a copy of the manifest and write it; returns the manifest path."""
        doc = yaml.safe_load(yaml.safe_dump(self.manifest_dict))
        change(doc)
        self.manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
        return self.manifest

    def subjects(self) -> pd.DataFrame:
        return pd.read_csv(self.root / "subjects.csv", dtype=str, keep_default_na=False)

    def write_subjects(self, table: pd.DataFrame) -> None:
        table.to_csv(self.root / "subjects.csv", index=False)

    def behaviour(self) -> pd.DataFrame:
        return pd.read_csv(self.root / "behaviour.csv", dtype=str, keep_default_na=False)

    def write_behaviour(self, table: pd.DataFrame) -> None:
        table.to_csv(self.root / "behaviour.csv", index=False)


LESION_BLOCK = (slice(2, 4), slice(2, 4), slice(3, 5))
"""Where the patients of a small study ``with_lesions`` have a bright 2 x 2 x 2 lesion."""


def make_small_study(root: Path, n_train: int = 4, with_lesions: bool = False, n_test: int = 1) -> SmallStudy:
    rng = np.random.default_rng(0)
    mask = np.zeros(SHAPE, dtype=np.uint8)
    mask[1:6, 1:7, 1:8] = 1
    template = rng.random(SHAPE).astype(np.float32) * mask
    atlas = np.zeros(SHAPE, dtype=np.int16)
    atlas[1:3, 1:7, 1:8] = 1
    atlas[3:6, 1:4, 1:8] = 2
    atlas[3:6, 4:7, 1:8] = 7
    write_nifti(root / "template.nii.gz", template)
    write_nifti(root / "mask.nii.gz", mask)
    write_nifti(root / "atlas.nii.gz", atlas)
    pd.DataFrame({"index": [1, 2, 7], "name": ["Left_A", "Right_B", "Mid_C"]}).to_csv(
        root / "labels.tsv", sep="\t", index=False
    )
    splits = ["train"] * n_train + ["val"] + ["test"] * n_test
    rows = [("typical", split) for split in splits] + [("patients", "none"), ("patients", "none")]
    table = []
    for i, (cohort, split) in enumerate(rows):
        sid = f"s{i:02d}"
        image = template + 0.01 * rng.standard_normal(SHAPE).astype(np.float32)
        if with_lesions and cohort == "patients":
            image[LESION_BLOCK] *= 1.5
            lesion = np.zeros(SHAPE, dtype=np.uint8)
            lesion[LESION_BLOCK] = 1
            write_nifti(root / "lesions" / f"{sid}.nii.gz", lesion)
        write_nifti(root / "img" / f"{sid}.nii.gz", image)
        table.append(
            {
                "subject_id": sid,
                "cohort": cohort,
                "split": split,
                "sex": "FM"[i % 2],
                "age": 9 + i % 3,
                "t1": f"img/{sid}.nii.gz",
            }
        )
    pd.DataFrame(table).to_csv(root / "subjects.csv", index=False)
    pd.DataFrame({"subject_id": ["s06", "s07"], "score_a": [1.5, 2.0], "score_b": [3, ""]}).to_csv(
        root / "behaviour.csv", index=False
    )
    doc = {
        "version": 1,
        "study": {"name": "small"},
        "template": {"image": "template.nii.gz", "brain_mask": "mask.nii.gz"},
        "atlas": {"name": "toy", "image": "atlas.nii.gz", "labels": "labels.tsv"},
        "subjects": {"table": "subjects.csv", "images": {"T1w": "t1"}},
        "reference_cohort": "typical",
        "behaviour": {"table": "behaviour.csv", "scores": ["score_a", "score_b"]},
        "model": {"min_train_subjects": 3},
        "output_dir": "runs",
    }
    if with_lesions:
        patients = [row["subject_id"] for row in table if row["cohort"] == "patients"]
        pd.DataFrame(
            {"subject_id": patients, "mask": [f"lesions/{p}.nii.gz" for p in patients], "group": ["faint", "bright"]}
        ).to_csv(root / "lesions.csv", index=False)
        doc["lesions"] = {"table": "lesions.csv", "group_column": "group"}
    manifest = root / "data_manifest.yaml"
    manifest.write_text(yaml.safe_dump(doc, sort_keys=False))
    return SmallStudy(root, manifest, doc)


@pytest.fixture
def small_study(tmp_path: Path) -> SmallStudy:
    root = tmp_path / "study"
    root.mkdir()
    return make_small_study(root)
