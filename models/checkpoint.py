"""Checkpoints: written atomically, read with ``torch.load(..., weights_only=True)``, carrying their config.

A checkpoint holds only tensors, numbers, strings, lists and dicts, so the restricted unpickler of
``weights_only=True`` reads it and a tampered file cannot run code. A score-model checkpoint carries everything
needed to rebuild the model: the network config, the grid, the noise schedule and a fingerprint of the data it
was trained on.
"""

from __future__ import annotations

import io
import os

import torch

from analysis.study.volumes import atomic_write_bytes
from models.score_model.network import ScoreNet, ScoreNetConfig
from models.score_model.sde import VESchedule

FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: unreadable, of another kind or of an unknown format."""


def save_checkpoint(path: str | os.PathLike, payload: dict) -> None:
    """Write ``payload`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    buffer = io.BytesIO()
    torch.save({"format": FORMAT_VERSION, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | os.PathLike) -> dict:
    """Read a checkpoint with ``weights_only=True``; raises :class:`CheckpointError` naming the file."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
        raise CheckpointError(f"{path}: not a readable msma checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: expected an msma checkpoint of format {FORMAT_VERSION}")
    return payload


def save_score_model(
    path: str | os.PathLike, model: ScoreNet, schedule: VESchedule, *, data_hash: str, metadata: dict
) -> None:
    """Save a trained score model with its config, grid, schedule, data fingerprint and training metadata."""
    save_checkpoint(
        path,
        {
            "kind": "score_model",
            "net_config": model.config.as_dict(),
            "grid_shape": list(model.grid_shape),
            "rank": model.rank,
            "schedule": schedule.as_dict(),
            "data_hash": data_hash,
            "metadata": metadata,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        },
    )


def load_score_model(path: str | os.PathLike) -> tuple[ScoreNet, VESchedule, dict]:
    """Rebuild a score model from its checkpoint: (model in eval mode, schedule, the checkpoint's other fields)."""
    payload = load_checkpoint(path)
    if payload.get("kind") != "score_model":
        raise CheckpointError(f"{path}: expected a score-model checkpoint, found kind {payload.get('kind')!r}")
    try:
        config = ScoreNetConfig.from_dict(payload["net_config"])
        model = ScoreNet(config, tuple(payload["grid_shape"]), rank=int(payload["rank"]))
        model.load_state_dict(payload["state_dict"])
        schedule = VESchedule(**payload["schedule"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: inconsistent score-model checkpoint ({exc})") from exc
    model.eval()
    info = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, schedule, info


def save_spatial_model(path: str | os.PathLike, model, *, metadata: dict) -> None:
    """Save a trained Spatial-MSMA flow with its config, number of scales, brain mask and training metadata."""
    save_checkpoint(
        path,
        {
            "kind": "spatial_flow",
            "config": model.config.as_dict(),
            "n_scales": int(model.n_scales),
            "metadata": metadata,
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        },
    )


def load_spatial_model(path: str | os.PathLike):
    """Rebuild a Spatial-MSMA flow from its checkpoint: (model in eval mode, the checkpoint's other fields)."""
    from models.spatial.flow import SpatialFlowConfig
    from models.spatial.torch_model import SpatialMSMA

    payload = load_checkpoint(path)
    if payload.get("kind") != "spatial_flow":
        raise CheckpointError(f"{path}: expected a Spatial-MSMA checkpoint, found kind {payload.get('kind')!r}")
    try:
        config = SpatialFlowConfig.from_dict(payload["config"])
        state = payload["state_dict"]
        model = SpatialMSMA(config, int(payload["n_scales"]), state["brain_mask"].numpy())
        model.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: inconsistent Spatial-MSMA checkpoint ({exc})") from exc
    model.eval()
    return model, {k: v for k, v in payload.items() if k != "state_dict"}


def save_gnsm_model(path: str | os.PathLike, net, *, metadata: dict) -> None:
    """Save a trained GNSM network with its config, feature layout, noise scales and ``metadata`` (plain JSON-like
    values only: the table encoder, the training summary)."""
    save_checkpoint(
        path,
        {
            "kind": "gnsm",
            "net_config": net.config.as_dict(),
            "sizes": list(net.sizes),
            "n_continuous": int(net.n_continuous),
            "scales": net.scales.as_dict(),
            "metadata": metadata,
            "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
        },
    )


def load_gnsm_model(path: str | os.PathLike):
    """Rebuild a GNSM network from its checkpoint: (network in eval mode, the checkpoint's other fields)."""
    from models.gnsm.network import GNSMNet, GNSMNetConfig
    from models.gnsm.noise import NoiseScales

    payload = load_checkpoint(path)
    if payload.get("kind") != "gnsm":
        raise CheckpointError(f"{path}: expected a GNSM checkpoint, found kind {payload.get('kind')!r}")
    try:
        net = GNSMNet(GNSMNetConfig.from_dict(payload["net_config"]), tuple(payload["sizes"]),
                      int(payload["n_continuous"]), NoiseScales.from_dict(payload["scales"]))
        net.load_state_dict(payload["state_dict"])
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: inconsistent GNSM checkpoint ({exc})") from exc
    net.eval()
    return net, {k: v for k, v in payload.items() if k != "state_dict"}
