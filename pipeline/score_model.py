"""Score-model stages: read the volumes, fit the Gaussian prior, train (or reuse) the score network, score every
subject at every scale, and the no-network baseline norms."""

from __future__ import annotations

import dataclasses
import os
import shutil
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.runs import layout
from analysis.runs.store import RunNotFound, read_run
from analysis.study.images import files_digest, load_images, normalise_intensity, subject_image_paths
from models.checkpoint import CheckpointError, load_score_model, save_score_model
from models.score_model.gaussian_prior import LowRankGaussian
from models.score_model.network import ScoreNet
from models.score_model.norms import score_norms
from models.score_model.sde import VESchedule, sigma_range_from_data
from models.score_model.train import ScoreTrainingData, TrainingCheckpoint, train_score_model
from pipeline import keys
from pipeline.context import RefreshContext, RefreshError


@dataclass
class ScoreModel:
    """The trained score model of a refresh and what it was trained from."""

    model: ScoreNet
    schedule: VESchedule
    sigmas: np.ndarray
    """(L,) the scales the norms are taken at."""
    gaussian: LowRankGaussian
    """The low-rank Gaussian prior the network's score is a residual on."""
    diagonal: LowRankGaussian
    """The per-voxel Gaussian (rank 0): a no-network baseline."""
    key: str
    data_digest: str
    """SHA-256 of the brain mask and the reference train/val images."""
    checkpoint: Path
    training: dict
    """Training record: ``reused`` and the trainer's metadata (steps, history, ...)."""


def read_volumes(ctx: RefreshContext) -> np.ndarray:
    """(subjects, D, H, W) float32 volumes in the run's subject order, intensity-normalised inside the brain."""
    images = load_images(ctx.study, ctx.split.ids, progress=ctx.progress)
    try:
        normalise_intensity(images, ctx.study.brain_mask, keys.NORMALISATION)
    except ValueError as exc:
        raise RefreshError(f"{ctx.study.manifest.subjects.table}: {exc}") from exc
    return images


def fit_score_model(ctx: RefreshContext, images: np.ndarray) -> ScoreModel:
    """The Gaussian priors, the noise schedule and the score network (trained, or reused from
    ``<output_dir>/models/`` when its key matches)."""
    study, split, mask = ctx.study, ctx.split, ctx.study.brain_mask
    train_images, val_images = images[split.rows(split.train)], images[split.rows(split.val)]
    train_brain = train_images[:, mask].astype(np.float64)
    with ctx.stage("gaussian"):
        gaussian = LowRankGaussian().fit(train_brain, val_images[:, mask])
        diagonal = LowRankGaussian(ranks=(0,)).fit(train_brain, val_images[:, mask])
    schedule = sigma_range_from_data(train_brain, sigma_min=gaussian.finest_sd_)
    data_digest = files_digest([study.manifest.template.brain_mask,
                                *subject_image_paths(study, split.train + split.val)])
    settings = {"net": ctx.profile.net.as_dict(), "train": ctx.profile.train.as_dict()}
    key = keys.score_model_key(settings, list(study.grid.shape), data_digest, split.train, split.val, ctx.seed)
    checkpoint = ctx.store.models_dir / f"score_model-{key}.pt"
    with ctx.stage("train"):
        training = _train_or_reuse(ctx, schedule, gaussian, (train_images, val_images), checkpoint, key,
                                   data_digest)
    schedule = training.pop("schedule")
    return ScoreModel(
        model=training.pop("model"), schedule=schedule, sigmas=schedule.sigmas(ctx.n_scales).numpy(),
        gaussian=gaussian, diagonal=diagonal, key=key, data_digest=data_digest, checkpoint=checkpoint,
        training=training,
    )


def _train_or_reuse(ctx: RefreshContext, schedule, gaussian, images: tuple[np.ndarray, np.ndarray],
                    checkpoint: Path, key: str, data_digest: str) -> dict:
    """The score network from ``checkpoint`` when it was trained on the same data, else a new one (saved there);
    returns ``model``, ``schedule``, ``reused`` and the trainer's metadata."""
    if checkpoint.is_file():
        try:
            model, stored_schedule, info = load_score_model(checkpoint)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; training a new score model", stacklevel=2)
        else:
            if info.get("data_hash") == data_digest:
                return {"model": model, "schedule": stored_schedule, "reused": True, **info["metadata"]}
    mask, train_images, val_images = ctx.study.brain_mask, *images
    torch.manual_seed(ctx.seed)
    model = ScoreNet(ctx.profile.net, ctx.study.grid.shape, rank=gaussian.rank_)
    mean_grid = np.zeros(mask.shape, np.float32)
    var_grid = np.ones(mask.shape, np.float32)
    factors = np.zeros((gaussian.rank_, *mask.shape), np.float32)
    mean_grid[mask], var_grid[mask], factors[:, mask] = gaussian.mean_, gaussian.diagonal_, gaussian.components_.T
    model.set_gaussian(torch.from_numpy(mean_grid), torch.from_numpy(var_grid), torch.from_numpy(factors))
    config = dataclasses.replace(ctx.profile.train, seed=ctx.seed)
    data = ScoreTrainingData(
        torch.from_numpy(train_images[:, None]),
        torch.from_numpy(val_images[:, None]),
        weight=torch.from_numpy(mask.astype(np.float32)),
    )
    result = train_score_model(
        model,
        schedule,
        data,
        config,
        checkpoint=TrainingCheckpoint(checkpoint.with_suffix(".training.pt"), {"model_key": key}),
        device=ctx.device,
        progress=ctx.progress,
    )
    metadata = {
        "steps": result.steps,
        "stopped": result.stopped,
        "best_val_loss": result.best_val_loss,
        "train_seconds": round(result.seconds, 2),
        "resumed_from_step": result.resumed_from_step,
        "history": result.history,
        "train_config": config.as_dict(),
        "device": ctx.device,
    }
    save_score_model(checkpoint, result.model.cpu(), schedule, data_hash=data_digest, metadata=metadata)
    checkpoint.with_suffix(".training.pt").unlink(missing_ok=True)
    return {"model": result.model, "schedule": schedule, "reused": False, **metadata}


def score_subjects(ctx: RefreshContext, images: np.ndarray, score: ScoreModel) -> tuple[dict[str, np.ndarray], dict]:
    """Every subject's norms at every scale from the network (writing the per-voxel values Spatial-MSMA needs into
    the staging folder), taken over from the published run when it was scored by the same network on the same
    volumes; and the two no-network baselines' norms. Returns the norm sets (name -> (subjects, L)) and the
    ``score_passes`` record."""
    study, mask, staging = ctx.study, ctx.study.brain_mask, ctx.staging
    ids = ctx.split.ids
    passes = keys.passes_key(
        files_digest([score.checkpoint]), ctx.device,
        files_digest([study.manifest.template.brain_mask, *subject_image_paths(study, ids)]), ids,
        [float(v) for v in score.sigmas],
    )
    previous = _previous_passes(ctx, passes)
    with ctx.stage("score_norms"):
        if previous is not None:
            # Same network, same volumes, same sigmas: the previous run's passes are these passes.
            columns = norm_columns(ctx.n_scales)
            norms = pd.read_parquet(previous / layout.SCORE_NORMS.name)[columns].to_numpy()
            link_or_copy(previous / layout.VOXEL_SCORES.name, staging / layout.VOXEL_SCORES.name)
        else:
            voxel_scores = np.lib.format.open_memmap(
                staging / layout.VOXEL_SCORES.name, mode="w+", dtype=np.float16,
                shape=(len(ids), ctx.n_scales, int(mask.sum())),
            )
            norms = score_norms(
                score.model, images, mask, score.sigmas, batch_size=ctx.profile.inference_batch,
                voxel_scores_out=voxel_scores, device=ctx.device, progress=ctx.progress,
            ).norms
            voxel_scores.flush()
            del voxel_scores
    with ctx.stage("baseline_norms"):
        brain = images[:, mask]
        baselines = {
            "lowrank": score.gaussian.score_norms(brain, score.sigmas),
            "gaussian": score.diagonal.score_norms(brain, score.sigmas),
        }
    record = {"key": passes, "reused_from_run": previous.name if previous is not None else None}
    return {"msma": norms, **baselines}, record


def _previous_passes(ctx: RefreshContext, passes: str) -> Path | None:
    """The published run whose score passes were made by the same network on the same volumes, if any."""
    try:
        latest = ctx.store.latest()
        record = read_run(latest).get("score_passes") or {}
    except (RunNotFound, OSError, ValueError):
        return None
    files_present = (latest / layout.SCORE_NORMS.name).is_file() and (latest / layout.VOXEL_SCORES.name).is_file()
    return latest if record.get("key") == passes and files_present else None


def norm_columns(n_scales: int) -> list[str]:
    """The score-norm columns of a run's norm tables: ``norm_00`` ... ``norm_<L-1>``."""
    return [f"norm_{i:02d}" for i in range(n_scales)]


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link ``source`` to ``target`` (runs share large files at no cost), or copy it across file systems."""
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
