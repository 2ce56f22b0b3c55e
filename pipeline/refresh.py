"""``msma refresh``: manifest -> score model -> multiscale score norms -> MSMA detectors -> one new published run.

Stages (each timed into ``run.json``):

1. validate the study (every file the manifest names);
2. read and normalise the subject volumes;
3. train the score model on the reference cohort's ``train`` split (``val`` for early stopping), or reuse the
   checkpoint in ``<output_dir>/models/`` whose configuration and training-data fingerprint match; an interrupted
   training resumes from its last checkpoint;
4. score every subject once per scale: the score norms, and the per-voxel values kept for Spatial-MSMA (taken
   over from the published run when it was scored by the same network on the same volumes);
5. the no-network baselines: the same norms from the analytic score of the low-rank Gaussian alone and of a
   per-voxel Gaussian;
6. fit the detectors (GMM, KNN, flow) on the training subjects' norms and score everyone;
7. detection metrics of every cohort against the held-out reference ``test`` subjects;
8. write the run into a staging folder and publish it atomically (:mod:`analysis.runs.store`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from analysis.detection.detectors import GaussianMixtureDetector, KNNDetector
from analysis.detection.metrics import detection_metrics
from analysis.exploration.cohort_analysis import HYPOTHESIS_Q, analyse_cohorts, hypothesis_tables, planted_recovery
from analysis.exploration.roi_stats import percentile_of_reference, percentile_reference, roi_scores
from analysis.exploration.som import fit_cohort_map
from analysis.lesions.protocol import LESION_MAPS_FILE, evaluate_methods, summarise
from analysis.runs.store import RunNotFound, RunStore, new_run_id, read_run, write_json, write_table
from analysis.study.images import files_digest, load_images, normalise_intensity, subject_image_paths
from analysis.study.validation import Study, validate_study
from analysis.study.volumes import load_volume
from models.checkpoint import (
    CheckpointError,
    load_score_model,
    load_spatial_model,
    save_score_model,
    save_spatial_model,
)
from models.norm_flow.flow import FlowDetector
from models.profiles import Profile, get_profile
from models.score_model.gaussian_prior import LowRankGaussian
from models.score_model.network import ScoreNet, count_parameters
from models.score_model.norms import score_norms
from models.score_model.sde import sigma_range_from_data
from models.score_model.train import train_score_model
from models.spatial.flow import train_spatial_flow
from models.spatial.heatmap import BASELINES, HEATMAP_MAPPING, baseline_maps, compute_heatmaps, write_heatmaps
from models.spatial.patch_norms import patch_norms

NORMALISATION = "brain_p99"
TRAINING_VERSION = 2
"""Part of a checkpoint's key: bump it when a code change alters what training produces, so old checkpoints are
not reused for the new method."""
SPATIAL_VERSION = 3
"""Part of a Spatial-MSMA flow checkpoint's key, like :data:`TRAINING_VERSION`."""
SPATIAL_VARIANTS = {
    "spatial_msma": "Spatial-MSMA: conditional flow NLL of the patch norms (calibrated per voxel), each patch's value "
    "at its centre voxel (the heatmaps)",
    "spatial_msma_min": "Spatial-MSMA's patch scores, each voxel the minimum over the patches covering it",
}
LESION_METHODS = (*SPATIAL_VARIANTS, *BASELINES)
"""Methods of the lesion evaluation, in the order of axis 1 of ``lesion_maps.npy``."""
LESION_PROTOCOL = {"n_thresholds": 64, "min_size": 3, "dilation_radius": 1}
"""Settings of the lesion protocol (dissertation ch. 5.4) used by the refresh."""
DETECTORS = ("gmm", "knn", "flow")
NORM_SETS = {
    "msma": "trained score network (low-rank Gaussian score + learned residual)",
    "lowrank": "low-rank Gaussian score, no network",
    "gaussian": "per-voxel Gaussian score, no network (baseline)",
}


MIN_TRAIN_SUBJECTS = 5
"""Fewest reference training subjects a refresh accepts: the detectors need a few rows (5-fold cross-validation
of the GMM, a held-out fifth for the flow, 5 neighbours for KNN)."""


class RefreshError(RuntimeError):
    """A refresh that cannot proceed, with a message naming what is missing."""


@dataclass
class RefreshResult:
    run_dir: Path
    run: dict


def norm_columns(n_scales: int) -> list[str]:
    return [f"norm_{i:02d}" for i in range(n_scales)]


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RefreshError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if device != "cpu" and not device.startswith("cuda"):
        raise RefreshError(f"--device: expected cpu, cuda or auto, got {device!r}")
    return device


class _Timer:
    def __init__(self, progress: bool):
        self.timings: dict[str, float] = {}
        self.progress = progress

    def stage(self, name: str):
        timer = self

        class _Stage:
            def __enter__(self):
                self.start = time.perf_counter()
                if timer.progress:
                    print(f"[refresh] {name} ...", flush=True)

            def __exit__(self, *exc):
                timer.timings[name] = round(time.perf_counter() - self.start, 3)

        return _Stage()


def split_ids(study: Study) -> tuple[list[str], list[str], list[str]]:
    """Reference train, validation and test ids; without val subjects, every tenth training subject validates."""
    s, ref = study.subjects, study.manifest.reference_cohort
    in_ref = s["cohort"] == ref
    train = list(s.index[in_ref & (s["split"] == "train")])
    val = list(s.index[in_ref & (s["split"] == "val")])
    test = list(s.index[in_ref & (s["split"] == "test")])
    if not val:
        val, train = train[::10], [i for k, i in enumerate(train) if k % 10]
    if len(train) < MIN_TRAIN_SUBJECTS:
        raise RefreshError(
            f"{study.manifest.subjects.table}: the reference cohort {ref!r} needs at least {MIN_TRAIN_SUBJECTS} "
            f"subjects in split 'train' (besides those in 'val') for the score model and its detectors; found "
            f"{len(train)}"
        )
    return train, val, test


def refresh(
    manifest,
    *,
    profile: str | Profile = "default",
    device: str = "cpu",
    progress: bool = True,
    keep_runs: int = 3,
    on_stage: Callable[[str], None] | None = None,
    study: Study | None = None,
) -> RefreshResult:
    """Run the whole refresh for a loaded :class:`~analysis.study.manifest.Manifest`; returns the published run.

    ``study`` is the manifest's already validated study, if the caller has one (validation is then skipped). One
    refresh at a time per ``output_dir``: a second one fails at once with :class:`RefreshError`.
    """
    with RunStore(manifest.output_dir).lock():
        return _refresh(manifest, profile, device, progress, keep_runs, on_stage, study)


def _refresh(manifest, profile, device, progress, keep_runs, on_stage, study) -> RefreshResult:
    profile = get_profile(profile) if isinstance(profile, str) else profile
    device = resolve_device(device)
    timer = _Timer(progress)
    n_scales, seed = manifest.model.n_scales, manifest.model.seed

    def stage(name: str):
        if on_stage is not None:
            on_stage(name)
        return timer.stage(name)

    with stage("validate"):
        if study is None or study.manifest is not manifest:
            study = validate_study(manifest, progress=progress)
    mask = study.brain_mask
    ids = list(study.subjects.index)
    train_ids, val_ids, test_ids = split_ids(study)
    position = {sid: k for k, sid in enumerate(ids)}

    with stage("read_volumes"):
        images = load_images(study, ids, progress=progress)
        try:
            normalise_intensity(images, mask, NORMALISATION)
        except ValueError as exc:
            raise RefreshError(f"{study.manifest.subjects.table}: {exc}") from exc
    train_images = images[[position[i] for i in train_ids]]
    val_images = images[[position[i] for i in val_ids]]
    train_brain = train_images[:, mask].astype(np.float64)
    with stage("gaussian"):
        gaussian = LowRankGaussian().fit(train_brain, val_images[:, mask])
        diagonal = LowRankGaussian(ranks=(0,)).fit(train_brain, val_images[:, mask])
    schedule = sigma_range_from_data(train_brain, sigma_min=gaussian.finest_sd_)

    data_digest = files_digest(
        [study.manifest.template.brain_mask, *subject_image_paths(study, train_ids + val_ids)]
    )
    model_key_source = json.dumps(
        {
            "version": TRAINING_VERSION,
            "net": profile.net.as_dict(),
            "train": profile.train.as_dict(),
            "normalisation": NORMALISATION,
            "grid": list(study.grid.shape),
            "data": data_digest,
            "train_ids": train_ids,
            "val_ids": val_ids,
            "seed": seed,
        },
        sort_keys=True,
    )
    model_key = hashlib.sha256(model_key_source.encode()).hexdigest()[:16]
    store = RunStore(study.manifest.output_dir)
    checkpoint = store.models_dir / f"score_model-{model_key}.pt"

    with stage("train"):
        training = _train_or_reuse(
            profile, study, schedule, gaussian, train_images, val_images, checkpoint, model_key, data_digest, seed,
            device, progress,
        )
    model, schedule = training["model"], training["schedule"]
    sigmas = schedule.sigmas(n_scales).numpy()

    passes_key = hashlib.sha256(
        json.dumps(
            {
                "model": files_digest([checkpoint]),
                "device": device,
                "images": files_digest([study.manifest.template.brain_mask, *subject_image_paths(study, ids)]),
                "ids": ids,
                "sigmas": [float(v) for v in sigmas],
            }
        ).encode()
    ).hexdigest()[:16]
    run_id = new_run_id(f"{study.manifest.sha256}:{model_key}:{profile.name}:{time.time_ns()}")
    previous = _previous_passes(store, passes_key)
    staging = store.start(run_id)
    try:
        with stage("score_norms"):
            if previous is not None:
                # Same network, same volumes, same sigmas: the previous run's passes are these passes.
                norms = pd.read_parquet(previous / "score_norms.parquet")[norm_columns(n_scales)].to_numpy()
                _link_or_copy(previous / "voxel_scores.npy", staging / "voxel_scores.npy")
            else:
                voxel_scores = np.lib.format.open_memmap(
                    staging / "voxel_scores.npy", mode="w+", dtype=np.float16,
                    shape=(len(ids), n_scales, int(mask.sum())),
                )
                norms = score_norms(
                    model, images, mask, sigmas, batch_size=profile.inference_batch, voxel_scores_out=voxel_scores,
                    device=device, progress=progress,
                ).norms
                voxel_scores.flush()
                del voxel_scores
        passes_record = {"key": passes_key, "reused_from_run": previous.name if previous is not None else None}
        with stage("baseline_norms"):
            brain = images[:, mask]
            baselines = {
                "lowrank": gaussian.score_norms(brain, sigmas),
                "gaussian": diagonal.score_norms(brain, sigmas),
            }
        norm_sets = {"msma": norms, **baselines}

        spatial_key = hashlib.sha256(
            json.dumps({"model": model_key, "data": data_digest, "sigmas": [float(v) for v in sigmas]}).encode()
        ).hexdigest()[:16]
        spatial_record, roi_table, roi_reference = _spatial_stages(
            stage, study, profile, images, staging, store, spatial_key, ids, train_ids, val_ids, position, seed,
            progress,
        )

        with stage("detectors"), threadpool_limits(1):
            # Small problems (hundreds of rows x L): one thread each is fastest, and idle OpenMP threads spinning
            # beside training jobs made these fits 100x slower on a busy machine.
            scores, detector_info = _fit_detectors(norm_sets, [position[i] for i in train_ids], profile, seed)
        with stage("metrics"):
            groups = evaluation_groups(study)
            metrics = _detection_table(scores, groups, test_ids, ids)
        with stage("som"), threadpool_limits(1):
            som_record, som_table, som = _fit_som(study, ids, norms, demo_truth(study))
        with stage("hypotheses"), threadpool_limits(1):
            hypotheses, roi_tests, correlations = _hypotheses(
                study, som_record, roi_table, roi_reference, demo_truth(study), seed
            )

        with stage("write"):
            for name, values in norm_sets.items():
                table = _subject_table(study, ids, train_ids, val_ids)
                table[norm_columns(n_scales)] = values
                write_table(staging / ("score_norms.parquet" if name == "msma" else f"{name}_norms.parquet"), table)
            detector_table = _subject_table(study, ids, train_ids, val_ids)
            for column, values in scores.items():
                detector_table[column] = values
            write_table(staging / "detector_scores.parquet", detector_table)
            write_table(staging / "detection_metrics.parquet", metrics)
            write_table(staging / "som.parquet", som_table)
            write_table(staging / "roi_tests.parquet", roi_tests)
            write_table(staging / "correlations.parquet", correlations)
            np.save(staging / "som_weights.npy", som.weights_)
            np.save(staging / "som_u_matrix.npy", som.u_matrix_)
            _link_or_copy(checkpoint, staging / "score_model.pt")
        run = _run_record(
            run_id, study, profile, device, schedule, sigmas, gaussian, training, model, model_key, data_digest,
            detector_info, metrics, groups, timer.timings,
        )
        run["score_passes"] = passes_record
        run["spatial"] = spatial_record
        run["som"] = som_record
        run["hypotheses"] = hypotheses
        run["warnings"] = [] if test_ids else [
            f"the reference cohort {study.manifest.reference_cohort!r} has no subjects in split 'test' "
            f"({study.manifest.subjects.table}): no detection metrics; mark some reference subjects 'test'"
        ]
        if study.lesions is not None:
            fitted = sorted(set(study.lesions.index) & (set(train_ids) | set(val_ids)))
            if fitted:
                run["warnings"].append(
                    f"{len(fitted)} subjects of the lesions table ({study.manifest.lesions.table}) are reference "
                    f"train/val subjects the models learned from, e.g. {fitted[:3]}: their lesion figures are biased"
                )
        for failure in (spatial_record.get("lesions") or {}).get("failed", []):
            run["warnings"].append(f"lesion evaluation of {failure['subject_id']} ({failure['method']}): "
                                   f"{failure['note']}")
        write_json(staging / "run.json", run)  # last: a run folder without run.json is never complete
        run_dir = store.publish(staging)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    store.prune(keep_runs)
    return RefreshResult(run_dir=run_dir, run=run)


PATCH_NORMS_FILE = ".patch_norms.npy"
"""Scratch memory map of the patch norms in the staging folder; deleted before the run is published."""


def _spatial_stages(
    stage, study, profile, images, staging, store, spatial_key, ids, train_ids, val_ids, position, seed, progress,
) -> tuple[dict, pd.DataFrame, list[str]]:
    """Patch norms -> Spatial-MSMA flow -> heatmaps (stack + NIfTI) -> ROI scores -> lesion evaluation (when the
    manifest names lesion masks). Writes into ``staging``; returns the run record's ``spatial`` section, the ROI
    scores (indexed by subject id) and the reference subjects of their percentiles.

    ``spatial_key`` fingerprints what the flows learn from (the score model, the sigmas and the reference
    train/val images), so adding subjects to other cohorts reuses the trained flows."""
    mask, grid = study.brain_mask, study.grid
    config = dataclasses.replace(profile.spatial, patch_size=study.manifest.model.patch_size, seed=seed)
    train_rows = [position[i] for i in train_ids]
    val_rows = [position[i] for i in val_ids]
    with stage("patch_norms"):
        voxel_scores = np.load(staging / "voxel_scores.npy", mmap_mode="r")
        norms = np.lib.format.open_memmap(
            staging / PATCH_NORMS_FILE, mode="w+", dtype=np.float32,
            shape=(len(ids), int(mask.sum()), voxel_scores.shape[1]),
        )
        patch_norms(voxel_scores, mask, config.patch_size, progress=progress, out=norms)
    with stage("spatial_flow"):
        flow, flow_record = _spatial_flow_or_reuse(config, images, norms, mask, train_rows, val_rows, store,
                                                   spatial_key, train_ids, val_ids, progress)
        _link_or_copy(Path(flow_record["path"]), staging / "spatial_flow.pt")
    with stage("heatmaps"):
        heatmaps = compute_heatmaps(flow, images, norms, range(len(ids)), progress=progress)
        files = write_heatmaps(staging, heatmaps, mask, grid, ids, progress=progress)
        labels = study.atlas_labels[mask]
        scores = roi_scores(heatmaps, labels, study.label_names, ids)
        ref = study.manifest.reference_cohort
        cohorts = study.subjects.loc[ids, "cohort"].tolist()
        reference_ids = percentile_reference(ids, cohorts, train_ids, ref)
        held_out = set(reference_ids).isdisjoint(train_ids)
        percentiles = percentile_of_reference(scores, reference_ids)
        frame = _subject_table(study, ids, train_ids, val_ids)
        frame["heatmap_file"] = [f"heatmaps/{name}" for name in files]
        write_table(staging / "heatmaps.parquet", frame)
        for name, table in (("roi_scores", scores), ("roi_percentiles", percentiles)):
            out = _subject_table(study, ids, train_ids, val_ids)
            write_table(staging / f"{name}.parquet", pd.concat([out, table.reset_index(drop=True)], axis=1))
    record = {
        "config": config.as_dict(),
        "flow": {k: v for k, v in flow_record.items() if k != "path"},
        "heatmaps": {
            "stack": "heatmaps.npy",
            "files": "heatmaps.parquet",
            "shape": "(subjects in score_norms order, D, H, W), float32, NaN outside the brain mask",
            "meaning": "negative log-likelihood of the voxel's patch score norms under the conditional flow, "
            + ("minus the reference training subjects' mean NLL at the voxel, over their standard deviation"
               if config.calibrate else "in nats"),
            "voxel_mapping": HEATMAP_MAPPING,
        },
        "roi_scores": {
            "table": "roi_scores.parquet",
            "percentiles": "roi_percentiles.parquet",
            "rois": list(scores.columns),
            "reference_subjects": len(reference_ids),
            "reference": "reference-cohort subjects outside the training split (val and test)" if held_out
            else "reference cohort",
        },
    }
    if study.lesions is not None:
        with stage("lesions"):
            record["lesions"] = _lesion_stage(
                study, config, images, norms, voxel_scores, flow, heatmaps, position, train_rows, val_rows, store,
                spatial_key, train_ids, val_ids, staging, progress,
            )
    del norms, voxel_scores
    (staging / PATCH_NORMS_FILE).unlink()
    return record, scores, reference_ids


def _hypotheses(study, som_record, roi_table, reference_ids, truth, seed):
    """Dissertation ch. 6.3 for every non-reference cohort
    (:func:`analysis.exploration.cohort_analysis.analyse_cohorts`); for the demo, the planted regions and behaviour
    pairs recovered (added to the SOM's ``recovery``)."""
    analyses = analyse_cohorts(
        study.subjects["cohort"], som_record["prototypes"], roi_table, reference_ids, study.behaviour,
        study.manifest.reference_cohort, random_state=seed,
    )
    recovery = som_record.get("recovery")
    if truth is not None and recovery is not None and recovery.get("cohort") in analyses:
        recovery.update(planted_recovery(analyses[recovery["cohort"]], truth["planted_regions"],
                                         truth["planted_behaviour_pairs"], HYPOTHESIS_Q))
    return hypothesis_tables(analyses, HYPOTHESIS_Q)


def _spatial_flow_or_reuse(config, images, norms, mask, train_rows, val_rows, store, spatial_key, train_ids, val_ids,
                           progress):
    """The trained flow from ``<output_dir>/models/`` when one was trained on the same passes with the same config,
    else a new one (saved there)."""
    key = hashlib.sha256(
        json.dumps(
            {"version": SPATIAL_VERSION, "data": spatial_key, "config": config.as_dict(), "train_ids": train_ids,
             "val_ids": val_ids},
            sort_keys=True,
        ).encode()
    ).hexdigest()[:16]
    name = "spatial_flow" if config.conditional else "unconditional_flow"
    path = store.models_dir / f"{name}-{key}.pt"
    if path.is_file():
        try:
            model, info = load_spatial_model(path)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; training a new Spatial-MSMA flow", stacklevel=2)
        else:
            return model, {**info["metadata"], "key": key, "reused": True, "path": str(path)}
    result = train_spatial_flow(config, images, norms, mask, train_rows, val_rows, progress=progress)
    metadata = {
        "steps": result.steps,
        "best_step": result.best_step,
        "stopped": result.stopped,
        "best_val_nll": result.best_val_nll,
        "train_seconds": round(result.seconds, 2),
        "history": result.history,
        "parameters": count_parameters(result.model),
    }
    save_spatial_model(path, result.model, metadata=metadata)
    return result.model, {**metadata, "key": key, "reused": False, "path": str(path)}


def _lesion_stage(study, config, images, norms, voxel_scores, flow, heatmaps, position, train_rows, val_rows, store,
                  spatial_key, train_ids, val_ids, staging, progress) -> dict:
    """Every method's maps of the subjects with lesion masks, through the same protocol (ch. 5.4)."""
    lesions = study.lesions
    unconditional, unconditional_record = _spatial_flow_or_reuse(
        dataclasses.replace(config, conditional=False, standardisation="global", calibrate=False), images, norms,
        study.brain_mask,
        train_rows, val_rows, store, spatial_key, train_ids, val_ids, progress,
    )
    rows = [position[i] for i in lesions.index]
    maps = {
        "spatial_msma": heatmaps[rows],
        "spatial_msma_min": compute_heatmaps(flow, images, norms, rows, mapping="min"),
        **baseline_maps(rows, images, study.brain_mask, train_rows, voxel_scores, norms, unconditional,
                        config.patch_size),
    }
    np.save(staging / LESION_MAPS_FILE, np.stack([maps[m] for m in LESION_METHODS], axis=1))
    truth = [load_volume(path, study.grid) > 0 for path in lesions["mask"]]
    per_subject = evaluate_methods(
        maps, list(lesions.index), list(lesions["group"]), truth, study.brain_mask, study.grid.voxel_size,
        **LESION_PROTOCOL, n_jobs=min(2, os.cpu_count() or 1), progress=progress,
    )
    write_table(staging / "lesion_evaluation.parquet", per_subject)
    summary = summarise(per_subject, ["group", "method"])
    descriptions = {**SPATIAL_VARIANTS, **BASELINES}
    return {
        "methods": {m: descriptions[m] for m in LESION_METHODS},
        "maps": {
            "file": LESION_MAPS_FILE,
            "order": list(LESION_METHODS),
            "shape": "(subjects in 'subjects' order, methods in 'order', brain voxels)",
        },
        "subjects": list(lesions.index),
        "protocol": {
            **LESION_PROTOCOL,
            "threshold": "per subject, the candidate minimising the symmetric mean surface distance",
            "component_connectivity": 26,
        },
        "failed": per_subject.loc[per_subject["note"].notna(), ["subject_id", "method", "note"]].to_dict("records")
        if "note" in per_subject else [],
        "per_subject": "lesion_evaluation.parquet",
        "summary": summary.to_dict(orient="records"),
        "unconditional_flow": {k: v for k, v in unconditional_record.items() if k != "path"},
    }


def _previous_passes(store: RunStore, passes_key: str) -> Path | None:
    """The published run whose score passes were made by the same network on the same volumes, if any."""
    try:
        latest = store.latest()
        record = read_run(latest).get("score_passes") or {}
    except (RunNotFound, OSError, ValueError):
        return None
    files_present = (latest / "score_norms.parquet").is_file() and (latest / "voxel_scores.npy").is_file()
    return latest if record.get("key") == passes_key and files_present else None


def _train_or_reuse(
    profile, study, schedule, gaussian, train_images, val_images, checkpoint, model_key, data_digest, seed, device,
    progress,
) -> dict:
    if checkpoint.is_file():
        try:
            model, stored_schedule, info = load_score_model(checkpoint)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; training a new score model", stacklevel=2)
        else:
            if info.get("data_hash") == data_digest:
                return {"model": model, "schedule": stored_schedule, "reused": True, **info["metadata"]}
    mask = study.brain_mask
    torch.manual_seed(seed)
    model = ScoreNet(profile.net, study.grid.shape, rank=gaussian.rank_)
    mean_grid = np.zeros(mask.shape, np.float32)
    var_grid = np.ones(mask.shape, np.float32)
    factors = np.zeros((gaussian.rank_, *mask.shape), np.float32)
    mean_grid[mask], var_grid[mask], factors[:, mask] = gaussian.mean_, gaussian.diagonal_, gaussian.components_.T
    model.set_gaussian(torch.from_numpy(mean_grid), torch.from_numpy(var_grid), torch.from_numpy(factors))
    config = dataclasses.replace(profile.train, seed=seed)
    result = train_score_model(
        model,
        schedule,
        torch.from_numpy(train_images[:, None]),
        torch.from_numpy(val_images[:, None]),
        config,
        weight=torch.from_numpy(mask.astype(np.float32)),
        checkpoint_path=checkpoint.with_suffix(".training.pt"),
        checkpoint_extra={"model_key": model_key},
        device=device,
        progress=progress,
    )
    metadata = {
        "steps": result.steps,
        "stopped": result.stopped,
        "best_val_loss": result.best_val_loss,
        "train_seconds": round(result.seconds, 2),
        "resumed_from_step": result.resumed_from_step,
        "history": result.history,
        "train_config": config.as_dict(),
        "device": device,
    }
    save_score_model(checkpoint, result.model.cpu(), schedule, data_hash=data_digest, metadata=metadata)
    checkpoint.with_suffix(".training.pt").unlink(missing_ok=True)
    return {"model": result.model, "schedule": schedule, "reused": False, **metadata}


def _fit_detectors(norm_sets: dict[str, np.ndarray], train_rows: list[int], profile: Profile, seed: int):
    scores: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    for name, norms in norm_sets.items():
        train = norms[train_rows]
        gmm = GaussianMixtureDetector(random_state=seed).fit(train)
        knn = KNNDetector(n_neighbors=min(5, len(train) - 1)).fit(train)
        flow = FlowDetector(max_epochs=profile.flow_epochs, random_state=seed).fit(train)
        knn_scores = knn.score_samples(norms)
        knn_scores[train_rows] = knn.score_training_samples()
        scores[f"{name}_gmm"] = gmm.score_samples(norms)
        scores[f"{name}_knn"] = knn_scores
        scores[f"{name}_flow"] = flow.score_samples(norms)
        info[name] = {
            "gmm": {"n_components": int(gmm.n_components_), "cv_log_likelihood": gmm.cv_log_likelihood_},
            "knn": {"n_neighbors": int(knn.n_neighbors)},
            "flow": {"n_blocks": int(flow.n_blocks)},
        }
    return scores, info


def evaluation_groups(study: Study) -> dict[str, list[str]]:
    """Subjects to evaluate against the reference test split: each other cohort, plus the demo's planted subgroup
    (and the rest of its cohort) when the study is the generated demo."""
    s, ref = study.subjects, study.manifest.reference_cohort
    groups = {c: list(s.index[s["cohort"] == c]) for c in sorted(set(s["cohort"])) if c != ref}
    truth = demo_truth(study)
    if truth is not None:
        planted = set(truth.get("planted_subgroup", []))
        cohort = truth.get("planted_cohort", "")
        members = groups.get(cohort, [])
        if planted and members:
            groups[f"{cohort} (planted subgroup)"] = [i for i in members if i in planted]
            groups[f"{cohort} (rest)"] = [i for i in members if i not in planted]
    return groups


def demo_truth(study: Study) -> dict | None:
    """The generated demo's ground truth (planted subgroup, regions, ...), or None for a study of real data."""
    demo = study.manifest.demo
    if demo is None:
        return None
    path = study.manifest.resolve(demo.folder) / "ground_truth.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _fit_som(study: Study, ids: list[str], norms: np.ndarray, truth: dict | None):
    """The run's SOM (:func:`analysis.exploration.som.fit_cohort_map`) and, for the demo, how well the planted cohort's
    prototype recovers the planted subgroup."""
    record, table, som = fit_cohort_map(norms, ids, study.subjects.loc[ids, "cohort"].to_numpy(),
                                        study.manifest.reference_cohort)
    prototypes = record["prototypes"]
    if truth is not None and truth.get("planted_cohort") in prototypes and truth.get("planted_subgroup"):
        found, planted = set(prototypes[truth["planted_cohort"]]["members"]), set(truth["planted_subgroup"])
        record["recovery"] = {
            "cohort": truth["planted_cohort"],
            "planted": len(planted),
            "prototype_size": len(found),
            "precision": len(found & planted) / len(found),
            "recall": len(found & planted) / len(planted),
        }
    return record, table, som


def _detection_table(scores, groups, test_ids, ids) -> pd.DataFrame:
    position = {sid: k for k, sid in enumerate(ids)}
    test_rows = [position[i] for i in test_ids]
    rows = []
    for column, values in scores.items():
        norms, detector = column.split("_", 1)
        for group, members in groups.items():
            if not members or not test_rows:
                continue
            m = detection_metrics(values[test_rows], values[[position[i] for i in members]])
            rows.append({"norms": norms, "detector": detector, "group": group, **m})
    return pd.DataFrame(rows)


def _subject_table(study: Study, ids, train_ids, val_ids) -> pd.DataFrame:
    s = study.subjects.loc[ids]
    used = set(train_ids)
    validation = set(val_ids)
    return pd.DataFrame(
        {
            "subject_id": ids,
            "cohort": s["cohort"].to_numpy(),
            "split": s["split"].to_numpy(),
            "role": ["train" if i in used else "val" if i in validation else "score" for i in ids],
        }
    )


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def _versions() -> dict[str, str]:
    import nibabel
    import sklearn

    from msma import __version__

    return {
        "msma_explorer": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pandas": pd.__version__,
        "scikit_learn": sklearn.__version__,
        "nibabel": nibabel.__version__,
    }


def _run_record(
    run_id, study, profile, device, schedule, sigmas, gaussian, training, model, model_key, data_digest,
    detector_info, metrics, groups, timings,
) -> dict:
    m = study.manifest
    history = training.get("history", {})
    return {
        "run_id": run_id,
        "created_utc": run_id.split("-")[0],
        "study": m.study_name,
        "manifest": {"path": str(m.path), "sha256": m.sha256},
        "profile": profile.name,
        "device": device,
        "seed": m.model.seed,
        "versions": _versions(),
        "subjects": {
            "total": len(study.subjects),
            "per_cohort": {str(k): int(v) for k, v in study.subjects["cohort"].value_counts().sort_index().items()},
            "evaluation_groups": {k: len(v) for k, v in groups.items()},
        },
        "grid": {"shape": list(study.grid.shape), "voxel_size_mm": list(study.grid.voxel_size)},
        "brain_voxels": int(study.brain_mask.sum()),
        "normalisation": NORMALISATION,
        "score_model": {
            "checkpoint": "score_model.pt",
            "key": model_key,
            "training_data_sha256": data_digest,
            "reused": bool(training.get("reused")),
            "parameters": count_parameters(model),
            "net_config": profile.net.as_dict(),
            "train_config": training.get("train_config"),
            "steps": training.get("steps"),
            "stopped": training.get("stopped"),
            "best_val_loss": training.get("best_val_loss"),
            "train_seconds": training.get("train_seconds"),
            "resumed_from_step": training.get("resumed_from_step"),
            "history": history,
        },
        "schedule": {**schedule.as_dict(), "sigmas": [float(s) for s in sigmas]},
        "gaussian": {
            "rank": int(gaussian.rank_),
            "val_log_likelihood": {str(k): v for k, v in gaussian.val_log_likelihood_.items()},
        },
        "norm_sets": NORM_SETS,
        "detectors": detector_info,
        "tables": {
            "score_norms": "score_norms.parquet",
            "lowrank_norms": "lowrank_norms.parquet",
            "gaussian_norms": "gaussian_norms.parquet",
            "detector_scores": "detector_scores.parquet",
            "detection_metrics": "detection_metrics.parquet",
        },
        "arrays": {
            "voxel_scores": {
                "file": "voxel_scores.npy",
                "shape": "(subjects in score_norms order, scales, brain voxels in C order of the brain mask)",
                "dtype": "float16",
                "meaning": "sigma_i * s(x, sigma_i) at each brain voxel",
            }
        },
        "metrics": metrics.to_dict(orient="records"),
        "timings_s": dict(timings),
    }
