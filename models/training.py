"""What every trainer of :mod:`models` shares: when to evaluate, early stopping on the validation loss with the best
state kept, one history format, and, for the step-based trainers of the score model and GNSM, the training state,
its resumable checkpoint and the result record.

The score model (:func:`models.score_model.train.train_score_model`) and the Spatial-MSMA flow
(:func:`models.spatial.flow.train_spatial_flow`) count optimiser steps and evaluate every few of them
(:func:`evaluation_due`); the norm-space flow (:class:`models.norm_flow.flow.FlowDetector`) counts epochs and
evaluates after each. All three stop after ``patience`` evaluations without a lower validation loss
(:class:`EarlyStopping`) and record their evaluations in a :class:`TrainingHistory`.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


def evaluation_due(step: int, every: int, last: int) -> bool:
    """Whether a step-based trainer evaluates after optimiser step ``step``: every ``every`` steps and at ``last``."""
    return step % every == 0 or step == last


@dataclass
class TrainingHistory:
    """The evaluations of one training run, in the order they were made (three lists of equal length).

    The unit of ``step`` is the trainer's: optimiser steps for the score model and the Spatial-MSMA flow, epochs
    for the norm-space flow; it is stored as float so that every list holds one number type. ``train_loss`` is the
    mean training loss since the previous evaluation (NaN for the evaluation of the untrained model) and
    ``val_loss`` the validation loss (NaN without validation data), both in the trainer's unit: the weighted
    denoising score-matching loss for the score model, the negative log-likelihood in nats per voxel (Spatial-MSMA)
    or per row (norm-space flow) for the flows.
    """

    step: list[float] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)

    def record(self, step: float, train_loss: float, val_loss: float) -> None:
        """Append one evaluation."""
        self.step.append(float(step))
        self.train_loss.append(float(train_loss))
        self.val_loss.append(float(val_loss))

    def as_dict(self) -> dict[str, list[float]]:
        """``{"step": [...], "train_loss": [...], "val_loss": [...]}``: what a run's ``run.json`` and a checkpoint
        store."""
        return {"step": list(self.step), "train_loss": list(self.train_loss), "val_loss": list(self.val_loss)}

    @classmethod
    def from_dict(cls, values: dict[str, list[float]]) -> TrainingHistory:
        """The history :meth:`as_dict` wrote."""
        return cls(list(values["step"]), list(values["train_loss"]), list(values["val_loss"]))


class EarlyStopping:
    """The best validation loss so far, its step and a snapshot of the state there; stop after ``patience``
    evaluations in a row without a strictly lower loss (a NaN loss never improves).

    Parameters
    ----------
    patience : int
        Evaluations without improvement after which :attr:`should_stop` is true.
    snapshot : callable () -> dict
        Returns a copy of the state to keep (the weights, or their moving average); called at every improvement.

    Attributes
    ----------
    best_loss : float
        Lowest validation loss so far (``inf`` before :meth:`start`).
    best_step : int
        Step (or epoch) of ``best_loss``.
    best_state : dict or None
        The snapshot taken at ``best_step``.
    bad_evaluations : int
        Evaluations since the last improvement.
    """

    def __init__(self, patience: int, snapshot: Callable[[], dict]):
        self.patience = patience
        self.snapshot = snapshot
        self.best_loss = math.inf
        self.best_step = 0
        self.best_state: dict | None = None
        self.bad_evaluations = 0

    def start(self, step: int, loss: float) -> None:
        """Take the untrained model's validation loss as the best so far, whatever it is: what training must beat."""
        self.best_loss, self.best_step, self.bad_evaluations = loss, step, 0
        self.best_state = self.snapshot()

    def update(self, step: int, loss: float) -> bool:
        """Record the validation loss after ``step``; True (and a new snapshot) when it is lower than the best."""
        if loss < self.best_loss:
            self.start(step, loss)
            return True
        self.bad_evaluations += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_evaluations >= self.patience


def ema_update(ema: dict[str, torch.Tensor], model: nn.Module, decay: float) -> None:
    """Move the moving average ``ema`` of ``model``'s state towards its current values by ``1 - decay`` (integer
    buffers are copied)."""
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                ema[name].mul_(decay).add_(value, alpha=1 - decay)
            else:
                ema[name].copy_(value)


class TrainingState:
    """What a step-based training run changes as it goes (weights, optimiser, learning-rate schedule, random
    state, moving average of the weights, early stopping, history), and its round trip through a checkpoint.

    Shared by the score model's trainer and GNSM's: each builds its optimiser (and optionally a schedule stepped
    after every optimiser step) and calls :meth:`optimise` once per step.
    """

    def __init__(self, model: nn.Module, optimiser: torch.optim.Optimizer, seed: int, patience: int,
                 schedule: torch.optim.lr_scheduler.LRScheduler | None = None):
        self.model = model
        self.optimiser = optimiser
        self.schedule = schedule
        self.generator = torch.Generator().manual_seed(seed)
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.stopper = EarlyStopping(patience, lambda: {k: v.clone() for k, v in self.ema.items()})
        self.history = TrainingHistory()
        self.step = 0
        self.stopped = ""
        self.running: float | None = None
        """Exponential moving average of the training loss (what the history reports as ``train_loss``)."""

    def optimise(self, loss: torch.Tensor, grad_clip: float, ema_decay: float) -> None:
        """One optimiser step on ``loss`` (gradient norm clipped to ``grad_clip``), the schedule's step, then the
        EMA (decay warmed up over the first steps) and the running training loss."""
        self.optimiser.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.model.parameters(), grad_clip)
        self.optimiser.step()
        if self.schedule is not None:
            self.schedule.step()
        self.step += 1
        ema_update(self.ema, self.model, min(ema_decay, (1 + self.step) / (10 + self.step)))
        value = loss.detach().item()
        self.running = value if self.running is None else 0.98 * self.running + 0.02 * value

    def payload(self, extra: dict) -> dict:
        payload = {
            "kind": "training_state",
            "extra": extra,
            "model": self.model.state_dict(),
            "optimizer": self.optimiser.state_dict(),
            "ema": self.ema,
            "best": self.stopper.best_state,
            "history": self.history.as_dict(),
            "step": self.step,
            "best_val": self.stopper.best_loss,
            "best_step": self.stopper.best_step,
            "bad_validations": self.stopper.bad_evaluations,
            "generator": self.generator.get_state(),
            "stopped": self.stopped,
            "running": self.running,
        }
        if self.schedule is not None:
            payload["schedule"] = self.schedule.state_dict()
        return payload

    def restore(self, state: dict, device: str = "cpu") -> None:
        self.model.load_state_dict(state["model"])
        self.optimiser.load_state_dict(state["optimizer"])
        if self.schedule is not None:
            self.schedule.load_state_dict(state["schedule"])
        self.ema = {k: v.to(device) for k, v in state["ema"].items()}
        self.stopper.best_state = state["best"]
        self.stopper.best_loss, self.stopper.bad_evaluations = state["best_val"], state["bad_validations"]
        self.stopper.best_step = state.get("best_step", 0)
        self.history = TrainingHistory.from_dict(state["history"])
        self.step = state["step"]
        self.generator.set_state(state["generator"])
        self.stopped, self.running = state["stopped"], state["running"]


@dataclass(frozen=True)
class TrainingCheckpoint:
    """Where the resumable training state lives, and what identifies the run it belongs to."""

    path: str | Path
    extra: dict = field(default_factory=dict)
    """Identity of the configuration and the data; a saved state is resumed only if its ``extra`` is equal."""


@dataclass
class TrainResult:
    """What training produced: the model holding the best EMA weights, and how it got there."""

    model: nn.Module
    steps: int
    best_val_loss: float
    history: dict[str, list[float]]
    """:meth:`models.training.TrainingHistory.as_dict`, ``step`` in optimiser steps, losses the DSM loss."""
    stopped: str
    """Why training stopped: ``max_steps``, ``early_stopping`` or ``time_limit``."""
    seconds: float
    resumed_from_step: int


def resumable_state(checkpoint: TrainingCheckpoint | None) -> dict | None:
    """The training state saved at the checkpoint's path for the same ``extra``, or None (an unreadable one is
    reported and ignored: training starts over)."""
    from models.checkpoint import CheckpointError, load_checkpoint

    if checkpoint is None or not Path(checkpoint.path).exists():
        return None
    try:
        state = load_checkpoint(checkpoint.path)
    except CheckpointError as exc:
        warnings.warn(f"{exc}; training starts from the beginning", stacklevel=3)
        return None
    return state if state.get("kind") == "training_state" and state.get("extra") == checkpoint.extra else None
