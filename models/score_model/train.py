"""Training loop of a score model: Adam, EMA of weights, validation loss, early stopping, resumable checkpoints.

The loop is generic over the model (anything called as ``model(x, sigma)``) and the data (a tensor of samples,
shape (N, ...)): the brain-volume U-Net and the 1-D toy MLP of the tests use the same machinery. Early stopping and
the history are those of every trainer of :mod:`models` (:mod:`models.training`).

A checkpoint is written every ``checkpoint_every`` steps (atomically, see :mod:`models.checkpoint`) and carries
the model, its EMA, the optimiser, the random-number state and the history, so a killed run resumes from its last
checkpoint and ends with the same weights as an uninterrupted one (on the CPU; CUDA kernels need not be
deterministic). ``max_minutes`` counts the time of the current process only.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from analysis.checks import check_int, check_positive_float
from models.checkpoint import save_checkpoint
from models.score_model.losses import dsm_loss, get_dsm_loss_fn
from models.score_model.sde import VESchedule
from models.training import TrainingCheckpoint, TrainingState, TrainResult, evaluation_due, resumable_state


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of a score model."""

    max_steps: int = 4000
    """Upper bound on optimiser steps (the run may stop earlier, see ``patience``)."""
    batch_size: int = 4
    learning_rate: float = 1e-3
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the weights, in [0, 1) (warmed up over the first steps)."""
    validate_every: int = 250
    """Steps between validation losses (computed with the EMA weights, fixed sigmas and noise)."""
    patience: int = 6
    """Stop after this many validations without improvement; the best EMA weights are kept."""
    checkpoint_every: int = 500
    max_minutes: float | None = None
    """Wall-clock cap; the best weights so far are kept when it is reached (``None``: no cap)."""
    grad_clip: float = 1.0
    """Largest norm of the gradient of all parameters together (larger ones are scaled down to it)."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "validate_every", "patience", "checkpoint_every"):
            check_int(getattr(self, name), name)
        check_int(self.seed, "seed", minimum=0)
        check_positive_float(self.learning_rate, "learning_rate")
        check_positive_float(self.grad_clip, "grad_clip")
        if self.max_minutes is not None:
            check_positive_float(self.max_minutes, "max_minutes")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1); received {self.ema_decay!r}")

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ScoreTrainingData:
    """The clean samples a score model is trained and validated on, and the loss weight of each element."""

    train: torch.Tensor
    """Training samples (N, ...) on the CPU (batches are moved to the training device)."""
    val: torch.Tensor
    """Validation samples (M, ...), same trailing shape."""
    weight: torch.Tensor | None = None
    """Loss weights broadcastable to one sample, e.g. the brain mask (1, D, H, W); ``None``: all elements count."""


def validation_loss(
    model: nn.Module, schedule: VESchedule, val: torch.Tensor, weight: torch.Tensor | None, seed: int, batch_size: int
) -> float:
    """DSM loss on ``val`` with a fixed set of sigmas and noise (same every call), for model selection."""
    generator = torch.Generator().manual_seed(seed + 7919)
    n_levels = 4
    sigmas = schedule.sigmas(n_levels)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for start in range(0, len(val), batch_size):
            x = val[start : start + batch_size]
            for level in range(n_levels):
                noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
                sigma = sigmas[level].expand(len(x)).to(x.device)
                total += float(dsm_loss(model, x, sigma, noise, weight)) * len(x)
                count += len(x)
    model.train()
    return total / count


def train_score_model(
    model: nn.Module,
    schedule: VESchedule,
    data: ScoreTrainingData,
    config: TrainConfig,
    *,
    checkpoint: TrainingCheckpoint | None = None,
    device: str = "cpu",
    progress: bool = True,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train ``model`` by sigma-weighted denoising score matching.

    Parameters
    ----------
    model : module called as ``model(x, sigma)``
    schedule : VESchedule
        Training sigmas are drawn log-uniformly from its range.
    data : ScoreTrainingData
        Clean training and validation samples and the loss weights.
    config : TrainConfig
    checkpoint : TrainingCheckpoint, optional
        Where the resumable state is saved; an existing one with the same ``extra`` is resumed.
    device : "cpu" or "cuda"
        On CUDA the forward pass runs under bfloat16 autocast.
    on_step : callable (step) -> None, optional
        Called after every optimiser step.
    """
    start_time = time.perf_counter()
    memory_format = torch.channels_last_3d if data.train.dim() == 5 else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    weight = None if data.weight is None else data.weight.to(device)
    run = TrainingState(model, torch.optim.Adam(model.parameters(), lr=config.learning_rate), config.seed,
                        config.patience)
    state = resumable_state(checkpoint)
    if state is not None:
        run.restore(state, device)
    resumed_from = run.step

    def save() -> None:
        if checkpoint is not None:
            save_checkpoint(checkpoint.path, run.payload(checkpoint.extra))

    def to_device(x: torch.Tensor) -> torch.Tensor:
        return x.to(device).contiguous(memory_format=memory_format)

    val_device = to_device(data.val)
    eval_model = copy.deepcopy(model)

    def validate() -> float:
        eval_model.load_state_dict(run.ema)
        return validation_loss(eval_model, schedule, val_device, weight, config.seed, config.batch_size)

    if run.step == 0:
        # The untrained model's validation loss: what training improves on (for the Gaussian-residual score
        # network, the loss of the analytic Gaussian alone).
        initial = validation_loss(eval_model, schedule, val_device, weight, config.seed, config.batch_size)
        run.history.record(0, math.nan, initial)
        run.stopper.start(0, initial)
    cuda = device.startswith("cuda")
    loss_fn = get_dsm_loss_fn(schedule, weight)
    bar = tqdm(total=config.max_steps, initial=run.step, desc="training score model", unit="step",
               disable=not progress)
    model.train()
    while not run.stopped and run.step < config.max_steps:
        index = torch.randint(len(data.train), (config.batch_size,), generator=run.generator)
        batch = to_device(data.train[index])
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(model, batch, run.generator)
        run.optimise(loss, config.grad_clip, config.ema_decay)
        bar.update(1)
        if on_step is not None:
            on_step(run.step)
        if evaluation_due(run.step, config.validate_every, config.max_steps):
            val_loss = validate()
            run.history.record(run.step, run.running, val_loss)
            bar.set_postfix(train=f"{run.running:.4f}", val=f"{val_loss:.4f}")
            run.stopper.update(run.step, val_loss)
            if run.stopper.should_stop:
                run.stopped = "early_stopping"
                break
        if run.step % config.checkpoint_every == 0:
            save()
        if config.max_minutes is not None and time.perf_counter() - start_time > 60 * config.max_minutes:
            run.stopped = "time_limit"
            break
    bar.close()
    run.stopped = run.stopped or "max_steps"
    if not run.history.step or run.history.step[-1] != run.step:
        # Stopped by the clock between validations: validate the weights it ended with too.
        val_loss = validate()
        run.history.record(run.step, run.running if run.running is not None else math.nan, val_loss)
        run.stopper.update(run.step, val_loss)
    save()
    model.load_state_dict(run.stopper.best_state)
    model.eval()
    return TrainResult(
        model=model,
        steps=run.step,
        best_val_loss=float(run.stopper.best_loss),
        history=run.history.as_dict(),
        stopped=run.stopped,
        seconds=time.perf_counter() - start_time,
        resumed_from_step=resumed_from,
    )
