"""ExpConcrete noise on one-hot categorical features, and the Gaussian noise of continuous ones (dissertation ch. 4).

A categorical feature with ``K`` levels is a one-hot vector ``x``; its logits are ``log alpha = log(x + delta)``
(:func:`onehot_logits`, the "clamped one-hot" of ch. 4.1, ``delta = 1e-5``). Noise at temperature ``lam`` draws an
ExpConcrete variable (eq. 4.1)::

    y_k = (log alpha_k + G_k) / lam - logsumexp_i((log alpha_i + G_i) / lam),   G_k ~ Gumbel(0, 1)

so ``exp(y)`` lies on the simplex: near the one-hot vertex for small ``lam``, near uniform for large ``lam``. Its
log-density (eq. 4.2, Maddison et al. 2017) and score (eq. 4.9) are::

    log p(y) = log (K-1)! + (K-1) log lam + sum_k (log alpha_k - lam y_k) - K logsumexp_k(log alpha_k - lam y_k)
    d/dy_j log p(y) = -lam + lam K softmax(log alpha - lam y)_j

What the temperature does not do: ``argmax_k y_k = argmax_k (log alpha_k + G_k)`` whatever ``lam``, so a noisy
value shows its column's level with probability ``(1 + delta) / (1 + K delta)`` at every scale (0.99997 for
``delta = 1e-5``): the temperature rescales the relaxation, it never hides the level. :class:`NoiseScales` can
therefore also grow ``delta`` with the scale index (``delta_max``), so that the top scales hide the level and a
network can only predict their noise from the row's other columns, as large Gaussian sigmas do for images.

The score is the gradient of ``log p`` as a function on R^K (the formula differentiated by :mod:`torch.autograd`
gives it exactly; the tests check this). ``softmax(log alpha - lam y)`` equals ``softmax(-G)`` for a sample drawn
as above: the "logit noise" the network predicts.

A table holds several categorical features of different sizes, concatenated: :class:`Blocks` computes each
feature's softmax and logsumexp over its own block. Temperatures are geometric from 2 to 20 over ``L = 20`` scales
by default, ascending (scale 0 has the least noise), as the MRI score model's sigmas are; continuous features use
Gaussian noise at sigmas geometric over the same scale index (:class:`NoiseScales`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch

DELTA = 1e-5
"""The clamp of a one-hot vector's zeros before the log (the reference implementation's ``eps``)."""


@dataclass(frozen=True)
class NoiseScales:
    """The ``n_scales`` noise levels: ExpConcrete temperatures for categorical features and Gaussian sigmas for
    continuous ones, both geometric and ascending, scale ``i`` pairing ``lam_i`` with ``sigma_i``."""

    lam_min: float = 2.0
    lam_max: float = 20.0
    sigma_min: float = 0.1
    sigma_max: float = 1.0
    n_scales: int = 20
    delta_min: float = DELTA
    """Smoothing of the one-hot location at scale 0: ``alpha = x + delta``."""
    delta_max: float = DELTA
    """Smoothing at the last scale, geometric in between. Equal to ``delta_min`` (the paper): every scale keeps
    each column's level recoverable from its noisy value (module docstring); larger: the top scales hide it."""

    def __post_init__(self) -> None:
        for low, high in (("lam_min", "lam_max"), ("sigma_min", "sigma_max"), ("delta_min", "delta_max")):
            lo, hi = getattr(self, low), getattr(self, high)
            if not (isinstance(lo, int | float) and isinstance(hi, int | float) and 0 < lo <= hi
                    and math.isfinite(hi)):
                raise ValueError(f"expected 0 < {low} <= {high} (finite numbers); received {low}={lo!r}, "
                                 f"{high}={hi!r}")
        if not isinstance(self.n_scales, int) or isinstance(self.n_scales, bool) or self.n_scales < 1:
            raise ValueError(f"n_scales must be a whole number >= 1; received {self.n_scales!r}")

    def temperatures(self) -> torch.Tensor:
        """``lam_0 < ... < lam_{L-1}``, shape (L,), float32."""
        return torch.from_numpy(np.geomspace(self.lam_min, self.lam_max, self.n_scales)).float()

    def sigmas(self) -> torch.Tensor:
        """``sigma_0 < ... < sigma_{L-1}``, shape (L,), float32."""
        return torch.from_numpy(np.geomspace(self.sigma_min, self.sigma_max, self.n_scales)).float()

    def deltas(self) -> torch.Tensor:
        """``delta_0 <= ... <= delta_{L-1}``, shape (L,), float32."""
        return torch.from_numpy(np.geomspace(self.delta_min, self.delta_max, self.n_scales)).float()

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> NoiseScales:
        return cls(**values)


class Blocks:
    """Softmax and logsumexp over each categorical feature's block of a concatenated vector.

    ``sizes`` are the features' numbers of levels ``K_d`` (each >= 2), in column order; a vector of shape
    (..., sum K) is gathered into a padded (..., D, K_max) array, padding set to -inf, so every block is reduced at
    once.
    """

    def __init__(self, sizes: tuple[int, ...] | list[int]):
        sizes = tuple(int(k) for k in sizes)
        if any(k < 2 for k in sizes):
            raise ValueError(f"every categorical feature needs at least 2 levels; received sizes {sizes}")
        self.sizes = sizes
        self.width = sum(sizes)
        self.k_max = max(sizes) if sizes else 0
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(int) if sizes else np.zeros(0, int)
        index = np.zeros((len(sizes), self.k_max), dtype=np.int64)
        valid = np.zeros((len(sizes), self.k_max), dtype=bool)
        for d, (start, k) in enumerate(zip(starts, sizes, strict=True)):
            index[d, :k] = np.arange(start, start + k)
            valid[d, :k] = True
        self._index = torch.from_numpy(index)
        self._valid = torch.from_numpy(valid)
        self._flat = self._index[self._valid]  # position of each padded-valid entry in the concatenated vector
        self.k = torch.tensor(sizes, dtype=torch.float32)
        """K_d per feature, shape (D,)."""
        self.k_per_entry = torch.repeat_interleave(self.k, torch.tensor(sizes, dtype=torch.long)) if sizes else \
            torch.zeros(0)
        """K_d of the feature each entry belongs to, shape (sum K,)."""

    def pad(self, x: torch.Tensor, fill: float = -math.inf) -> torch.Tensor:
        """(..., sum K) -> (..., D, K_max), padding ``fill``."""
        gathered = x[..., self._index.to(x.device)]
        return gathered.masked_fill(~self._valid.to(x.device), fill)

    def unpad(self, padded: torch.Tensor) -> torch.Tensor:
        """(..., D, K_max) -> (..., sum K), the inverse of :meth:`pad` on the valid entries."""
        return padded[..., self._valid.to(padded.device)]

    def softmax(self, x: torch.Tensor) -> torch.Tensor:
        return self.unpad(torch.softmax(self.pad(x), dim=-1))

    def log_softmax(self, x: torch.Tensor) -> torch.Tensor:
        return self.unpad(torch.log_softmax(self.pad(x), dim=-1))

    def logsumexp(self, x: torch.Tensor) -> torch.Tensor:
        """Per feature, shape (..., D)."""
        return torch.logsumexp(self.pad(x), dim=-1)

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        """Sum over each block, shape (..., D)."""
        return self.pad(x, 0.0).sum(dim=-1)

    def expand(self, per_feature: torch.Tensor) -> torch.Tensor:
        """A value per feature (..., D) repeated over its block, (..., sum K)."""
        return torch.repeat_interleave(per_feature, torch.tensor(self.sizes, device=per_feature.device), dim=-1)


def onehot_logits(onehot: torch.Tensor, blocks: Blocks, delta: float | torch.Tensor = DELTA) -> torch.Tensor:
    """``log alpha`` with ``alpha = x + delta`` (``delta`` a number or one per row, (B,)), each block normalised to
    logsumexp 0 (a point of the ExpConcrete support), shape like ``onehot``."""
    if isinstance(delta, torch.Tensor) and delta.dim() == 1:
        delta = delta[:, None]
    logits = torch.log(onehot + delta)
    return logits - blocks.expand(blocks.logsumexp(logits))


def relaxed_mode(logits: torch.Tensor, lam: torch.Tensor, blocks: Blocks) -> torch.Tensor:
    """Eq. 4.1 without the Gumbel noise: ``logits / lam`` normalised per block, the centre of the noise at
    temperature ``lam`` (B,)."""
    z = logits / lam.reshape(-1, 1)
    return z - blocks.expand(blocks.logsumexp(z))


def gumbel(shape: tuple[int, ...], generator: torch.Generator | None = None) -> torch.Tensor:
    """Standard Gumbel samples ``-log(-log U)``, U uniform on (0, 1), float32."""
    u = torch.rand(shape, generator=generator).clamp(1e-12, 1 - 1e-7)
    return -torch.log(-torch.log(u))


def sample_exp_concrete(logits: torch.Tensor, lam: torch.Tensor, blocks: Blocks, g: torch.Tensor) -> torch.Tensor:
    """Eq. 4.1 for every feature: ``(logits + g) / lam`` normalised per block; ``lam`` (B,) or (B, 1) per row,
    ``g`` Gumbel noise like ``logits``."""
    z = (logits + g) / lam.reshape(-1, 1)
    return z - blocks.expand(blocks.logsumexp(z))


def exp_concrete_log_density(y: torch.Tensor, logits: torch.Tensor, lam: torch.Tensor, blocks: Blocks) -> torch.Tensor:
    """Eq. 4.2 summed over the features: the log-density of ``y`` (B, sum K) under independent ExpConcrete
    distributions with location ``logits`` and temperature ``lam`` (B,), shape (B,). Differentiable in ``y``."""
    lam_b = lam.reshape(-1, 1)
    k = blocks.k.to(y.device)
    a = logits - lam_b * y
    per_feature = (torch.lgamma(k) + (k - 1) * torch.log(lam_b) + blocks.sum(a) - k * blocks.logsumexp(a))
    return per_feature.sum(dim=-1)


def exp_concrete_score(y: torch.Tensor, logits: torch.Tensor, lam: torch.Tensor, blocks: Blocks) -> torch.Tensor:
    """Eq. 4.9: ``-lam + lam K_d softmax_d(logits - lam y)`` for every entry, shape like ``y``."""
    lam_b = lam.reshape(-1, 1)
    return score_from_logit_noise(blocks.softmax(logits - lam_b * y), lam, blocks)


def score_from_logit_noise(probabilities: torch.Tensor, lam: torch.Tensor, blocks: Blocks) -> torch.Tensor:
    """The score parameterisation of ch. 4.1: ``s_j = -lam + lam K_d p_j`` from a per-block probability vector
    ``p`` (the softmax of the logit noise, estimated or true)."""
    lam_b = lam.reshape(-1, 1)
    return lam_b * (blocks.k_per_entry.to(probabilities.device) * probabilities - 1.0)
