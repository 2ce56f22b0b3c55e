"""Fingerprints that decide what a refresh may reuse, and the version constants that are part of them.

A checkpoint or a scoring pass is reused only when its key matches: the key hashes everything that changes what
it holds (settings, training data, code version). Bump a version constant when a code change alters what training
produces, so old checkpoints are not reused for the new method.
"""

from __future__ import annotations

import hashlib
import json

NORMALISATION = "brain_p99"
"""How subject intensities are normalised before the score model sees them (part of the score model's key)."""
TRAINING_VERSION = 2
"""Part of a score-model checkpoint's key."""
SPATIAL_VERSION = 3
"""Part of a Spatial-MSMA flow checkpoint's key."""
GNSM_VERSION = 1
"""Part of the refresh's GNSM checkpoint key."""


def _digest(payload: dict, *, sort_keys: bool) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=sort_keys).encode()).hexdigest()[:16]


def score_model_key(settings: dict, grid: list[int], data_digest: str, train_ids: list[str], val_ids: list[str],
                    seed: int) -> str:
    """The score model's key: network and training settings (``settings``: ``net`` and ``train`` dicts), grid,
    training-image digest, the exact train/val subjects and the seed."""
    return _digest(
        {
            "version": TRAINING_VERSION,
            **settings,
            "normalisation": NORMALISATION,
            "grid": grid,
            "data": data_digest,
            "train_ids": train_ids,
            "val_ids": val_ids,
            "seed": seed,
        },
        sort_keys=True,
    )


def passes_key(model_digest: str, device: str, images_digest: str, ids: list[str], sigmas: list[float]) -> str:
    """The scoring passes' key: the same network file on the same device over the same volumes at the same sigmas
    gives the same norms and voxel scores."""
    return _digest({"model": model_digest, "device": device, "images": images_digest, "ids": ids, "sigmas": sigmas},
                   sort_keys=False)


def spatial_key(model_key: str, data_digest: str, sigmas: list[float]) -> str:
    """What the Spatial-MSMA flows learn from: the score model, the sigmas and the reference train/val images (so
    adding subjects to other cohorts reuses the trained flows)."""
    return _digest({"model": model_key, "data": data_digest, "sigmas": sigmas}, sort_keys=False)


def flow_key(spatial: str, config: dict, train_ids: list[str], val_ids: list[str]) -> str:
    """A Spatial-MSMA flow checkpoint's key: :func:`spatial_key`, the flow's settings and its subjects."""
    return _digest(
        {"version": SPATIAL_VERSION, "data": spatial, "config": config, "train_ids": train_ids, "val_ids": val_ids},
        sort_keys=True,
    )


def gnsm_key(settings: dict, rows_digest: str, train_ids: list[str], val_ids: list[str]) -> str:
    """The refresh's GNSM network key: the manifest's ``gnsm:`` block, the tabular profile and the encoder
    (``settings``), the digest of the encoded training and validation rows (which holds the score norms when they
    join) and the exact train/val subjects."""
    return _digest(
        {"version": GNSM_VERSION, **settings, "rows": rows_digest, "train_ids": train_ids, "val_ids": val_ids},
        sort_keys=True,
    )
