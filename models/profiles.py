"""Named settings of the score model for ``msma refresh --profile``.

* ``default``: the CPU-sized network for grids of 4-6 mm (the demo trains it in minutes on two cores);
* ``gpu-2mm``: the larger network for 2 mm grids on a GPU;
* ``fast``: a tiny network and a few steps, for tests and smoke runs (its scores mean little).
"""

from __future__ import annotations

from dataclasses import dataclass

from models.score_model.network import GPU_2MM, ScoreNetConfig
from models.score_model.train import TrainConfig
from models.spatial.flow import SpatialFlowConfig


@dataclass(frozen=True)
class Profile:
    name: str
    net: ScoreNetConfig
    train: TrainConfig
    flow_epochs: int
    """Epochs of the norm-space flow detector."""
    inference_batch: int
    """Subjects per forward pass (all at one scale) when extracting score norms."""
    spatial: SpatialFlowConfig = SpatialFlowConfig()
    """Spatial-MSMA's conditional flow (its patch size and seed come from the manifest's ``model`` block)."""


PROFILES = {
    "default": Profile(
        "default",
        ScoreNetConfig(),
        TrainConfig(max_steps=3000, batch_size=4, validate_every=250, patience=4, checkpoint_every=250),
        flow_epochs=300,
        inference_batch=4,
    ),
    "gpu-2mm": Profile(
        "gpu-2mm",
        GPU_2MM,
        TrainConfig(max_steps=60000, batch_size=4, validate_every=1000, patience=8, checkpoint_every=1000),
        flow_epochs=300,
        inference_batch=8,
    ),
    "fast": Profile(
        "fast",
        ScoreNetConfig(channels=(4, 8), groups=2, embedding_dim=8),
        TrainConfig(max_steps=30, batch_size=2, validate_every=10, patience=3, checkpoint_every=10),
        flow_epochs=20,
        inference_batch=8,
        spatial=SpatialFlowConfig(
            n_blocks=2, hidden=16, n_frequencies=2, context_features=4, context_channels=(4,), subjects_per_step=2,
            voxels_per_subject=64, max_steps=20, eval_every=5, patience=2, val_voxels_per_subject=64,
        ),
    ),
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {sorted(PROFILES)}")
    return PROFILES[name]
