"""Training of Spatial-MSMA's conditional flow (:mod:`models.spatial.torch_model`) on patch score norms.

:func:`train_spatial_flow` sets the per-voxel (or global) standardisation of the log patch norms from the training
subjects (:func:`fit_standardisation`), fits the flow and the image encoder by maximum likelihood with early stopping
on a fixed validation sample (:mod:`models.training`), and calibrates the heatmaps against the training subjects.
:class:`SpatialFlowConfig` holds the architecture and the training settings together, so a checkpoint's config
says how its model was made.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from analysis.checks import check_int, check_positive_float
from models.spatial.torch_model import SpatialMSMA
from models.training import EarlyStopping, TrainingHistory, evaluation_due

STANDARDISATIONS = ("voxel", "global")
"""Values of :attr:`SpatialFlowConfig.standardisation`."""


@dataclass(frozen=True)
class SpatialFlowConfig:
    """Architecture and training of the Spatial-MSMA flow."""

    patch_size: int = 3
    """Edge k of the k^3 neighbourhood of the patch norms."""
    conditional: bool = True
    """False: no positional encoding and no image context (with ``standardisation="global"`` and
    ``calibrate=False``, the unconditional baseline)."""
    standardisation: str = "voxel"
    """``"voxel"``: the log patch norms are standardised per voxel and scale by the reference training subjects'
    mean and standard deviation there; ``"global"``: one mean and standard deviation per scale for all voxels."""
    standardisation_prior: float = 10.0
    """Per-voxel means and variances are shrunk toward their averages over voxels as if those came from this many
    extra subjects (a 4 % pull with 240 training subjects, a safeguard with a handful)."""
    calibrate: bool = True
    """Heatmaps in reference standard deviations: each voxel's NLL minus the training subjects' mean NLL there,
    over their standard deviation. False: the NLL in nats."""
    n_blocks: int = 6
    hidden: int = 128
    n_components: int = 4
    """Components of the conditional Gaussian-mixture base density."""
    n_frequencies: int = 5
    context_features: int = 16
    context_channels: tuple[int, ...] = (8, 16, 32)
    subjects_per_step: int = 8
    voxels_per_subject: int = 512
    max_steps: int = 1500
    """About 2 minutes on 2 cores for the demo (the image CNN's pass over 8 subjects dominates a step), which keeps
    the whole demo within its 15-minute budget; 3000 steps lower the validation NLL further but did not improve
    lesion detection (README, Spatial-MSMA)."""
    lr: float = 1e-3
    cosine_decay: bool = True
    """Anneal the learning rate to zero over ``max_steps`` along a half cosine."""
    weight_decay: float = 1e-5
    eval_every: int = 100
    patience: int = 5
    """Evaluations without a better validation NLL before training stops."""
    val_voxels_per_subject: int = 1024
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "context_channels", tuple(self.context_channels))
        for name in ("patch_size", "n_blocks", "hidden", "n_components", "n_frequencies", "context_features",
                     "subjects_per_step", "voxels_per_subject", "max_steps", "eval_every", "patience",
                     "val_voxels_per_subject"):
            check_int(getattr(self, name), name)
        for i, width in enumerate(self.context_channels):
            check_int(width, f"context_channels[{i}]")
        check_int(self.seed, "seed", minimum=0)
        check_positive_float(self.lr, "lr")
        if self.standardisation not in STANDARDISATIONS:
            raise ValueError(f"standardisation must be 'voxel' or 'global'; received {self.standardisation!r}")
        if not self.standardisation_prior >= 0:
            raise ValueError(f"standardisation_prior must be >= 0; received {self.standardisation_prior!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0; received {self.weight_decay!r}")

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, values: dict) -> SpatialFlowConfig:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items() if k in known})

@dataclass
class SpatialTrainingResult:
    """The trained flow (best evaluation's parameters, eval mode) and how training went."""

    model: SpatialMSMA
    steps: int
    """Optimiser steps run."""
    best_step: int
    """Step whose parameters were kept (0: the untrained flow)."""
    stopped: str
    """``max_steps`` or ``early_stopping``."""
    best_val_nll: float
    """Mean validation NLL (nats per voxel) of the kept parameters."""
    seconds: float
    history: dict[str, list[float]]
    """:meth:`models.training.TrainingHistory.as_dict`: ``step`` in optimiser steps, ``train_loss`` and ``val_loss``
    the mean NLL in nats per voxel."""


def fit_standardisation(
    norms: np.ndarray, rows, per_voxel: bool = True, prior: float = 10.0
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of the log patch norms of the given subjects, each (n_brain_voxels, L).

    ``per_voxel``: at each voxel and scale over the subjects, each shrunk toward its average over voxels as if that
    average came from ``prior`` extra subjects: the mean toward the mean over voxels, the variance toward the mean
    within-voxel variance (so the spread between voxels never inflates a voxel's variance). Otherwise one mean and
    standard deviation per scale over all subjects and voxels, repeated for every voxel.
    """
    rows = np.asarray(rows, dtype=int)
    n_voxels, n_scales = norms.shape[1:]
    first = np.zeros((n_voxels, n_scales))
    second = np.zeros((n_voxels, n_scales))
    for s in rows:
        log_norms = np.log(np.maximum(np.asarray(norms[s], dtype=np.float64), 1e-12))
        first += log_norms
        second += log_norms**2
    first /= len(rows)
    second /= len(rows)
    if per_voxel:
        variance = np.maximum(second - first**2, 0.0)
        weight = len(rows) / (len(rows) + prior)
        mean = weight * first + (1 - weight) * first.mean(axis=0)
        variance = weight * variance + (1 - weight) * variance.mean(axis=0)
    else:
        mean = np.broadcast_to(first.mean(axis=0), (n_voxels, n_scales))
        variance = np.broadcast_to(second.mean(axis=0) - first.mean(axis=0) ** 2, (n_voxels, n_scales))
    return np.array(mean), np.sqrt(np.maximum(variance, 1e-12))


def _check_subjects(images: np.ndarray, norms: np.ndarray, mask: np.ndarray, train_rows, val_rows) -> None:
    if len(train_rows) < 2 or len(val_rows) < 1:
        raise ValueError(
            f"the Spatial-MSMA flow needs at least 2 training and 1 validation subject; got {len(train_rows)} and "
            f"{len(val_rows)}"
        )
    if images.shape[0] != norms.shape[0] or tuple(images.shape[1:]) != tuple(mask.shape):
        raise ValueError(f"images {images.shape} do not match patch norms {norms.shape} and mask {mask.shape}")


def _validation_sample(
    norms: np.ndarray, val_rows: np.ndarray, count: int, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Voxel indices (n_val, m) drawn without replacement for each validation subject, and their patch norms
    (n_val, m, L) float32; ``m = min(count, n_brain_voxels)``."""
    n_voxels = norms.shape[1]
    voxels = torch.as_tensor(np.stack([rng.choice(n_voxels, min(count, n_voxels), replace=False) for _ in val_rows]))
    values = torch.as_tensor(
        np.stack([np.asarray(norms[r])[v.numpy()] for r, v in zip(val_rows, voxels, strict=True)]),
        dtype=torch.float32,
    )
    return voxels, values


def _training_batch(
    norms: np.ndarray, train_rows: np.ndarray, n_subjects: int, n_voxels: int, rng: np.random.Generator
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """``n_subjects`` training subjects drawn without replacement (their rows), ``n_voxels`` brain-voxel indices
    of each drawn uniformly (n_subjects, n_voxels), and their patch norms (n_subjects, n_voxels, L) float32."""
    subjects = rng.choice(train_rows, n_subjects, replace=False)
    voxels = rng.integers(0, norms.shape[1], (n_subjects, n_voxels))
    batch = torch.as_tensor(
        np.stack([np.asarray(norms[s])[v] for s, v in zip(subjects, voxels, strict=True)]), dtype=torch.float32
    )
    return subjects, torch.as_tensor(voxels), batch


def _learning_rate_factor(config: SpatialFlowConfig):
    """Multiplier of the learning rate after a number of steps: a half cosine to 0 at ``max_steps``, or 1."""
    if config.cosine_decay:
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, config.max_steps) / config.max_steps))
    return lambda step: 1.0


def train_spatial_flow(
    config: SpatialFlowConfig,
    images: np.ndarray,
    norms: np.ndarray,
    mask: np.ndarray,
    train_rows,
    val_rows,
    *,
    progress: bool = False,
) -> SpatialTrainingResult:
    """Fit the flow (and the image encoder) by maximum likelihood on patch norms of the training subjects.

    Each step draws ``subjects_per_step`` training subjects and ``voxels_per_subject`` brain voxels of each, uniformly.
    Every ``eval_every`` steps the mean NLL of a fixed sample of ``val_voxels_per_subject`` voxels of every
    validation subject is measured; training stops after ``patience`` evaluations without improvement (or at
    ``max_steps``) and keeps the parameters of the best evaluation. Torch randomness runs inside
    :func:`torch.random.fork_rng`, so the caller's RNG state is left as it was.

    Parameters
    ----------
    images : array (n_subjects, D, H, W)
        Intensity-normalised images (the input of the image encoder).
    norms : array (n_subjects, n_brain_voxels, L)
        Patch norms (:func:`models.spatial.patch_norms.patch_norms`).
    train_rows, val_rows : sequences of int
        Rows of ``images``/``norms`` to train on and to validate on (reference-cohort subjects).
    """
    train_rows, val_rows = np.asarray(train_rows, dtype=int), np.asarray(val_rows, dtype=int)
    _check_subjects(images, norms, mask, train_rows, val_rows)
    n_scales = norms.shape[2]
    start_time = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    center, scale = fit_standardisation(
        norms, train_rows, config.standardisation == "voxel", config.standardisation_prior
    )
    images_t = torch.as_tensor(np.asarray(images), dtype=torch.float32)
    val_voxels, val_norms = _validation_sample(norms, val_rows, config.val_voxels_per_subject, rng)
    val_images = images_t[val_rows]
    per_step = min(config.subjects_per_step, len(train_rows))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.seed)
        model = SpatialMSMA(config, n_scales, mask)
        model.center.copy_(torch.as_tensor(center, dtype=torch.float32))
        model.scale.copy_(torch.as_tensor(scale, dtype=torch.float32))
        optimiser = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, _learning_rate_factor(config))

        def validation() -> float:
            model.eval()
            with torch.no_grad():
                value = model.nll(val_norms, val_voxels, model.context(val_images)).mean().item()
            model.train()
            return value

        stopper = EarlyStopping(config.patience, lambda: copy.deepcopy(model.state_dict()))
        stopper.start(0, validation())
        history = TrainingHistory()
        history.record(0, math.nan, stopper.best_loss)
        stopped, running, running_n = "max_steps", 0.0, 0
        model.train()
        with tqdm(total=config.max_steps, desc="spatial flow", unit="step", disable=not progress) as bar:
            for step in range(1, config.max_steps + 1):
                subjects, voxels, batch = _training_batch(norms, train_rows, per_step, config.voxels_per_subject, rng)
                loss = model.nll(batch, voxels, model.context(images_t[subjects])).mean()
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                schedule.step()
                running, running_n = running + loss.item(), running_n + 1
                bar.update(1)
                if evaluation_due(step, config.eval_every, config.max_steps):
                    val = validation()
                    history.record(step, running / running_n, val)
                    bar.set_postfix(val_nll=f"{val:.3f}")
                    running, running_n = 0.0, 0
                    stopper.update(step, val)
                    if stopper.should_stop:
                        stopped = "early_stopping"
                        break
    model.load_state_dict(stopper.best_state)
    model.eval()
    if config.calibrate:
        model.calibrate(torch.cat([
            model.patch_nll(images_t[r : r + 1], torch.as_tensor(np.asarray(norms[r : r + 1]), dtype=torch.float32))
            for r in tqdm(train_rows, desc="calibrating heatmaps", unit="subject", disable=not progress)
        ]))
    return SpatialTrainingResult(
        model=model, steps=step, best_step=stopper.best_step, stopped=stopped, best_val_nll=stopper.best_loss,
        seconds=time.perf_counter() - start_time, history=history.as_dict(),
    )
