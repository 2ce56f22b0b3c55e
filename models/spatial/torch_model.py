"""Spatial-MSMA's conditional normalizing flow as torch modules (dissertation ch. 5.2, Spatial-MSMA paper sec. 4).

The flow models ``p(s_p | p, h(x))``: the density of a voxel's patch score norms ``s_p`` (an L-vector, see
:mod:`models.spatial.patch_norms`) given the voxel's position ``p`` and a feature vector ``h(x)`` of the whole image.

- ``p`` enters as a fixed sinusoidal 3-D positional encoding: per axis, ``sin`` and ``cos`` of ``2^j pi u`` for
  ``j = 0 .. n_frequencies - 1``, with ``u`` the voxel index scaled to [0, 1] along that axis.
- ``h(x)`` comes from a small 3-D CNN (strided convolutions, global average pooling) over the brain-masked
  image; it is trained jointly with the flow. Every layer acts on one image at a time, so a subject's heatmap
  does not depend on the other subjects of its batch.
- The flow maps ``u = (log s_p - center(p)) / scale(p)`` (a fixed bijection; its Jacobian is part of the
  likelihood) through a conditional elementwise affine layer and ``n_blocks`` conditional affine couplings (RealNVP
  with the condition concatenated to the coupling networks' input) onto a conditional Gaussian mixture.
  ``center(p)`` and ``scale(p)`` are the mean and standard deviation of the log patch norms at voxel ``p`` over the
  reference training subjects (``standardisation="voxel"``, shrunk toward their averages over voxels): a
  position-conditional affine layer set from the data and then frozen, like ActNorm's data-dependent
  initialisation but per voxel. The typical level and spread of the
  patch norms differ strongly between positions (largest at the edge of the brain, where subjects' brain outlines
  move across the template's mask); taking them out first leaves the learned layers the shape of the distribution
  and its dependence on the image, and lowers the held-out NLL. ``standardisation="global"`` uses one mean and
  standard deviation per scale for every voxel (no position information: the unconditional baseline).

The heatmap of a subject starts from the negative log-likelihood ``-log p(s_p | p, h(x))`` of the patch norms at
every brain voxel (nats; higher = more anomalous). With ``calibrate`` (the default) it is then standardised voxel by
voxel against the reference training subjects' NLL there: the density's own spread still differs between positions,
and a subject's map is thresholded as a whole, so an NLL is read against what is typical at its voxel.

With ``conditional=False``, ``standardisation="global"`` and ``calibrate=False`` the same flow has no position, no
image context and no per-voxel reference: the baseline that shows what the context buys.

The modules do no I/O and no training: :mod:`models.spatial.flow` holds their settings and fits them.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from models.spatial.flow import SpatialFlowConfig

_MAX_LOG_SCALE = 3.0
"""Log-scales are ``tanh(raw) * 3``: one layer scales a coordinate by a factor in [e^-3, e^3]."""


def positional_encoding(mask: np.ndarray, n_frequencies: int) -> torch.Tensor:
    """Fixed sinusoidal encoding of every brain voxel's position: (n_brain_voxels, 6 * n_frequencies) float32.

    Per axis, ``sin`` and ``cos`` of ``2^j pi u`` for ``j = 0 .. n_frequencies - 1``, with ``u`` the voxel index
    scaled to [0, 1] along that axis.
    """
    coords = np.argwhere(np.asarray(mask, dtype=bool)).astype(np.float64)
    extent = np.maximum(np.asarray(mask.shape, dtype=np.float64) - 1.0, 1.0)
    u = coords / extent  # (V, 3) in [0, 1]
    angles = u[:, :, None] * (np.pi * 2.0 ** np.arange(n_frequencies))[None, None, :]  # (V, 3, F)
    encoding = np.concatenate([np.sin(angles), np.cos(angles)], axis=2).reshape(len(coords), -1)
    return torch.from_numpy(encoding.astype(np.float32))


class ContextEncoder(nn.Module):
    """Image -> feature vector: stride-2 3x3x3 convolutions with SiLU, global mean, linear map.

    No normalisation layer: GroupNorm would remove each image's intensity level and contrast, which are part of
    the context, and BatchNorm would make a subject's features depend on its batch.
    """

    def __init__(self, channels: tuple[int, ...], n_features: int):
        super().__init__()
        layers: list[nn.Module] = []
        previous = 1
        for width in channels:
            layers += [nn.Conv3d(previous, width, 3, stride=2, padding=1), nn.SiLU()]
            previous = width
        self.convs = nn.Sequential(*layers)
        self.head = nn.Linear(previous, n_features)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``images`` (b, D, H, W) -> (b, n_features); each image is processed on its own."""
        return self.head(self.convs(images[:, None]).mean(dim=(2, 3, 4)))


class _ConditionalAffine(nn.Module):
    """``y = x * exp(s(c)) + t(c)`` elementwise; a constant learned affine when there is no condition."""

    def __init__(self, n_features: int, n_condition: int, hidden: int):
        super().__init__()
        self.n_condition = n_condition
        if n_condition:
            self.net = nn.Sequential(nn.Linear(n_condition, hidden), nn.SiLU(), nn.Linear(hidden, 2 * n_features))
            nn.init.zeros_(self.net[-1].weight)
            nn.init.zeros_(self.net[-1].bias)
        else:
            self.raw = nn.Parameter(torch.zeros(2 * n_features))

    def _params(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raw = self.net(c) if self.n_condition else self.raw.expand(x.shape[0], -1)
        raw_s, t = raw.chunk(2, dim=-1)
        return torch.tanh(raw_s) * _MAX_LOG_SCALE, t

    def forward(self, x, c):
        s, t = self._params(x, c)
        return x * torch.exp(s) + t, s.sum(dim=-1)

    def inverse(self, y, c):
        s, t = self._params(y, c)
        return (y - t) * torch.exp(-s)


class _ConditionalCoupling(nn.Module):
    """``y = m x + (1 - m) (x exp(s(m x, c)) + t(m x, c))``: coordinates where ``mask`` is 1 pass unchanged."""

    def __init__(self, mask: torch.Tensor, n_condition: int, hidden: int):
        super().__init__()
        n = mask.numel()
        self.register_buffer("mask", mask)
        self.net = nn.Sequential(
            nn.Linear(n + n_condition, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(),
            nn.Linear(hidden, 2 * n),
        )
        nn.init.zeros_(self.net[-1].weight)  # every coupling starts as the identity
        nn.init.zeros_(self.net[-1].bias)

    def _params(self, kept, c):
        raw_s, t = self.net(torch.cat([kept, c], dim=-1)).chunk(2, dim=-1)
        free = 1.0 - self.mask
        return torch.tanh(raw_s) * _MAX_LOG_SCALE * free, t * free

    def forward(self, x, c):
        s, t = self._params(x * self.mask, c)
        return x * torch.exp(s) + t, s.sum(dim=-1)

    def inverse(self, y, c):
        s, t = self._params(y * self.mask, c)
        return (y - t) * torch.exp(-s)


def _coupling_masks(n_features: int, n_blocks: int) -> list[torch.Tensor]:
    """Alternate odd/even and low/high halves so every coordinate is conditioned on every other within 4 blocks."""
    index = torch.arange(n_features)
    patterns = [index % 2 == 0, index % 2 == 1, index < n_features // 2, index >= n_features // 2]
    return [patterns[b % 4].float() for b in range(n_blocks)]


class _ConditionalMixture(nn.Module):
    """Base density of the flow: a mixture of ``K`` diagonal Gaussians whose weights, means and scales are functions
    of the condition (constants without one); ``K = 1`` with zero output is the standard normal."""

    def __init__(self, n_features: int, n_condition: int, hidden: int, n_components: int):
        super().__init__()
        self.n_features, self.n_components, self.n_condition = n_features, n_components, n_condition
        n_out = n_components * (1 + 2 * n_features)
        if n_condition:
            self.net = nn.Sequential(nn.Linear(n_condition, hidden), nn.SiLU(), nn.Linear(hidden, n_out))
            last = self.net[-1]
        else:
            self.net = None
            last = nn.Linear(1, n_out)
            self.constant = last
        nn.init.zeros_(last.weight)
        with torch.no_grad():
            last.bias.zero_()
            # Spread the component means a little so the components can separate.
            means = torch.linspace(-1.0, 1.0, n_components) if n_components > 1 else torch.zeros(1)
            last.bias.view(n_components, 1 + 2 * n_features)[:, 1 : 1 + n_features] = means[:, None]

    def log_prob(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.net is not None:
            raw = self.net(c)
        else:
            raw = self.constant.bias.expand(z.shape[0], -1)
        raw = raw.view(z.shape[0], self.n_components, 1 + 2 * self.n_features)
        logits, mean, raw_log_sd = raw[..., 0], raw[..., 1 : 1 + self.n_features], raw[..., 1 + self.n_features :]
        log_sd = torch.tanh(raw_log_sd) * _MAX_LOG_SCALE
        standard = (z[:, None, :] - mean) * torch.exp(-log_sd)
        per_component = -0.5 * (standard**2).sum(-1) - log_sd.sum(-1) - 0.5 * self.n_features * math.log(2 * math.pi)
        return torch.logsumexp(torch.log_softmax(logits, dim=-1) + per_component, dim=-1)


class ConditionalFlow(nn.Module):
    """Conditional RealNVP on (rows, L) with a condition (rows, C); ``C = 0`` for an unconditional flow.

    The base density is a conditional mixture of ``n_components`` diagonal Gaussians (the Spatial-MSMA paper's
    "trainable conditional Gaussian mixture"); ``n_components = 1`` gives a conditional Gaussian.
    """

    def __init__(self, n_features: int, n_condition: int, n_blocks: int, hidden: int, n_components: int = 1):
        super().__init__()
        self.n_features = n_features
        self.affine = _ConditionalAffine(n_features, n_condition, hidden)
        self.blocks = nn.ModuleList(
            _ConditionalCoupling(m, n_condition, hidden) for m in _coupling_masks(n_features, n_blocks)
        )
        self.base = _ConditionalMixture(n_features, n_condition, hidden, n_components)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` -> ``z`` and ``log |det dz/dx|`` per row."""
        x, log_det = self.affine(x, c)
        for block in self.blocks:
            x, block_log_det = block(x, c)
            log_det = log_det + block_log_det
        return x, log_det

    def inverse(self, z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        for block in reversed(self.blocks):
            z = block.inverse(z, c)
        return self.affine.inverse(z, c)

    def log_prob(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        z, log_det = self(x, c)
        return self.base.log_prob(z, c) + log_det


class SpatialMSMA(nn.Module):
    """The trained model: standardisation of log patch norms, positional encoding, image encoder and flow.

    Everything needed to score a new subject on the same grid is in the module's state (buffers included), so a
    checkpoint of :meth:`state_dict` plus the config, the number of scales and the mask reproduces it.
    """

    def __init__(self, config: SpatialFlowConfig, n_scales: int, mask: np.ndarray):
        super().__init__()
        self.config = config
        self.n_scales = n_scales
        n_voxels = int(np.asarray(mask, dtype=bool).sum())
        self.register_buffer("center", torch.zeros(n_voxels, n_scales))
        self.register_buffer("scale", torch.ones(n_voxels, n_scales))
        self.register_buffer("brain_mask", torch.as_tensor(np.asarray(mask, dtype=bool)))
        self.register_buffer("nll_center", torch.zeros(n_voxels))
        self.register_buffer("nll_scale", torch.ones(n_voxels))
        if config.conditional:
            self.register_buffer("position", positional_encoding(mask, config.n_frequencies))
            self.encoder = ContextEncoder(tuple(config.context_channels), config.context_features)
            n_condition = self.position.shape[1] + config.context_features
        else:
            self.position = None
            self.encoder = None
            n_condition = 0
        self.flow = ConditionalFlow(n_scales, n_condition, config.n_blocks, config.hidden, config.n_components)

    # -- pieces ---------------------------------------------------------------------------------------------------
    def standardise(self, norms: torch.Tensor, voxels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Patch norms (b, m, L) at voxel indices (b, m) -> ``u = (log s - center) / scale`` and ``log |du/ds|``
        summed over scales (b, m)."""
        log_norms = torch.log(norms.clamp_min(1e-12))
        scale = self.scale[voxels]
        u = (log_norms - self.center[voxels]) / scale
        return u, -(log_norms + torch.log(scale)).sum(dim=-1)

    def context(self, images: torch.Tensor) -> torch.Tensor | None:
        """Image feature vectors (b, context_features) of brain-masked images (b, D, H, W); None if unconditional."""
        if self.encoder is None:
            return None
        return self.encoder(images * self.brain_mask)

    def condition(self, voxels: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Condition rows for voxel indices (b, m) of subjects with image features (b, F): (b, m, C)."""
        if self.encoder is None:
            return voxels.new_zeros((*voxels.shape, 0), dtype=torch.float32)
        position = self.position[voxels]
        return torch.cat([position, context[:, None, :].expand(-1, voxels.shape[1], -1)], dim=-1)

    def nll(self, norms: torch.Tensor, voxels: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        """Negative log-likelihood (b, m) of patch norms (b, m, L) at voxel indices (b, m)."""
        u, log_jacobian = self.standardise(norms, voxels)
        c = self.condition(voxels, context)
        b, m = voxels.shape
        log_p = self.flow.log_prob(u.reshape(b * m, -1), c.reshape(b * m, -1)).reshape(b, m)
        return -(log_p + log_jacobian)

    @torch.no_grad()
    def patch_nll(self, images: torch.Tensor, norms: torch.Tensor, voxel_chunk: int = 16384) -> torch.Tensor:
        """Per-voxel NLL (b, n_brain_voxels) of subjects given their images (b, D, H, W) and patch norms (b, V, L).

        Each subject is scored on its own, so the result does not depend on which subjects share the call.
        """
        out = torch.empty(norms.shape[:2])
        for i in range(len(images)):
            context = self.context(images[i : i + 1])
            for start in range(0, norms.shape[1], voxel_chunk):
                voxels = torch.arange(start, min(start + voxel_chunk, norms.shape[1]))[None]
                out[i, voxels[0]] = self.nll(norms[i : i + 1, voxels[0]], voxels, context)[0]
        return out

    @torch.no_grad()
    def heatmaps(self, images: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        """The anomaly score (b, n_brain_voxels) of every patch: :meth:`patch_nll`, standardised per voxel by the
        reference training subjects' NLL there when the model is calibrated (:meth:`calibrate`), else the NLL."""
        return (self.patch_nll(images, norms) - self.nll_center) / self.nll_scale

    @torch.no_grad()
    def calibrate(self, nll: torch.Tensor) -> None:
        """Set the per-voxel standardisation of :meth:`heatmaps` from reference NLLs (subjects, n_brain_voxels)."""
        self.nll_center.copy_(nll.mean(dim=0))
        self.nll_scale.copy_(nll.std(dim=0, correction=0).clamp_min(1e-6))
