"""Noise-conditioned 3D U-Net that estimates the score of VE-perturbed brain volumes.

The score parameterisation lives in exactly one place, :meth:`ScoreNet.forward`:

* ``"gaussian_residual"`` (default): ``s(x, sigma) = -(C + sigma^2 I)^{-1} (x - mu) + net(x, sigma) / sigma``, the
  analytic score of the Gaussian fitted to the training images (:mod:`models.score_model.gaussian_prior`: covariance
  ``C = W W^T + diag(var)``, rank 0 for a per-voxel Gaussian), perturbed by the same noise, plus a learned residual
  whose last layer starts at zero. At initialisation the model *is* the no-network Gaussian, so training only has to
  add what the Gaussian misses (the backend issue's prototype measured that a plain network trained for minutes on
  a CPU loses to the Gaussian score).
* ``"net_over_sigma"``: ``s(x, sigma) = net(x, sigma) / sigma`` (Song and Ermon's NCSN parameterisation).

Shapes: images are (batch, 1, D, H, W); sigma is (batch,). The network pads each spatial axis to a multiple of
``2 ** (len(channels) - 1)`` and crops back, so any grid works.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from analysis.checks import check_int

PARAMETERISATIONS = ("gaussian_residual", "net_over_sigma")


@dataclass(frozen=True)
class ScoreNetConfig:
    """Architecture of the score network.

    The default (channels 8-16-32, about 0.1 M parameters) trains at several steps per second on two CPU cores on
    the 6 mm demo grid; :data:`GPU_2MM` is the configuration for 2 mm grids on a GPU.
    """

    channels: tuple[int, ...] = (8, 16, 32)
    """Feature channels per resolution level (each level halves the grid)."""
    blocks_per_level: int = 1
    """Residual blocks per level on the way down (and again on the way up)."""
    groups: int = 4
    """GroupNorm groups (each level's channel count must be divisible by it)."""
    embedding_dim: int = 32
    """Width of the sigma embedding."""
    parameterisation: str = "gaussian_residual"
    """How the network output becomes a score; see the module docstring."""

    def __post_init__(self) -> None:
        if not self.channels:
            raise ValueError(f"channels: expected a non-empty list of positive integers, got {self.channels}")
        channels = tuple(check_int(c, f"channels[{i}]") for i, c in enumerate(self.channels))
        object.__setattr__(self, "channels", channels)
        check_int(self.groups, "groups")
        if any(c % self.groups for c in self.channels):
            raise ValueError(f"channels {self.channels} must all be divisible by groups={self.groups}")
        if self.parameterisation not in PARAMETERISATIONS:
            raise ValueError(f"parameterisation: expected one of {PARAMETERISATIONS}, got {self.parameterisation!r}")
        check_int(self.blocks_per_level, "blocks_per_level")
        if check_int(self.embedding_dim, "embedding_dim", minimum=2) % 2:
            raise ValueError(f"embedding_dim must be even (sine and cosine halves); received {self.embedding_dim}")

    def as_dict(self) -> dict:
        out = asdict(self)
        out["channels"] = list(self.channels)
        return out

    @classmethod
    def from_dict(cls, values: dict) -> ScoreNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown score-network settings {unknown}; expected some of {sorted(known)}")
        return cls(**values)


GPU_2MM = ScoreNetConfig(channels=(32, 64, 128, 256), blocks_per_level=2, groups=8, embedding_dim=128)
"""A larger network for 2 mm grids (about 96x112x80) on a GPU."""


class SigmaEmbedding(nn.Module):
    """Sinusoidal features of log(sigma) followed by a small MLP: (batch,) -> (batch, dim)."""

    def __init__(self, dim: int):
        super().__init__()
        self.register_buffer("frequencies", torch.exp(torch.linspace(0.0, math.log(64.0), dim // 2)), persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, sigma: torch.Tensor) -> torch.Tensor:
        angles = torch.log(sigma)[:, None] * self.frequencies[None, :] / 4.0
        return self.mlp(torch.cat([torch.sin(angles), torch.cos(angles)], dim=1))


class ResBlock(nn.Module):
    """GroupNorm-SiLU-Conv twice, with the sigma embedding added as a per-channel shift in between."""

    def __init__(self, c_in: int, c_out: int, embedding_dim: int, groups: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(min(groups, c_in), c_in)
        self.conv1 = nn.Conv3d(c_in, c_out, 3, padding=1)
        self.shift = nn.Linear(embedding_dim, c_out)
        self.norm2 = nn.GroupNorm(groups, c_out)
        self.conv2 = nn.Conv3d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.shift(emb)[:, :, None, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return h + self.skip(x)


class ScoreNet(nn.Module):
    """Noise-conditioned U-Net score model on one grid.

    Parameters
    ----------
    config : ScoreNetConfig
    grid_shape : tuple of 3 ints
        Spatial shape (D, H, W) of the images.
    rank : int
        Rank k of the low-rank part of the analytic Gaussian.
    """

    def __init__(self, config: ScoreNetConfig, grid_shape: tuple[int, int, int], rank: int = 0):
        super().__init__()
        self.config = config
        self.rank = int(rank)
        self.grid_shape = tuple(int(s) for s in grid_shape)
        ch, e, g = config.channels, config.embedding_dim, config.groups
        self.embed = SigmaEmbedding(e)
        self.stem = nn.Conv3d(1, ch[0], 3, padding=1)
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        c_prev = ch[0]
        for level, c in enumerate(ch):
            blocks = [ResBlock(c_prev if i == 0 else c, c, e, g) for i in range(config.blocks_per_level)]
            self.down.append(nn.ModuleList(blocks))
            c_prev = c
            if level < len(ch) - 1:
                self.downsample.append(nn.Conv3d(c, c, 3, stride=2, padding=1))
        self.up = nn.ModuleList()
        for level in range(len(ch) - 2, -1, -1):
            c = ch[level]
            blocks = [ResBlock(ch[level + 1] + c if i == 0 else c, c, e, g) for i in range(config.blocks_per_level)]
            self.up.append(nn.ModuleList(blocks))
        self.head_norm = nn.GroupNorm(g, ch[0])
        self.head = nn.Conv3d(ch[0], 1, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        # The analytic Gaussian part of the score: mean, residual variance and low-rank factors over the grid.
        self.register_buffer("voxel_mean", torch.zeros(1, 1, *self.grid_shape))
        self.register_buffer("voxel_var", torch.ones(1, 1, *self.grid_shape))
        self.register_buffer("low_rank", torch.zeros(self.rank, math.prod(self.grid_shape)))

    def set_gaussian(self, mean: torch.Tensor, var: torch.Tensor, low_rank: torch.Tensor | None = None) -> None:
        """Set the Gaussian: ``mean`` and residual ``var`` of shape ``grid_shape``; ``low_rank`` (k, D, H, W)."""
        self.voxel_mean.copy_(mean.reshape(self.voxel_mean.shape))
        self.voxel_var.copy_(var.reshape(self.voxel_var.shape))
        if self.rank:
            if low_rank is None:
                raise ValueError(f"this network has a rank-{self.rank} Gaussian: pass its low_rank factors")
            self.low_rank.copy_(low_rank.reshape(self.low_rank.shape))

    def gaussian_score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """``-(W W^T + diag(var + sigma^2))^{-1} (x - mean)`` per image (Woodbury: one k x k solve each).

        Always in float32, also under mixed-precision autocast: in bfloat16 this exact part loses several percent.
        """
        with torch.autocast(x.device.type, enabled=False):
            return self._gaussian_score(x, sigma)

    def _gaussian_score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        deviation = (x - self.voxel_mean).flatten(1).float()
        diagonal = self.voxel_var.flatten()[None, :] + sigma.float()[:, None] ** 2
        y = deviation / diagonal
        if self.rank:
            # The k x k system depends only on sigma: solve it once per distinct sigma in the batch.
            w = self.low_rank
            levels, which = torch.unique(sigma.float(), return_inverse=True)
            level_diagonal = self.voxel_var.flatten()[None, :] + levels[:, None] ** 2
            inner = torch.eye(self.rank, device=x.device) + torch.einsum("kv,bv,lv->bkl", w, 1.0 / level_diagonal, w)
            coefficients = torch.linalg.solve(inner[which], (y @ w.T).unsqueeze(-1)).squeeze(-1)
            y = y - (coefficients @ w) / diagonal
        return (-y).reshape(x.shape).to(x.dtype)

    def residual(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """The U-Net output ``net(x, sigma)``, shape like ``x``."""
        multiple = 2 ** (len(self.config.channels) - 1)
        spatial = x.shape[2:]
        pad = [(-s) % multiple for s in spatial]
        if any(pad):
            x = F.pad(x, (0, pad[2], 0, pad[1], 0, pad[0]))
        emb = self.embed(sigma)
        h = self.stem(x)
        skips = []
        for level, blocks in enumerate(self.down):
            for block in blocks:
                h = block(h, emb)
            if level < len(self.downsample):
                skips.append(h)
                h = self.downsample[level](h)
        for blocks in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[2:], mode="nearest")
            h = torch.cat([h, skip], dim=1)
            for block in blocks:
                h = block(h, emb)
        out = self.head(F.silu(self.head_norm(h)))
        return out[:, :, : spatial[0], : spatial[1], : spatial[2]]

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Score estimate s(x, sigma), shape (batch, 1, D, H, W), for images x and noise levels sigma (batch,)."""
        s = sigma.to(x.dtype)[:, None, None, None, None]
        learned = self.residual(x, sigma) / s
        if self.config.parameterisation == "net_over_sigma":
            return learned
        return self.gaussian_score(x, sigma) + learned


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
