"""The run's tables and its ``run.json`` record (sections: :data:`analysis.runs.layout.RUN_SECTIONS`)."""

from __future__ import annotations

import platform
from importlib.metadata import version

import numpy as np
import pandas as pd
import torch

from analysis.methods import NORM_SETS, descriptions
from analysis.runs import layout
from analysis.runs.store import write_table
from models.score_model.network import count_parameters
from pipeline import keys
from pipeline.context import RefreshContext
from pipeline.detection import Detection
from pipeline.exploration import Exploration
from pipeline.gnsm import GNSMOutputs
from pipeline.score_model import ScoreModel, link_or_copy, norm_columns


def write_tables(ctx: RefreshContext, norm_sets: dict[str, np.ndarray], detection: Detection,
                 exploration: Exploration, score: ScoreModel, gnsm: GNSMOutputs | None = None) -> None:
    """The norm, detector, SOM and hypothesis tables and arrays, and the score model's (and GNSM's) checkpoint,
    into the staging folder."""
    staging = ctx.staging
    for name, values in norm_sets.items():
        table = ctx.subject_table()
        table[norm_columns(values.shape[1])] = values  # GNSM has its own number of scales
        write_table(staging / layout.NORM_SET_FILES[name].name, table)
    detector_table = ctx.subject_table()
    for column, values in detection.scores.items():
        detector_table[column] = values
    write_table(staging / layout.DETECTOR_SCORES.name, detector_table)
    write_table(staging / layout.DETECTION_METRICS.name, detection.metrics)
    write_table(staging / layout.SOM_TABLE.name, exploration.som_table)
    write_table(staging / layout.ROI_TESTS.name, exploration.roi_tests)
    write_table(staging / layout.CORRELATIONS.name, exploration.correlations)
    np.save(staging / layout.SOM_WEIGHTS.name, exploration.som.weights_)
    np.save(staging / layout.SOM_U_MATRIX.name, exploration.som.u_matrix_)
    link_or_copy(score.checkpoint, staging / layout.SCORE_MODEL.name)
    if gnsm is not None:
        link_or_copy(gnsm.checkpoint, staging / layout.GNSM_MODEL.name)


def versions() -> dict[str, str]:
    """The versions of this package and of the numerical packages a run's numbers depend on."""
    import nibabel
    import sklearn

    return {
        "msma_explorer": version("msma-explorer"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit_learn": sklearn.__version__,
        "nibabel": nibabel.__version__,
    }


def run_record(ctx: RefreshContext, run_id: str, score: ScoreModel, detection: Detection) -> dict:
    """The sections of ``run.json`` up to ``timings_s``; the spine adds the later stages' sections."""
    study, m, training = ctx.study, ctx.study.manifest, score.training
    return {
        "run_id": run_id,
        "created_utc": run_id.split("-")[0],
        "study": m.study_name,
        "manifest": {"path": str(m.path), "sha256": m.sha256},
        "profile": ctx.profile.name,
        "device": ctx.device,
        "seed": m.model.seed,
        "versions": versions(),
        "subjects": {
            "total": len(study.subjects),
            "per_cohort": {str(k): int(v) for k, v in study.subjects["cohort"].value_counts().sort_index().items()},
            "evaluation_groups": {k: len(v) for k, v in detection.groups.items()},
        },
        "grid": {"shape": list(study.grid.shape), "voxel_size_mm": list(study.grid.voxel_size)},
        "brain_voxels": int(study.brain_mask.sum()),
        "normalisation": keys.NORMALISATION,
        "score_model": {
            "checkpoint": layout.SCORE_MODEL.name,
            "key": score.key,
            "training_data_sha256": score.data_digest,
            "reused": bool(training.get("reused")),
            "parameters": count_parameters(score.model),
            "net_config": ctx.profile.net.as_dict(),
            "train_config": training.get("train_config"),
            "steps": training.get("steps"),
            "stopped": training.get("stopped"),
            "best_val_loss": training.get("best_val_loss"),
            "train_seconds": training.get("train_seconds"),
            "resumed_from_step": training.get("resumed_from_step"),
            "history": training.get("history", {}),
        },
        "schedule": {**score.schedule.as_dict(), "sigmas": [float(s) for s in score.sigmas]},
        "gaussian": {
            "rank": int(score.gaussian.rank_),
            "val_log_likelihood": {str(k): v for k, v in score.gaussian.val_log_likelihood_.items()},
        },
        "norm_sets": {k: v for k, v in descriptions(NORM_SETS).items() if k in detection.info},
        "detectors": detection.info,
        "tables": {
            **{file.name.removesuffix(".parquet"): file.name for name, file in layout.NORM_SET_FILES.items()
               if name in detection.info},
            "detector_scores": layout.DETECTOR_SCORES.name,
            "detection_metrics": layout.DETECTION_METRICS.name,
        },
        "arrays": {
            "voxel_scores": {
                "file": layout.VOXEL_SCORES.name,
                "shape": "(subjects in score_norms order, scales, brain voxels in C order of the brain mask)",
                "dtype": "float16",
                "meaning": "sigma_i * s(x, sigma_i) at each brain voxel",
            }
        },
        "metrics": detection.metrics.to_dict(orient="records"),
        "timings_s": dict(ctx.timer.timings),
    }


def run_warnings(ctx: RefreshContext, spatial_record: dict) -> list[str]:
    """What the researcher should know about the run: no test split, lesion subjects the models learned from,
    maps the lesion protocol could not threshold."""
    study, split = ctx.study, ctx.split
    warnings = [] if split.test else [
        f"the reference cohort {study.manifest.reference_cohort!r} has no subjects in split 'test' "
        f"({study.manifest.subjects.table}): no detection metrics; mark some reference subjects 'test'"
    ]
    if study.lesions is not None:
        fitted = sorted(set(study.lesions.index) & (set(split.train) | set(split.val)))
        if fitted:
            warnings.append(
                f"{len(fitted)} subjects of the lesions table ({study.manifest.lesions.table}) are reference "
                f"train/val subjects the models learned from, e.g. {fitted[:3]}: their lesion figures are biased"
            )
    for failure in (spatial_record.get("lesions") or {}).get("failed", []):
        warnings.append(f"lesion evaluation of {failure['subject_id']} ({failure['method']}): {failure['note']}")
    return warnings
