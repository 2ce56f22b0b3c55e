"""A study with one published run of synthetic subjects, written in the run format without training any model.

For the explorer's tests and for benchmarks at sizes the demo does not reach (``bench/app_latency.py`` at 2,000
subjects): the tables, the SOM and the hypothesis chain are computed by the same functions as in a refresh
(:func:`analysis.exploration.som.fit_cohort_map`, :func:`analysis.exploration.roi_stats.roi_scores`,
:func:`analysis.exploration.cohort_analysis.analyse_cohorts`); only the score norms and the heatmaps are drawn at
random, with a planted subgroup in the ``down_syndrome`` cohort whose heatmaps are raised in three regions and whose
severity one behaviour score follows.

The subjects table names image files that do not exist: the explorer never opens subject images, but ``msma
validate`` and ``msma refresh`` reject such a study.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import yaml
from scipy import ndimage

from analysis.exploration.cohort_analysis import analyse_cohorts, hypothesis_tables
from analysis.exploration.normative import NormativeModel
from analysis.exploration.prototypes import add_subgroups, chain_selections
from analysis.exploration.roi_stats import percentile_of_reference, percentile_reference, roi_columns, roi_scores
from analysis.exploration.som import fit_cohort_map
from analysis.runs import layout
from analysis.runs.store import RunStore, new_run_id, write_json, write_table
from analysis.study.manifest import Manifest
from analysis.study.volumes import Grid, save_volume

COHORT_SHARES = {
    "typical": 320,
    "down_syndrome": 28,
    "autism": 40,
    "atypical": 20,
    "high_risk_typical": 40,
    "typical_lesion": 40,
}
"""The demo's cohort sizes (488 subjects); a synthetic study of n subjects keeps their proportions."""

PREFIXES = {"typical": "TYP", "down_syndrome": "DS", "autism": "ASD", "atypical": "ATY", "high_risk_typical": "HRT",
            "typical_lesion": "LES"}
REFERENCE = "typical"
PLANTED_COHORT = "down_syndrome"
SUBGROUP_SHARE = 16 / 28
SYNTHETIC_COVARIATES = {"age": "numeric", "sex": "categorical"}
TOY_REGIONS = ["Frontal_L", "Frontal_R", "Parietal_L", "Parietal_R", "Temporal_L", "Temporal_R", "Occipital_L",
               "Occipital_R"]


def cohort_sizes(n_subjects: int) -> dict[str, int]:
    """The demo's proportions scaled to ``n_subjects`` (at least 12 reference and 3 per other cohort)."""
    total = sum(COHORT_SHARES.values())
    sizes = {c: max(3, round(n_subjects * k / total)) for c, k in COHORT_SHARES.items()}
    sizes[REFERENCE] = max(12, n_subjects - sum(v for c, v in sizes.items() if c != REFERENCE))
    return sizes


def write_synthetic_study(
    folder: str | Path,
    n_subjects: int = 488,
    *,
    grid_from: Manifest | None = None,
    sizes: dict[str, int] | None = None,
    n_scores: int = 35,
    n_scales: int = 20,
    planted_regions: int = 40,
    seed: int = 0,
) -> Path:
    """Write a study (template, atlas, subjects and behaviour tables, manifest) and one published run into
    ``folder``; returns the manifest's path.

    Parameters
    ----------
    grid_from
        Copy this study's template, brain mask and atlas (e.g. the demo's real MNI152 and AAL on its 6 mm grid);
        default: a toy ellipsoid brain of eight regions on a 20 x 24 x 18 grid of 6 mm voxels.
    sizes
        Subjects per cohort; default :func:`cohort_sizes` of ``n_subjects``.
    planted_regions
        Regions raised in the planted subgroup's heatmaps (at most all but one of the atlas's regions): 40, the
        dissertation's count of significant ROIs, makes the explorer's live chain as heavy as in ch. 6.3.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    grid, mask, labels, names = _grid(folder, grid_from)
    subjects = _subjects(sizes or cohort_sizes(n_subjects), rng)
    severity = pd.Series(0.0, index=subjects.index)
    in_cohort = subjects.index[subjects["cohort"] == PLANTED_COHORT]
    subgroup = in_cohort[: max(1, round(SUBGROUP_SHARE * len(in_cohort)))]
    severity[subgroup] = rng.uniform(0.6, 1.4, len(subgroup))
    behaviour = _behaviour(subjects, severity, n_scores, rng)
    subjects.to_csv(folder / "subjects.csv")
    behaviour.to_csv(folder / "behaviour.csv")
    n_train = int((subjects["split"] == "train").sum())
    manifest = {
        "version": 1,
        "study": {"name": f"synthetic study ({len(subjects)} subjects)",
                  "description": "synthetic score norms and heatmaps for tests and benchmarks of the explorer"},
        "template": {"image": "template/template.nii.gz", "brain_mask": "template/brain_mask.nii.gz"},
        "atlas": {"name": "AAL" if grid_from is not None else "toy lobes", "image": "atlas/atlas.nii.gz",
                  "labels": "atlas/labels.tsv"},
        "subjects": {"table": "subjects.csv", "images": {"T1w": "t1_path"}},
        "reference_cohort": REFERENCE,
        "behaviour": {"table": "behaviour.csv", "scores": "all"},
        "model": {"n_scales": n_scales, "min_train_subjects": max(1, n_train), "seed": seed},
        "output_dir": "runs",
    }
    path = folder / "data_manifest.yaml"
    path.write_text(yaml.safe_dump(manifest, sort_keys=False))
    _write_run(folder / "runs", _Cohort(subjects, behaviour, severity), _Space(grid, mask, labels, names), n_scales,
               planted_regions, seed, rng)
    return path


def _grid(folder: Path, grid_from: Manifest | None):
    (folder / "template").mkdir(exist_ok=True)
    (folder / "atlas").mkdir(exist_ok=True)
    if grid_from is not None:
        shutil.copyfile(grid_from.template.image, folder / "template" / "template.nii.gz")
        shutil.copyfile(grid_from.template.brain_mask, folder / "template" / "brain_mask.nii.gz")
        shutil.copyfile(grid_from.atlas.image, folder / "atlas" / "atlas.nii.gz")
        shutil.copyfile(grid_from.atlas.labels, folder / "atlas" / "labels.tsv")
        image = nib.load(folder / "template" / "brain_mask.nii.gz")
        grid = Grid.of(image)
        mask = np.asarray(image.dataobj) > 0
        labels = np.asarray(nib.load(folder / "atlas" / "atlas.nii.gz").dataobj).astype(np.int32)
        names = pd.read_csv(folder / "atlas" / "labels.tsv", sep="\t")
        return grid, mask, labels, names
    shape = (20, 24, 18)
    affine = np.diag([6.0, 6.0, 6.0, 1.0])
    affine[:3, 3] = [-57.0, -90.0, -48.0]
    grid = Grid(shape, affine)
    i, j, k = np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij")
    radius = i**2 + j**2 + k**2
    mask = radius < 0.8
    template = np.where(mask, 1.0 - 0.6 * radius, 0.0).astype(np.float32)
    side = (i > 0).astype(int)  # 0 left (x < 0), 1 right
    lobe = np.select([j > 0.25, k > 0.1, j > -0.45], [0, 1, 2], 3)  # frontal, parietal, temporal, occipital
    labels = np.where(mask, 1 + 2 * lobe + side, 0).astype(np.int32)
    names = pd.DataFrame({"index": np.arange(1, 9), "name": TOY_REGIONS})
    save_volume(folder / "template" / "template.nii.gz", template, grid)
    save_volume(folder / "template" / "brain_mask.nii.gz", mask.astype(np.uint8), grid, dtype=np.uint8)
    save_volume(folder / "atlas" / "atlas.nii.gz", labels, grid, dtype=np.int16)
    names.to_csv(folder / "atlas" / "labels.tsv", sep="\t", index=False)
    return grid, mask, labels, names


def _subjects(sizes: dict[str, int], rng: np.random.Generator) -> pd.DataFrame:
    rows = []
    for cohort, n in sizes.items():
        prefix = PREFIXES.get(cohort, f"C{list(sizes).index(cohort)}")
        for k in range(n):
            if cohort == REFERENCE:
                split = "train" if k < 0.75 * n else "val" if k < 0.84 * n else "test"
            else:
                split = "none"
            rows.append({"subject_id": f"sub-{prefix}{k + 1:04d}", "cohort": cohort, "split": split,
                         "sex": "F" if rng.random() < 0.5 else "M", "age": round(float(rng.uniform(8, 12)), 1),
                         "t1_path": f"images/{prefix}{k + 1:04d}.nii.gz"})
    return pd.DataFrame(rows).set_index("subject_id")


def _behaviour(subjects: pd.DataFrame, severity: pd.Series, n_scores: int, rng) -> pd.DataFrame:
    clinical = subjects.index[subjects["cohort"] != REFERENCE]
    values = rng.normal(50, 10, (len(clinical), n_scores))
    values[:, 0] -= 15 * severity[clinical].to_numpy()  # the planted subgroup scores lower with its severity
    values[rng.random(values.shape) < 0.06] = np.nan
    columns = ["recall_of_designs"] + [f"score_{k:02d}" for k in range(1, n_scores)]
    return pd.DataFrame(np.round(values, 1), index=clinical, columns=columns[:n_scores])


@dataclass(frozen=True)
class _Cohort:
    subjects: pd.DataFrame
    behaviour: pd.DataFrame
    severity: pd.Series
    """Each subject's planted severity (0 outside the planted subgroup)."""


@dataclass(frozen=True)
class _Space:
    grid: Grid
    mask: np.ndarray
    labels: np.ndarray
    names: pd.DataFrame


def _write_run(root: Path, cohort: _Cohort, space: _Space, n_scales: int, planted_regions: int, seed: int,
               rng: np.random.Generator) -> Path:
    subjects, behaviour, severity = cohort.subjects, cohort.behaviour, cohort.severity
    grid, mask, labels, names = space.grid, space.mask, space.labels, space.names
    ids = subjects.index.tolist()
    cohorts = subjects["cohort"].to_numpy()
    base = np.linspace(3.0, 0.5, n_scales)
    log_norms = base + rng.normal(0, 0.08, (len(ids), n_scales))
    log_norms += np.outer(np.where(cohorts == REFERENCE, 0.0, 0.05), np.ones(n_scales))
    log_norms += np.outer(severity.to_numpy(), np.linspace(0.0, 0.4, n_scales))
    norms = np.exp(log_norms)
    som_record, som_table, som = fit_cohort_map(norms, ids, cohorts, REFERENCE)
    add_subgroups(som_record, som, cohorts, ids, REFERENCE)
    train_ids = subjects.index[subjects["split"] == "train"].tolist()
    reference_ids = percentile_reference(ids, list(cohorts), train_ids, REFERENCE)
    regions = roi_columns(names, np.unique(labels[mask]))
    raised = list(regions.values())[: max(1, min(planted_regions, len(regions) - 1))]

    store = RunStore(root)
    run_id = new_run_id(f"synthetic:{len(ids)}:{seed}:{time.time_ns()}")
    staging = store.start(run_id)
    stack = np.lib.format.open_memmap(staging / layout.HEATMAP_STACK.name, mode="w+", dtype=np.float32,
                                      shape=(len(ids), *grid.shape))
    inside = np.isin(labels, raised) & mask
    brain_rows = np.empty((len(ids), int(mask.sum())), dtype=np.float32)
    for k, sid in enumerate(ids):
        field = ndimage.uniform_filter(rng.normal(0, 1.6, grid.shape).astype(np.float32), size=3)
        field += 1.8 * severity[sid] * inside
        field[~mask] = np.nan
        stack[k] = field
        brain_rows[k] = field[mask]
    stack.flush()
    del stack
    scores = roi_scores(brain_rows, labels[mask], names, ids)
    percentiles = percentile_of_reference(scores, reference_ids)
    # The manifest's default covariates (age, sex), as a refresh adjusts for them.
    normative = NormativeModel(SYNTHETIC_COVARIATES, random_state=seed).fit(scores, subjects, reference_ids)
    adjusted = normative.deviations(scores, subjects)
    analyses = analyse_cohorts(subjects["cohort"], chain_selections(som_record["prototypes"]), adjusted,
                               reference_ids, behaviour, REFERENCE, random_state=seed)
    hypotheses, roi_tests, correlations = hypothesis_tables(analyses)
    for entry in hypotheses.values():
        entry["roi_scores"] = "adjusted"

    ids_table = pd.DataFrame({"subject_id": ids, "cohort": cohorts, "split": subjects["split"].to_numpy(),
                              "role": np.where(subjects["split"] == "train", "train",
                                               np.where(subjects["split"] == "val", "val", "score"))})
    columns = [f"norm_{i:02d}" for i in range(n_scales)]
    write_table(staging / layout.SCORE_NORMS.name, pd.concat([ids_table, pd.DataFrame(norms, columns=columns)], axis=1))
    write_table(staging / layout.SOM_TABLE.name, som_table)
    np.save(staging / layout.SOM_WEIGHTS.name, som.weights_)
    np.save(staging / layout.SOM_U_MATRIX.name, som.u_matrix_)
    for file, table in ((layout.ROI_SCORES, scores), (layout.ROI_PERCENTILES, percentiles),
                        (layout.ROI_ADJUSTED, adjusted)):
        write_table(staging / file.name, pd.concat([ids_table, table.reset_index(drop=True)], axis=1))
    write_table(staging / layout.NORMATIVE_MODEL.name, normative.coefficient_table())
    write_table(staging / layout.ROI_TESTS.name, roi_tests)
    write_table(staging / layout.CORRELATIONS.name, correlations)
    detector = ids_table.assign(msma_gmm=-np.log(norms).sum(axis=1))
    write_table(staging / layout.DETECTOR_SCORES.name, detector)
    record = {
        "run_id": run_id,
        "created_utc": run_id.split("-")[0],
        "study": "synthetic",
        "synthetic": True,
        "seed": seed,
        "subjects": {"total": len(ids),
                     "per_cohort": {str(k): int(v) for k, v in subjects["cohort"].value_counts().sort_index().items()}},
        "grid": {"shape": list(grid.shape), "voxel_size_mm": list(grid.voxel_size)},
        "som": som_record,
        "spatial": {
            "heatmaps": {"stack": "heatmaps.npy", "meaning": "synthetic heatmaps in reference standard deviations"},
            "roi_scores": {"table": "roi_scores.parquet", "percentiles": "roi_percentiles.parquet",
                           "rois": list(scores.columns), "reference_subjects": len(reference_ids)},
        },
        "normative": {**normative.record(), "table": layout.ROI_ADJUSTED.name,
                      "coefficients": layout.NORMATIVE_MODEL.name},
        "hypotheses": hypotheses,
        "planted": {"cohort": PLANTED_COHORT, "subgroup": severity.index[severity > 0].tolist(),
                    "regions": [c for c, v in regions.items() if v in raised], "behaviour": behaviour.columns[0]},
    }
    write_json(staging / layout.RECORD.name, record)
    return store.publish(staging)


def add_gnsm_norms(manifest: str | Path, n_scales: int = 12, seed: int = 11) -> None:
    """Give the published synthetic run of ``manifest`` GNSM norms and a GNSM GMM score, as a refresh with a
    ``gnsm:`` block writes them (``gnsm_norms.parquet``, the ``gnsm_gmm`` column, ``run.json`` section ``gnsm``):
    the planted subgroup's GNSM norms are raised on every scale, so a map fitted on them sees it too."""
    run_dir = RunStore(Path(manifest).parent / "runs").latest()
    norms = pd.read_parquet(run_dir / layout.SCORE_NORMS.name)
    record = json.loads((run_dir / layout.RECORD.name).read_text())
    rng = np.random.default_rng(seed)
    planted = norms["subject_id"].isin(record["planted"]["subgroup"]).to_numpy()
    logs = np.linspace(2.0, 0.2, n_scales) + rng.normal(0, 0.1, (len(norms), n_scales))
    logs[planted] += 0.6
    columns = pd.DataFrame(np.exp(logs), columns=[f"norm_{i:02d}" for i in range(n_scales)])
    write_table(run_dir / layout.GNSM_NORMS.name,
                pd.concat([norms[["subject_id", "cohort", "split", "role"]], columns], axis=1))
    scores = pd.read_parquet(run_dir / layout.DETECTOR_SCORES.name)
    scores["gnsm_gmm"] = logs.sum(axis=1) + rng.normal(0, 0.5, len(logs))
    write_table(run_dir / layout.DETECTOR_SCORES.name, scores)
    record["gnsm"] = {"columns": {"sex": "categorical", "age": "numeric"}, "with_score_norms": False,
                      "n_scales": n_scales, "synthetic": True}
    write_json(run_dir / layout.RECORD.name, record)
