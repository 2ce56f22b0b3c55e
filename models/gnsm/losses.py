"""The GNSM objectives (dissertation eq. 4.11 and 4.12) and Gaussian denoising score matching for continuous
columns, in one loss over a mixed batch.

The network returns, for every categorical entry, a logit-noise estimate ``e`` (its per-block softmax estimates
``softmax(-G)``) and, for every continuous column, ``-sigma`` times its score (the noise estimate; the score is
``-out / sigma``). With the true logit noise ``eps = logits - lam y`` (whose block softmax is ``softmax(-G)``):

- ``mse`` (eq. 4.11): ``sum_d lam^2 K_d^2 ||softmax_d(e) - softmax_d(eps)||^2``, which is exactly the squared
  error of the scores ``||s_theta - score||^2`` (eq. 4.9 is linear in the softmax);
- ``kl`` (eq. 4.12): ``sum_d lam^2 K_d^2 KL(softmax_d(eps) || softmax_d(e))``, faster to converge (ch. 4.1);
- continuous columns: ``||out - z||^2``, the sigma^2-weighted DSM loss of the MRI score model (eq. 2.5).

Each row's loss is the sum over its features; a batch's loss is the mean over rows. The weights ``lam^2 K_d^2``
are divided by ``lam_max^2`` so the loss stays of order one (a constant factor, which moves no optimum).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from models.gnsm.noise import Blocks, NoiseScales, gumbel, onehot_logits, relaxed_mode, sample_exp_concrete

OBJECTIVES = ("kl", "mse")


@dataclass(frozen=True)
class NoisyBatch:
    """One batch perturbed at one scale per row: the network's input and what it should predict."""

    inputs: torch.Tensor
    """(B, C + sum K): the continuous columns (noised) then the categorical entries (ExpConcrete samples)."""
    scale: torch.Tensor
    """(B,) long: each row's scale index."""
    lam: torch.Tensor
    """(B,) temperatures."""
    sigma: torch.Tensor
    """(B,) Gaussian sigmas."""
    logit_noise: torch.Tensor
    """(B, sum K): ``logits - lam y``, the true logit noise."""
    gaussian: torch.Tensor
    """(B, C): the standard normal noise of the continuous columns."""


class MixedLayout:
    """Where a row's features sit: ``n_continuous`` continuous columns first, then the categorical blocks."""

    def __init__(self, sizes: tuple[int, ...] | list[int], n_continuous: int):
        self.blocks = Blocks(sizes)
        self.n_continuous = int(n_continuous)
        if self.n_continuous < 0 or (self.n_continuous == 0 and not self.blocks.sizes):
            raise ValueError(f"a table needs at least one feature; received {len(self.blocks.sizes)} categorical "
                             f"and {n_continuous} continuous")
        self.width = self.n_continuous + self.blocks.width

    def split(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, width) -> continuous (B, C), categorical (B, sum K)."""
        return x[:, : self.n_continuous], x[:, self.n_continuous :]

    def clean_inputs(self, onehot: torch.Tensor, continuous: torch.Tensor) -> torch.Tensor:
        """A clean row as training and scoring take it: its standardised continuous values, then its one-hot
        vectors (the logits are formed at each scale's ``delta``)."""
        return torch.cat([continuous, onehot], dim=1)

    def read_out(self, clean: torch.Tensor, scales: NoiseScales, scale: int, point: str = "mode") -> torch.Tensor:
        """The network input at which a clean row's score is read at scale index ``scale``: its continuous values
        unchanged and, for the blocks, the noise-free relaxation at that scale (``point="mode"``, eq. 4.1 without
        the Gumbel noise) or the scale-0 logits themselves (``point="clean"``, the reference implementation's)."""
        continuous, onehot = self.split(clean)
        if point == "clean":
            return torch.cat([continuous, onehot_logits(onehot, self.blocks, scales.delta_min)], dim=1)
        if point != "mode":
            raise ValueError(f"point must be 'mode' or 'clean'; received {point!r}")
        logits = onehot_logits(onehot, self.blocks, float(scales.deltas()[scale]))
        return torch.cat([continuous, relaxed_mode(logits, scales.temperatures()[scale].expand(len(clean)),
                                                   self.blocks)], dim=1)


def perturb(layout: MixedLayout, scales: NoiseScales, clean: torch.Tensor, scale: torch.Tensor,
            generator: torch.Generator | None = None) -> NoisyBatch:
    """Noise ``clean`` (from :meth:`MixedLayout.clean_inputs`) at each row's scale index ``scale`` (B,)."""
    lam = scales.temperatures().to(clean.device)[scale]
    sigma = scales.sigmas().to(clean.device)[scale]
    continuous, onehot = layout.split(clean)
    logits = onehot_logits(onehot, layout.blocks, scales.deltas().to(clean.device)[scale])
    z = torch.randn(continuous.shape, generator=generator).to(clean.device)
    g = gumbel(tuple(logits.shape), generator).to(clean.device)
    y = sample_exp_concrete(logits, lam, layout.blocks, g)
    inputs = torch.cat([continuous + sigma[:, None] * z, y], dim=1)
    return NoisyBatch(inputs, scale, lam, sigma, logits - lam[:, None] * y, z)


def gnsm_loss(layout: MixedLayout, scales: NoiseScales, output: torch.Tensor, batch: NoisyBatch,
              objective: str = "kl") -> torch.Tensor:
    """Mean over the batch of the per-row loss (module docstring); ``output`` is the network's (B, width)."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}; received {objective!r}")
    blocks = layout.blocks
    out_cont, out_cat = layout.split(output.float())
    per_row = torch.zeros(output.shape[0], device=output.device)
    if blocks.sizes:
        weight = (batch.lam[:, None] * blocks.k.to(output.device)[None, :] / scales.lam_max) ** 2  # (B, D)
        log_q = blocks.log_softmax(out_cat)
        log_p = blocks.log_softmax(batch.logit_noise)
        if objective == "kl":
            per_feature = blocks.sum(log_p.exp() * (log_p - log_q))
        else:
            per_feature = blocks.sum((log_q.exp() - log_p.exp()) ** 2)
        per_row = per_row + (weight * per_feature).sum(dim=1)
    if layout.n_continuous:
        per_row = per_row + ((out_cont - batch.gaussian) ** 2).sum(dim=1)
    return per_row.mean()


def get_loss_fn(layout: MixedLayout, scales: NoiseScales, objective: str = "kl") -> Callable:
    """Closure ``loss_fn(net, clean, generator) -> loss``: each row at a uniformly drawn scale index."""
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}; received {objective!r}")

    def loss_fn(net, clean: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        scale = torch.randint(scales.n_scales, (clean.shape[0],), generator=generator).to(clean.device)
        batch = perturb(layout, scales, clean, scale, generator)
        return gnsm_loss(layout, scales, net(batch.inputs, batch.scale), batch, objective)

    return loss_fn
