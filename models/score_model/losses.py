"""Denoising score matching with sigma weighting (dissertation eq. 2.5, lambda(sigma) = sigma^2).

With ``x_noisy = x + sigma z`` the target score is ``-(x_noisy - x) / sigma^2 = -z / sigma``; weighting by sigma^2
makes every scale contribute on the same footing: ``lambda * ||s - target||^2 = ||sigma s(x_noisy, sigma) + z||^2``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from models.score_model.sde import VESchedule

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def dsm_loss(
    score_fn: ScoreFn,
    x: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """Sigma-weighted denoising score-matching loss, averaged over the batch.

    Parameters
    ----------
    score_fn : callable (x_noisy, sigma) -> score, shapes (B, ...) and (B,) -> (B, ...)
    x : tensor (B, ...)
        Clean samples.
    sigma : tensor (B,)
        Noise level of each sample.
    noise : tensor like ``x``
        Standard normal noise z.
    weight : tensor broadcastable to ``x[0]``, optional
        Per-element weights (the brain mask for images); the squared error is averaged with these weights.

    Returns
    -------
    Scalar tensor: mean over the batch of ``0.5 * sum(weight * (sigma s + z)^2) / sum(weight)``.
    """
    shape = (-1,) + (1,) * (x.dim() - 1)
    s = sigma.reshape(shape)
    residual = s * score_fn(x + s * noise, sigma) + noise
    squared = residual.float() ** 2
    if weight is None:
        per_sample = squared.flatten(1).mean(dim=1)
    else:
        w = weight.float().expand_as(squared[0]).flatten()
        per_sample = (squared.flatten(1) * w).sum(dim=1) / w.sum()
    return 0.5 * per_sample.mean()


def get_dsm_loss_fn(schedule: VESchedule, weight: torch.Tensor | None = None):
    """Closure ``loss_fn(score_fn, x, generator) -> loss`` drawing sigma (log-uniform) and the noise itself."""

    def loss_fn(score_fn: ScoreFn, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        sigma = schedule.sample_sigmas(x.shape[0], generator).to(x.device)
        noise = torch.randn(x.shape, generator=generator).to(device=x.device, dtype=x.dtype)
        return dsm_loss(score_fn, x, sigma, noise, weight)

    return loss_fn
