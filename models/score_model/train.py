"""Training loop of a score model: Adam, EMA of weights, validation loss, early stopping, resumable checkpoints.

The loop is generic over the model (anything called as ``model(x, sigma)``) and the data (a tensor of samples,
shape (N, ...)): the brain-volume U-Net and the 1-D toy MLP of the tests use the same machinery.

A checkpoint is written every ``checkpoint_every`` steps (atomically, see :mod:`models.checkpoint`) and carries
the model, its EMA, the optimiser, the random-number state and the history, so a killed run resumes from its last
checkpoint and ends with the same weights as an uninterrupted one (on the CPU; CUDA kernels need not be
deterministic). ``max_minutes`` counts the time of the current process only.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from models.score_model.losses import dsm_loss, get_dsm_loss_fn
from models.score_model.sde import VESchedule


@dataclass(frozen=True)
class TrainConfig:
    """Optimisation settings of a score model."""

    max_steps: int = 4000
    """Upper bound on optimiser steps (the run may stop earlier, see ``patience``)."""
    batch_size: int = 4
    learning_rate: float = 1e-3
    ema_decay: float = 0.999
    """Decay of the exponential moving average of the weights (warmed up over the first steps)."""
    validate_every: int = 250
    """Steps between validation losses (computed with the EMA weights, fixed sigmas and noise)."""
    patience: int = 6
    """Stop after this many validations without improvement; the best EMA weights are kept."""
    checkpoint_every: int = 500
    max_minutes: float | None = None
    """Wall-clock cap; the best weights so far are kept when it is reached (``None``: no cap)."""
    grad_clip: float = 1.0
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    """What training produced: the model holding the best EMA weights, and how it got there."""

    model: nn.Module
    steps: int
    best_val_loss: float
    history: dict[str, list[float]]
    stopped: str
    """Why training stopped: ``max_steps``, ``early_stopping`` or ``time_limit``."""
    seconds: float
    resumed_from_step: int


def _ema_update(ema: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                ema[name].mul_(decay).add_(value, alpha=1 - decay)
            else:
                ema[name].copy_(value)


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


def _resumable_state(checkpoint_path: str | Path | None, extra: dict) -> dict | None:
    """The training state saved at ``checkpoint_path`` for the same settings, or None (an unreadable one is
    reported and ignored: training starts over)."""
    if checkpoint_path is None or not Path(checkpoint_path).exists():
        return None
    try:
        state = load_checkpoint(checkpoint_path)
    except CheckpointError as exc:
        warnings.warn(f"{exc}; training starts from the beginning", stacklevel=3)
        return None
    return state if state.get("kind") == "training_state" and state.get("extra") == extra else None


def train_score_model(
    model: nn.Module,
    schedule: VESchedule,
    train: torch.Tensor,
    val: torch.Tensor,
    config: TrainConfig,
    *,
    weight: torch.Tensor | None = None,
    checkpoint_path: str | Path | None = None,
    checkpoint_extra: dict | None = None,
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
    train, val : tensors (N, ...)
        Clean training and validation samples (on the CPU; batches are moved to ``device``).
    config : TrainConfig
    weight : tensor broadcastable to one sample, optional
        Loss weights per element (the brain mask).
    checkpoint_path : path, optional
        Where the resumable checkpoint lives; an existing one is resumed (its ``extra`` must equal
        ``checkpoint_extra``, which should identify the configuration and the data).
    device : "cpu" or "cuda"
        On CUDA the forward pass runs under bfloat16 autocast.
    """
    start_time = time.perf_counter()
    volumetric = train.dim() == 5
    memory_format = torch.channels_last_3d if volumetric else torch.contiguous_format
    model.to(device=device, memory_format=memory_format)
    if weight is not None:
        weight = weight.to(device)
    optimiser = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
    generator = torch.Generator().manual_seed(config.seed)
    ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
    best_state = copy.deepcopy(ema)
    history: dict[str, list[float]] = {"step": [], "train_loss": [], "val_loss": []}
    step, best_val, bad_validations = 0, math.inf, 0
    extra = checkpoint_extra or {}
    stopped = ""

    running = None
    state = _resumable_state(checkpoint_path, extra)
    if state is not None:
        model.load_state_dict(state["model"])
        optimiser.load_state_dict(state["optimizer"])
        ema = {k: v.to(device) for k, v in state["ema"].items()}
        best_state = state["best"]
        history = state["history"]
        step, best_val, bad_validations = state["step"], state["best_val"], state["bad_validations"]
        generator.set_state(state["generator"])
        stopped, running = state["stopped"], state["running"]
    resumed_from = step

    def save() -> None:
        if checkpoint_path is not None:
            save_checkpoint(
                checkpoint_path,
                {
                    "kind": "training_state",
                    "extra": extra,
                    "model": model.state_dict(),
                    "optimizer": optimiser.state_dict(),
                    "ema": ema,
                    "best": best_state,
                    "history": history,
                    "step": step,
                    "best_val": best_val,
                    "bad_validations": bad_validations,
                    "generator": generator.get_state(),
                    "stopped": stopped,
                    "running": running,
                },
            )

    def to_device(x: torch.Tensor) -> torch.Tensor:
        return x.to(device).contiguous(memory_format=memory_format)

    val_device = to_device(val)
    eval_model = copy.deepcopy(model)
    if step == 0:
        # The untrained model's validation loss: what training improves on (for the Gaussian-residual score
        # network, the loss of the analytic Gaussian alone).
        initial = validation_loss(eval_model, schedule, val_device, weight, config.seed, config.batch_size)
        history.update(step=[0.0], train_loss=[math.nan], val_loss=[initial])
        best_val, best_state = initial, {k: v.clone() for k, v in ema.items()}
    cuda = device.startswith("cuda")
    loss_fn = get_dsm_loss_fn(schedule, weight)
    bar = tqdm(total=config.max_steps, initial=step, desc="training score model", unit="step", disable=not progress)
    model.train()
    while not stopped and step < config.max_steps:
        index = torch.randint(len(train), (config.batch_size,), generator=generator)
        batch = to_device(train[index])
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = loss_fn(model, batch, generator)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        optimiser.step()
        step += 1
        _ema_update(ema, model, min(config.ema_decay, (1 + step) / (10 + step)))
        value = loss.detach().item()
        running = value if running is None else 0.98 * running + 0.02 * value
        bar.update(1)
        if on_step is not None:
            on_step(step)
        if step % config.validate_every == 0 or step == config.max_steps:
            eval_model.load_state_dict(ema)
            val_loss = validation_loss(eval_model, schedule, val_device, weight, config.seed, config.batch_size)
            history["step"].append(float(step))
            history["train_loss"].append(float(running))
            history["val_loss"].append(val_loss)
            bar.set_postfix(train=f"{running:.4f}", val=f"{val_loss:.4f}")
            if val_loss < best_val:
                best_val, bad_validations = val_loss, 0
                best_state = {k: v.clone() for k, v in ema.items()}
            else:
                bad_validations += 1
            if bad_validations >= config.patience:
                stopped = "early_stopping"
                break
        if step % config.checkpoint_every == 0:
            save()
        if config.max_minutes is not None and time.perf_counter() - start_time > 60 * config.max_minutes:
            stopped = "time_limit"
            break
    bar.close()
    stopped = stopped or "max_steps"
    if not history["step"] or history["step"][-1] != step:
        eval_model.load_state_dict(ema)
        val_loss = validation_loss(eval_model, schedule, val_device, weight, config.seed, config.batch_size)
        history["step"].append(float(step))
        history["train_loss"].append(float(running) if running is not None else math.nan)
        history["val_loss"].append(val_loss)
        if val_loss < best_val:
            best_val, best_state = val_loss, {k: v.clone() for k, v in ema.items()}
    save()
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(
        model=model,
        steps=step,
        best_val_loss=float(best_val),
        history=history,
        stopped=stopped,
        seconds=time.perf_counter() - start_time,
        resumed_from_step=resumed_from,
    )
