"""Training a GNSM network (appendix A): AdamW with cosine decay of the learning rate, EMA of the weights, early
stopping on the loss of an inlier validation split, a progress bar and resumable checkpoints.

Validation uses the EMA weights, every scale for every validation row and the same noise at every evaluation, so
successive values compare the weights only. A checkpoint (written atomically every ``checkpoint_every`` steps)
carries the model, its EMA, the optimiser, the learning-rate schedule, the random state and the history: a killed
run resumes and ends with the weights an uninterrupted one would have (on the CPU).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from tqdm.auto import tqdm

from analysis.checks import check_int, check_positive_float
from models.checkpoint import save_checkpoint
from models.gnsm.losses import OBJECTIVES, get_loss_fn, gnsm_loss, perturb
from models.gnsm.network import GNSMNet
from models.training import TrainingCheckpoint, TrainingState, TrainResult, evaluation_due, resumable_state

VALIDATION_ROWS = 2000
"""At most this many validation rows are evaluated (each at every scale)."""


@dataclass(frozen=True)
class GNSMTrainConfig:
    """Optimisation settings (appendix A's, with a CPU-sized batch and step budget)."""

    max_steps: int = 2000
    """Upper bound on optimiser steps; the cosine schedule spans them (the paper: 600,000-2,000,000 on a GPU)."""
    batch_size: int = 512
    """Rows per step (the paper: 2,048; 512 for its small sets)."""
    learning_rate: float = 1e-3
    min_learning_rate: float = 1e-5
    weight_decay: float = 1e-4
    ema_decay: float = 0.999
    """Decay of the moving average of the weights (warmed up over the first steps)."""
    validate_every: int = 200
    patience: int = 5
    """Stop after this many validations without a lower loss; the best EMA weights are kept."""
    checkpoint_every: int = 500
    max_minutes: float | None = None
    grad_clip: float = 1.0
    objective: str = "kl"
    """``kl`` (eq. 4.12, the default: faster to converge) or ``mse`` (eq. 4.11)."""
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("max_steps", "batch_size", "validate_every", "patience", "checkpoint_every"):
            check_int(getattr(self, name), name)
        check_int(self.seed, "seed", minimum=0)
        for name in ("learning_rate", "min_learning_rate", "grad_clip"):
            check_positive_float(getattr(self, name), name)
        if not (isinstance(self.weight_decay, int | float) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0; received {self.weight_decay!r}")
        if self.max_minutes is not None:
            check_positive_float(self.max_minutes, "max_minutes")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in [0, 1); received {self.ema_decay!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}; received {self.objective!r}")

    def as_dict(self) -> dict:
        return asdict(self)


def validation_loss(net: GNSMNet, val: torch.Tensor, objective: str, seed: int, batch_size: int = 4096) -> float:
    """Mean loss of ``net`` on the clean validation rows ``val``, each at every scale, with noise drawn from a
    generator seeded by ``seed`` (the same every call)."""
    generator = torch.Generator().manual_seed(seed + 7919)
    rows = val[:VALIDATION_ROWS]
    n_scales = net.scales.n_scales
    clean = rows.repeat_interleave(n_scales, dim=0)
    scale = torch.arange(n_scales).repeat(len(rows))
    total = 0.0
    was_training = net.training
    net.eval()
    with torch.no_grad():
        for start in range(0, len(clean), batch_size):
            batch = perturb(net.layout, net.scales, clean[start : start + batch_size],
                            scale[start : start + batch_size], generator)
            output = net(batch.inputs, batch.scale)
            total += float(gnsm_loss(net.layout, net.scales, output, batch, objective)) * len(batch.scale)
    net.train(was_training)
    return total / len(clean)


def train_gnsm(net: GNSMNet, train: torch.Tensor, val: torch.Tensor, config: GNSMTrainConfig, *,
               checkpoint: TrainingCheckpoint | None = None, progress: bool = True,
               on_step: Callable[[int], None] | None = None) -> TrainResult:
    """Train ``net`` on clean rows ``train`` (N, width) (from :meth:`MixedLayout.clean_inputs`), stopping early on
    the loss of the clean rows ``val``; returns the net holding the best EMA weights (in eval mode). On the CPU."""
    start_time = time.perf_counter()
    optimiser = torch.optim.AdamW(net.parameters(), lr=config.learning_rate, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=config.max_steps,
                                                          eta_min=config.min_learning_rate)
    run = TrainingState(net, optimiser, config.seed, config.patience, schedule)
    state = resumable_state(checkpoint)
    if state is not None:
        run.restore(state)
    resumed_from = run.step
    eval_net = copy.deepcopy(net)

    def validate() -> float:
        eval_net.load_state_dict(run.ema)
        return validation_loss(eval_net, val, config.objective, config.seed)

    def save() -> None:
        if checkpoint is not None:
            save_checkpoint(checkpoint.path, run.payload(checkpoint.extra))

    if run.step == 0:
        initial = validation_loss(eval_net, val, config.objective, config.seed)
        run.history.record(0, math.nan, initial)
        run.stopper.start(0, initial)
    loss_fn = get_loss_fn(net.layout, net.scales, config.objective)
    bar = tqdm(total=config.max_steps, initial=run.step, desc="training GNSM", unit="step", disable=not progress)
    net.train()
    while not run.stopped and run.step < config.max_steps:
        index = torch.randint(len(train), (config.batch_size,), generator=run.generator)
        run.optimise(loss_fn(net, train[index], run.generator), config.grad_clip, config.ema_decay)
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
        if run.step % config.checkpoint_every == 0:
            save()
        if config.max_minutes is not None and time.perf_counter() - start_time > 60 * config.max_minutes:
            run.stopped = run.stopped or "time_limit"
    bar.close()
    run.stopped = run.stopped or "max_steps"
    if not run.history.step or run.history.step[-1] != run.step:
        val_loss = validate()
        run.history.record(run.step, run.running if run.running is not None else math.nan, val_loss)
        run.stopper.update(run.step, val_loss)
    save()
    net.load_state_dict(run.stopper.best_state)
    net.eval()
    return TrainResult(model=net, steps=run.step, best_val_loss=float(run.stopper.best_loss),
                       history=run.history.as_dict(), stopped=run.stopped,
                       seconds=time.perf_counter() - start_time, resumed_from_step=resumed_from)


@torch.no_grad()
def score_norms(net: GNSMNet, clean: torch.Tensor, point: str = "mode", batch_size: int = 4096) -> torch.Tensor:
    """Eq. 4.13: the L2 norm of the score estimate of each clean row at every scale, shape (N, L), float64, read
    at :meth:`~models.gnsm.losses.MixedLayout.read_out`'s ``point``.

    The norm runs over all of a row's entries, continuous and categorical together."""
    net.eval()
    n_scales = net.scales.n_scales
    norms = torch.empty(len(clean), n_scales, dtype=torch.float64)
    for start in range(0, len(clean), batch_size):
        rows = clean[start : start + batch_size]
        for i in range(n_scales):
            scale = torch.full((len(rows),), i, dtype=torch.long)
            inputs = net.layout.read_out(rows, net.scales, i, point)
            norms[start : start + len(rows), i] = torch.linalg.vector_norm(net.score(inputs, scale), dim=1).double()
    return norms
