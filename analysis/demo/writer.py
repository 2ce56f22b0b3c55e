"""Writing the demo study: the cohort's volumes and tables, its ground truth, and the manifest that describes it.

A cohort is built in a temporary sibling folder and swapped in whole, and stamped with the digest of its settings
(``demo_config.json``), so ``msma demo`` can tell a current cohort from a stale or foreign folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from tqdm.auto import tqdm

from analysis.demo.behaviour import PLANTED_BEHAVIOUR, SCORE_COLUMNS, behaviour_table
from analysis.demo.config import GENERATOR_VERSION, PRESETS, DemoConfig, Effects
from analysis.demo.plan import PLANTED_REGIONS, REFERENCE, lesion_kind, plan_cohort
from analysis.demo.simulator import DemoSimulator
from analysis.study.reference_space import ReferenceSpace
from analysis.study.volumes import atomic_write_bytes, save_volume, swap_in_folder


def _write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def build_demo_cohort(config: DemoConfig, folder: str | os.PathLike, *, progress: bool = True) -> dict:
    """Generate the whole demo study into ``folder`` and return its ground truth.

    The cohort is written into a temporary sibling folder and swapped in at the end, so an interrupted build
    leaves the previous cohort (if any) in place. Layout::

        folder/template/mni152_t1.nii.gz, folder/template/brain_mask.nii.gz
        folder/atlas/aal.nii.gz, folder/atlas/aal_labels.tsv
        folder/images/<subject>_T1w.nii.gz
        folder/subjects.csv, folder/behaviour.csv, folder/lesions.csv
        folder/ground_truth.json, folder/ground_truth/lesions/<subject>_lesion_mask.nii.gz
        folder/demo_config.json
    """
    folder = Path(folder)
    if folder.exists() and not (folder / "demo_config.json").is_file() and any(folder.iterdir()):
        raise FileExistsError(
            f"{folder} exists and was not built by msma demo (it has no demo_config.json); refusing to replace "
            "it. Point demo.folder at a new folder, or remove this one."
        )
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.building-", dir=folder.parent))
    try:
        truth = _build_into(config, staging, progress=progress)
        swap_in_folder(staging, folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return truth


def _build_into(config: DemoConfig, out: Path, *, progress: bool) -> dict:
    space = ReferenceSpace(config.voxel_size_mm)
    grid = space.grid
    save_volume(out / "template" / "mni152_t1.nii.gz", space.template, grid)
    save_volume(out / "template" / "brain_mask.nii.gz", space.brain_mask.astype(np.uint8), grid, dtype=np.uint8)
    save_volume(out / "atlas" / "aal.nii.gz", space.atlas, grid, dtype=np.int16)
    space.label_names.to_csv(out / "atlas" / "aal_labels.tsv", sep="\t", index=False)

    plans = plan_cohort(config)
    simulator = DemoSimulator(space, config)
    rows, lesion_truth, per_subject = [], [], {}
    for plan in tqdm(plans, desc="simulating demo subjects", unit="subject", disable=not progress):
        subject = simulator.simulate(plan)
        image_path = f"images/{plan.subject_id}_T1w.nii.gz"
        save_volume(out / image_path, subject.image, grid)
        rows.append(
            {
                "subject_id": plan.subject_id,
                "cohort": plan.cohort,
                "split": plan.split,
                "sex": plan.sex,
                "age": plan.age,
                "icv_ml": round(subject.icv_ml, 1),
                "t1_path": f"{config.folder}/{image_path}",
            }
        )
        per_subject[plan.subject_id] = {
            "phenotype": plan.phenotype.label,
            "regions": {k: [round(v[0], 4), round(v[1], 4)] for k, v in plan.phenotype.regions.items()},
            "severity": {k: round(v, 4) for k, v in plan.phenotype.severity.items()},
            "brain_volume_ml": round(subject.brain_volume_ml, 2),
        }
        if subject.lesion_mask is not None:
            mask_path = f"ground_truth/lesions/{plan.subject_id}_lesion_mask.nii.gz"
            save_volume(out / mask_path, subject.lesion_mask.astype(np.uint8), grid, dtype=np.uint8)
            lesion_truth.append(
                {
                    "subject_id": plan.subject_id,
                    "mask": f"{config.folder}/{mask_path}",
                    "intensity": plan.lesion_intensity,
                    "kind": lesion_kind(plan.lesion_intensity, config.effects.lesion_intensities),
                    "lesions": subject.lesions,
                }
            )
    pd.DataFrame(rows).to_csv(out / "subjects.csv", index=False)
    pd.DataFrame(
        [{"subject_id": t["subject_id"], "mask": t["mask"], "group": t["kind"]} for t in lesion_truth],
        columns=["subject_id", "mask", "group"],
    ).to_csv(out / "lesions.csv", index=False)
    behaviour_table(plans, config).to_csv(out / "behaviour.csv", index=False, float_format="%g")

    on_grid = set(np.unique(space.atlas).tolist()) - {0}
    lost = space.label_names.loc[~space.label_names["index"].isin(on_grid), "name"].tolist()
    subgroup = sorted(p.subject_id for p in plans if p.phenotype.label == "down_syndrome_subgroup")
    truth = {
        "generator_version": GENERATOR_VERSION,
        "config": config.to_dict(),
        "grid": {
            "shape": list(grid.shape),
            "affine": grid.affine.tolist(),
            "voxel_size_mm": config.voxel_size_mm,
        },
        "atlas": {
            "name": "AAL",
            "labels_named": int(len(space.label_names)),
            "labels_on_grid": len(on_grid),
            "labels_lost": lost,
        },
        "reference_cohort": REFERENCE,
        "planted_cohort": "down_syndrome",
        "planted_subgroup": subgroup,
        "planted_subgroup_female": sum(p.sex == "F" for p in plans if p.subject_id in set(subgroup)),
        "planted_regions": {k: list(v) for k, v in PLANTED_REGIONS.items()},
        "planted_behaviour_pairs": [
            {"score": score, "region_group": group, "regions": list(PLANTED_REGIONS[group]), "direction": d}
            for score, group, d in PLANTED_BEHAVIOUR
        ]
        if config.effects.behaviour_loading > 0
        else [],
        "behaviour_noise_scores": [c for c in SCORE_COLUMNS if c not in {s for s, _, _ in PLANTED_BEHAVIOUR}],
        "lesions": lesion_truth,
        "subjects": per_subject,
    }
    _write_text(out / "ground_truth.json", json.dumps(truth, indent=1))
    _write_text(out / "demo_config.json", json.dumps({"digest": config.digest(), **config.to_dict()}, indent=1))
    return truth


def cohort_is_current(config: DemoConfig, folder: str | os.PathLike) -> bool:
    """True when ``folder`` holds a complete cohort built from exactly this configuration."""
    stamp = Path(folder) / "demo_config.json"
    try:
        return json.loads(stamp.read_text()).get("digest") == config.digest()
    except (OSError, ValueError):
        return False


_MANIFEST_TEMPLATE = """\
# The study description read by every msma command (msma validate, msma demo, and the commands that
# train, score and explore). This one describes the embedded demo study that `msma demo` builds into
# {folder_display}/ from the real MNI152 2009 template and AAL atlas. Copy it and edit it to point msma-explorer at
# your own data. Paths are relative to this file's folder; unknown keys are errors.

version: 1                                # schema version of this file

study:
  name: msma-explorer demo                # shown in the app and in run provenance
  description: >-                         # free text, kept in run provenance
    Simulated school-age T1w MRIs: a typical reference cohort and Down-syndrome-like, autism-like,
    atypical and high-risk-typical cohorts, plus typical subjects with white-matter lesions.

template:                                 # defines the study grid: every volume must share its shape and affine
  image: {prefix}template/mni152_t1.nii.gz
  brain_mask: {prefix}template/brain_mask.nii.gz   # non-zero = brain; scores are computed inside it

atlas:                                    # regions for ROI anomaly scores
  name: AAL                               # shown in the app
  image: {prefix}atlas/aal.nii.gz              # integer labels on the template grid, 0 = background
  labels: {prefix}atlas/aal_labels.tsv         # table with columns index, name: every label needs a name

subjects:
  table: {prefix}subjects.csv                  # CSV/TSV/Parquet, one row per subject
  id_column: subject_id                   # unique subject id
  cohort_column: cohort                   # cohort name; the reference cohort is named below
  split_column: split                     # train, val, test or none (only the reference cohort trains)
  sex_column: sex                         # F or M (empty or NA if unknown)
  age_column: age                         # years (empty or NA if unknown)
  covariates: [icv_ml, age, sex]          # adjusted for by the normative model (fitted on the reference cohort):
                                          # a list, or column: numeric | categorical; [] for none; default age, sex
  images:                                 # modality: column holding that image's path
    T1w: t1_path

reference_cohort: typical                 # the typical (inlier) cohort the models learn from

missing_values: []                        # cell values meaning missing in every table (e.g. [-1, -999]), besides
                                          # empty cells and NA, NaN, nan, n/a, N/A; -1 also matches -1.0

behaviour:                                # optional: behavioural scores to correlate with ROI anomaly scores
  table: {prefix}behaviour.csv
  id_column: subject_id                   # ids must appear in the subjects table
  scores: all                             # 'all' columns but the id (each must be numeric), or a list of names

lesions:                                  # optional: ground-truth lesion masks, for msma evaluate-lesions
  table: {prefix}lesions.csv                   # one row per subject with a mask
  id_column: subject_id                   # ids must appear in the subjects table
  mask_column: mask                       # path of a binary mask (0/1) on the template grid
  group_column: group                     # optional: results are reported per group (here faint / bright)

{gnsm_block}
model:
  n_scales: 20                            # noise scales L of the multiscale score norms
  min_train_subjects: {min_train}               # fewest reference training subjects accepted
  seed: 0                                 # seed of training and scoring
  patch_size: 3                           # k of the k x k x k patch score norms behind the heatmaps (odd)

output_dir: runs                          # each refresh writes runs/<run_id>/ and points runs/latest at it

options:
  resample_to_template: false             # true: resample off-grid volumes (trilinear) instead of rejecting them
  allow_paths_outside: false              # true: allow paths leaving this folder (.., absolute, symlinks)

demo:                                     # only for the demo study: what `msma demo` generates
  preset: {preset}                         # planted effects: default, or hard (the weaker phenotype of old releases)
  folder: {folder}                        # where the cohort is written (replaced on every rebuild)
  seed: {seed}                                 # same seed, same cohort, byte for byte
  voxel_size_mm: {voxel_size}                      # 6 mm: 28x32x28 grid; 4 mm: 40x48x40 (about 5x slower to score)
  sizes:                                  # subjects per cohort
    reference_train: {sizes.reference_train}
    reference_val: {sizes.reference_val}
    reference_test: {sizes.reference_test}
    down_syndrome: {sizes.down_syndrome}
    down_syndrome_subgroup: {sizes.down_syndrome_subgroup}            # share one planted regional phenotype
    subgroup_female: {sizes.subgroup_female}                   # of whom female
    autism: {sizes.autism}
    atypical: {sizes.atypical}
    high_risk_typical: {sizes.high_risk_typical}
    lesion: {sizes.lesion}                              # held-out typical subjects with white-matter lesions
  # effects: and variation: override the planted effect sizes and the normal variation; their keys and
  # defaults are listed in the README (section "The demo cohort").
"""


GNSM_BLOCK = """\
gnsm:                                     # optional: GNSM (dissertation ch. 4), a metadata-aware anomaly score
  columns: {sex: categorical, age: numeric, icv_ml: numeric}   # subject-table columns it models
  with_score_norms: true                  # the MSMA score norms join as continuous columns (default true)
                                          # its norms are the norm set gnsm (detectors gnsm_gmm, ...) and an
                                          # optional SOM input in the explorer; missing values are imputed from
                                          # the reference train subjects (mean; most frequent level)
"""
"""The demo's ``gnsm:`` block: GNSM learns sex, age and head size with the score norms (about 20 s per refresh on
2 cores)."""


def render_demo_manifest(config: DemoConfig, prefix: str, *, gnsm: bool = False) -> str:
    """The commented manifest describing a demo cohort built into ``prefix`` (relative to the manifest).

    The top-level ``data_manifest.yaml`` is this text for the default configuration, ``prefix='demo_data/'`` and
    ``gnsm=True``. Non-default effects or variation are written out so the manifest rebuilds the same cohort.
    ``gnsm``: with the :data:`GNSM_BLOCK` (else the block is a comment, and a refresh trains no GNSM network).
    """
    block = GNSM_BLOCK if gnsm else "".join(f"# {line}\n" if line.strip() else "#\n"
                                            for line in GNSM_BLOCK.splitlines())
    text = _MANIFEST_TEMPLATE.format(
        gnsm_block=block,
        prefix=prefix,
        folder=config.folder,
        folder_display=prefix.rstrip("/") or ".",
        seed=config.seed,
        voxel_size=f"{config.voxel_size_mm:g}",
        preset=config.preset,
        sizes=config.sizes,
        min_train=min(100, config.sizes.reference_train),
    )
    if config.sizes.lesion == 0:  # no lesion subjects: the study has no lesions table
        start = text.index("lesions:  ")
        text = text[:start] + text[text.index("\nmodel:", start) + 1 :]
    extra = {}
    for name in ("effects", "variation"):
        base = DemoConfig(effects=dataclasses.replace(Effects(), **PRESETS[config.preset]))
        default = dataclasses.asdict(getattr(base, name))
        changed = {k: v for k, v in dataclasses.asdict(getattr(config, name)).items() if default[k] != v}
        if changed:
            extra[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in changed.items()}
    if extra:
        block = yaml.safe_dump(extra, sort_keys=True, default_flow_style=False)
        text += "".join(f"  {line}\n" for line in block.splitlines())
    return text


def write_demo_study(config: DemoConfig, folder: str | os.PathLike, *, progress: bool = True) -> Path:
    """Build a self-contained demo study in ``folder``: the cohort and a manifest describing it.

    Returns the path of ``folder/data_manifest.yaml``. Used by tests and by ``msma demo --out``.
    """
    folder = Path(folder)
    config = dataclasses.replace(config, folder="data")
    build_demo_cohort(config, folder / config.folder, progress=progress)
    manifest = folder / "data_manifest.yaml"
    _write_text(manifest, render_demo_manifest(config, prefix=f"{config.folder}/"))
    return manifest
