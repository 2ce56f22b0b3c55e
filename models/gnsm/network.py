"""The GNSM score network: the residual MLP of appendix A (eq. A.1-A.4).

::

    t = TimeEmbedding(scale)                                     Gaussian Fourier features of the scale, then an MLP
    h = Linear(x)
    h = h + Linear(FiLM(Linear(GELU(LayerNorm(h))), t))          x ``layers``, no dropout
    out = Linear(LeakyReLU(LayerNorm(h)))

FiLM (Perez et al. 2018) scales and shifts the hidden features by functions of ``t``. The output has one entry per
input entry: logit-noise estimates for the categorical blocks and noise estimates for the continuous columns
(:mod:`models.gnsm.losses`); :meth:`GNSMNet.score` turns them into scores (eq. 4.9 for the blocks, ``-out / sigma``
for the continuous columns). The second layer of every block starts at zero, so an untrained network's blocks are
identities (the head keeps PyTorch's default initialisation: a zero head would give every row the same zero score
norms, which the detector's log cannot take).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn

from models.gnsm.losses import MixedLayout
from models.gnsm.noise import NoiseScales, score_from_logit_noise


@dataclass(frozen=True)
class GNSMNetConfig:
    """Size of the residual MLP; unknown keys fail in :meth:`from_dict`."""

    width: int = 128
    """Features of every hidden layer (the paper: 1024)."""
    layers: int = 4
    """Residual blocks (the paper: 20)."""
    embedding_dim: int = 64
    """Size of the scale embedding (the paper: 128)."""
    fourier_scale: float = 16.0
    """Standard deviation of the Gaussian Fourier frequencies of the scale embedding."""

    def __post_init__(self) -> None:
        for name in ("width", "layers", "embedding_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a whole number >= 1; received {value!r}")
        if self.embedding_dim % 2:
            raise ValueError(f"embedding_dim must be even (sine and cosine pairs); received {self.embedding_dim}")
        if not (isinstance(self.fourier_scale, int | float) and self.fourier_scale > 0):
            raise ValueError(f"fourier_scale must be a positive number; received {self.fourier_scale!r}")

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> GNSMNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown GNSM network settings {unknown}; expected some of {sorted(known)}")
        return cls(**values)


PAPER = GNSMNetConfig(width=1024, layers=20, embedding_dim=128)
"""The configuration of the dissertation's tabular experiments (appendix A), for a GPU."""


class FourierEmbedding(nn.Module):
    """Gaussian Fourier projection of the scale position ``t`` in [0, 1], then Linear-GELU-Linear."""

    def __init__(self, dim: int, scale: float, seed: int = 0):
        super().__init__()
        frequencies = torch.randn(dim // 2, generator=torch.Generator().manual_seed(seed)) * scale
        self.register_buffer("frequencies", frequencies)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        angles = 2 * math.pi * t[:, None] * self.frequencies[None, :]
        return self.mlp(torch.cat([torch.sin(angles), torch.cos(angles)], dim=1))


class FiLM(nn.Module):
    """``h * (1 + gamma(t)) + beta(t)``."""

    def __init__(self, embedding_dim: int, width: int):
        super().__init__()
        self.linear = nn.Linear(embedding_dim, 2 * width)

    def forward(self, h: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        gamma, beta = self.linear(t).chunk(2, dim=1)
        return h * (1 + gamma) + beta


class ResBlock(nn.Module):
    """``x + Linear(FiLM(Linear(GELU(LayerNorm(x))), t))`` (appendix A's TabResBlockpp, dropout 0)."""

    def __init__(self, width: int, embedding_dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.dense_1 = nn.Linear(width, width)
        self.act = nn.GELU()
        self.film = FiLM(embedding_dim, width)
        self.dense_2 = nn.Linear(width, width)
        nn.init.zeros_(self.dense_2.weight)
        nn.init.zeros_(self.dense_2.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return x + self.dense_2(self.film(self.dense_1(self.act(self.norm(x))), t))


class GNSMNet(nn.Module):
    """Noise-conditional score network of a table's rows.

    Parameters
    ----------
    config : GNSMNetConfig
    sizes : levels ``K_d`` of each categorical feature, in column order
    n_continuous : number of continuous columns (they come first in a row)
    scales : NoiseScales
    """

    def __init__(self, config: GNSMNetConfig, sizes: tuple[int, ...] | list[int], n_continuous: int,
                 scales: NoiseScales):
        super().__init__()
        self.config = config
        self.layout = MixedLayout(sizes, n_continuous)
        self.scales = scales
        self.register_buffer("temperatures", scales.temperatures())
        self.register_buffer("sigmas", scales.sigmas())
        self.embed = FourierEmbedding(config.embedding_dim, config.fourier_scale)
        self.stem = nn.Linear(self.layout.width, config.width)
        self.blocks = nn.ModuleList(ResBlock(config.width, config.embedding_dim) for _ in range(config.layers))
        self.head = nn.Sequential(nn.LayerNorm(config.width), nn.LeakyReLU(), nn.Linear(config.width,
                                                                                         self.layout.width))

    @property
    def sizes(self) -> tuple[int, ...]:
        return self.layout.blocks.sizes

    @property
    def n_continuous(self) -> int:
        return self.layout.n_continuous

    def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Raw output (B, width) for inputs ``x`` (B, width) at scale indices ``scale`` (B,)."""
        t = scale.float() / max(self.scales.n_scales - 1, 1)
        emb = self.embed(t)
        h = self.stem(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.head(h)

    def score(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        """Score estimates (B, width): ``-out / sigma`` for the continuous columns, eq. 4.9 for the blocks."""
        out = self.forward(x, scale)
        out_cont, out_cat = self.layout.split(out)
        lam = self.temperatures[scale]
        parts = []
        if self.n_continuous:
            parts.append(-out_cont / self.sigmas[scale][:, None])
        if self.sizes:
            parts.append(score_from_logit_noise(self.layout.blocks.softmax(out_cat), lam, self.layout.blocks))
        return torch.cat(parts, dim=1)
