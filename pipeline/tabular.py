"""GNSM on a table: fit the score network on a table's inlier rows, score any table with it (``msma tabular``).

A fitted model is one folder:

- ``gnsm.pt``: the network (weights, config, feature layout, noise scales), the table encoder (levels, the
  continuous columns' inlier means and SDs), the schema it was fitted with, and the inlier rows' score norms the
  detector is fitted on (all read back with ``torch.load(..., weights_only=True)``);
- ``fit.json``: what was fitted, on what, how long it trained and why it stopped;
- ``scores.parquet`` and ``scores.csv``: the fitted table's rows scored.

The anomaly score of a row is MSMA's: the L-vector of its score norms (one per noise scale, eq. 4.13) under a
Gaussian mixture fitted on the inlier rows' norms, components chosen by held-out likelihood (higher = more
anomalous). The mixture is refitted from the stored norms when scoring (deterministic, a second at most), so the
folder holds tensors and plain values only.

A fit writes into a staging folder and renames it into place at the end; a failed fit leaves an existing folder
as it was.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from analysis.detection.detectors import GaussianMixtureDetector
from analysis.runs.store import write_table
from analysis.study.volumes import atomic_write_bytes, swap_in_folder
from analysis.tabular.encoding import EncodedTable, TableEncoder, fit_encoder, load_table
from analysis.tabular.schema import TabularError, TabularSchema, load_schema
from models.checkpoint import CheckpointError, load_gnsm_model, save_gnsm_model
from models.gnsm.losses import MixedLayout
from models.gnsm.network import PAPER, GNSMNet, GNSMNetConfig
from models.gnsm.noise import NoiseScales
from models.gnsm.train import GNSMTrainConfig, score_norms, train_gnsm
from models.training import TrainingCheckpoint, TrainResult

MODEL_FILE = "gnsm.pt"
FIT_FILE = "fit.json"
SCORES_FILE = "scores.parquet"
VALIDATION_FRACTION = 0.1
"""Share of the inlier rows held out for early stopping (the rest trains the network)."""


@dataclass(frozen=True)
class TabularProfile:
    """A named size of the GNSM network and its training, with the noise it learns and where its scores are read."""

    name: str
    net: GNSMNetConfig
    train: GNSMTrainConfig
    scales: NoiseScales = field(default_factory=NoiseScales)
    read_out: str = "clean"
    """Where a row's score norms are read (:meth:`models.gnsm.losses.MixedLayout.read_out`)."""


@dataclass(frozen=True)
class Variant:
    """How the categorical noise and the read-out point are set (docs/gnsm.md measures each)."""

    name: str
    delta_max: float
    read_out: str
    description: str


VARIANTS = {
    "paper": Variant("paper", 1e-5, "clean", "the reference implementation: alpha = x + 1e-5 at every scale, "
                     "scores read at the clean logits"),
    "paper-mode": Variant("paper-mode", 1e-5, "mode", "alpha = x + 1e-5 at every scale, scores read at each "
                          "scale's noise-free relaxation"),
    "smoothed": Variant("smoothed", 1.0, "mode", "alpha = x + delta, delta geometric from 1e-5 to 1 over the "
                        "scales (the top scales hide each level), scores read at each scale's noise-free relaxation"),
}
DEFAULT_VARIANT = "paper"


PROFILES = {
    "default": TabularProfile("default", GNSMNetConfig(width=128),
                              GNSMTrainConfig(max_steps=2000, validate_every=200, patience=5)),
    "paper": TabularProfile("paper", PAPER, GNSMTrainConfig(max_steps=1_000_000, batch_size=2048,
                                                            validate_every=10_000, checkpoint_every=10_000,
                                                            patience=10)),
    "fast": TabularProfile("fast", GNSMNetConfig(width=32, layers=1, embedding_dim=8),
                           GNSMTrainConfig(max_steps=40, batch_size=64, validate_every=20, patience=2),
                           NoiseScales(n_scales=6)),
}
"""``default``: sized for 2 CPU cores (a 10,000-row, 40-column table in minutes); ``paper``: appendix A's
network and step budget, for a GPU; ``fast``: a tiny model for tests and smoke runs (its scores mean little)."""


@dataclass(frozen=True)
class FitOptions:
    profile: str = "default"
    objective: str | None = None
    """``kl`` or ``mse``; ``None``: the profile's (kl)."""
    seed: int = 0
    max_minutes: float | None = None
    progress: bool = True
    variant: str = DEFAULT_VARIANT


def get_profile(options: FitOptions) -> TabularProfile:
    if options.profile not in PROFILES:
        raise TabularError("msma tabular", "--profile", f"one of {sorted(PROFILES)}", repr(options.profile))
    if options.variant not in VARIANTS:
        raise TabularError("msma tabular", "--variant", f"one of {sorted(VARIANTS)}", repr(options.variant))
    profile = PROFILES[options.profile]
    variant = VARIANTS[options.variant]
    changes = {"seed": options.seed}
    if options.objective is not None:
        changes["objective"] = options.objective
    if options.max_minutes is not None:
        changes["max_minutes"] = options.max_minutes
    train = GNSMTrainConfig(**{**profile.train.as_dict(), **changes})
    scales = NoiseScales(**{**profile.scales.as_dict(), "delta_max": variant.delta_max})
    return TabularProfile(profile.name, profile.net, train, scales, variant.read_out)


def clean_rows(encoded: EncodedTable) -> torch.Tensor:
    """The network's unperturbed input for every row: standardised continuous values, then one-hot logits."""
    layout = MixedLayout(encoded.sizes, encoded.continuous.shape[1])
    return layout.clean_inputs(torch.from_numpy(np.asarray(encoded.onehot, dtype=np.float32)),
                               torch.from_numpy(np.asarray(encoded.continuous, dtype=np.float32)))


def train_network(train: EncodedTable, val: EncodedTable, profile: TabularProfile,
                  checkpoint: TrainingCheckpoint | None = None, progress: bool = True) -> TrainResult:
    """A GNSM network trained on ``train``'s rows, stopped early on ``val``'s (both encoded alike)."""
    torch.manual_seed(profile.train.seed)
    net = GNSMNet(profile.net, train.sizes, train.continuous.shape[1], profile.scales)
    return train_gnsm(net, clean_rows(train), clean_rows(val), profile.train, checkpoint=checkpoint,
                      progress=progress)


def norms_of(net: GNSMNet, encoded: EncodedTable, read_out: str) -> np.ndarray:
    """(rows, L) score norms of every row of ``encoded``, read at ``read_out``."""
    return score_norms(net, clean_rows(encoded), read_out).numpy()


def fit_detector(inlier_norms: np.ndarray, seed: int = 0) -> GaussianMixtureDetector:
    return GaussianMixtureDetector(random_state=seed).fit(inlier_norms)


def split_inliers(n_inliers: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions (among the inliers) of the training and the validation rows: a random 90/10 split."""
    order = np.random.default_rng(seed).permutation(n_inliers)
    n_val = max(1, int(round(VALIDATION_FRACTION * n_inliers)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def _score_table(encoded: EncodedTable, norms: np.ndarray, detector: GaussianMixtureDetector) -> pd.DataFrame:
    table = pd.DataFrame({"id": encoded.ids, "inlier": encoded.inlier, "score": detector.score_samples(norms)})
    for i in range(norms.shape[1]):
        table[f"norm_{i:02d}"] = norms[:, i]
    return table


def write_scores(table: pd.DataFrame, path: Path) -> list[Path]:
    """The scores as Parquet at ``path`` and as CSV beside it, each written atomically."""
    write_table(path, table)
    csv = path.with_suffix(".csv")
    atomic_write_bytes(csv, table.to_csv(index=False).encode())
    return [path, csv]


@dataclass(frozen=True)
class FitResult:
    folder: Path
    rows: int
    inliers: int
    training: TrainResult
    scores: pd.DataFrame


def fit_tabular(table_path: str | os.PathLike, schema_path: str | os.PathLike, out_dir: str | os.PathLike,
                options: FitOptions = FitOptions()) -> FitResult:
    """Fit GNSM on the inlier rows of ``table_path`` as ``schema_path`` declares them; write the model folder
    ``out_dir`` (module docstring) and return what was fitted."""
    profile = get_profile(options)
    schema = load_schema(schema_path)
    table = load_table(table_path, schema)
    encoder = fit_encoder(table, schema, str(table_path))
    encoded = encoder.transform(table, str(table_path))
    inliers = np.flatnonzero(encoded.inlier)
    if len(inliers) < 10:
        raise TabularError(table_path, "inliers", "at least 10 inlier rows to fit on", f"{len(inliers)}")
    train_at, val_at = split_inliers(len(inliers), options.seed)
    out_dir = Path(out_dir)
    staging = out_dir.with_name(f".{out_dir.name}.staging")
    staging.mkdir(parents=True, exist_ok=True)
    checkpoint = TrainingCheckpoint(staging / "training_state.pt", {
        "profile": profile.name, "net": profile.net.as_dict(), "train": profile.train.as_dict(),
        "scales": profile.scales.as_dict(), "encoder": encoder.as_dict(), "rows": encoded.ids.tolist(),
    })
    start = time.perf_counter()
    result = train_network(encoded.subset(inliers[train_at]), encoded.subset(inliers[val_at]), profile,
                           checkpoint, options.progress)
    net = result.model
    norms = norms_of(net, encoded, profile.read_out)
    detector = fit_detector(norms[inliers], options.seed)
    scores = _score_table(encoded, norms, detector)
    metadata = {"encoder": encoder.as_dict(), "schema": schema.as_dict(), "profile": profile.name,
                "objective": profile.train.objective, "seed": options.seed, "variant": options.variant,
                "read_out": profile.read_out,
                "inlier_norms": norms[inliers].tolist()}
    save_gnsm_model(staging / MODEL_FILE, net, metadata=metadata)
    summary = {
        "table": str(table_path), "schema": str(schema_path), "rows": len(encoded.ids), "inliers": len(inliers),
        "train_rows": len(train_at), "validation_rows": len(val_at), "profile": profile.name,
        "objective": profile.train.objective, "variant": options.variant, "read_out": profile.read_out,
        "network": profile.net.as_dict(), "scales": profile.scales.as_dict(),
        "steps": result.steps, "stopped": result.stopped, "best_validation_loss": result.best_val_loss,
        "seconds": round(time.perf_counter() - start, 1), "gmm_components": int(detector.n_components_),
        "categorical": list(encoded.categorical_names), "continuous": list(encoded.continuous_names),
    }
    atomic_write_bytes(staging / FIT_FILE, json.dumps(summary, indent=2).encode())
    write_scores(scores, staging / SCORES_FILE)
    (staging / "training_state.pt").unlink(missing_ok=True)
    swap_in_folder(staging, out_dir)
    return FitResult(out_dir, len(encoded.ids), len(inliers), result, scores)


@dataclass(frozen=True)
class FittedModel:
    net: GNSMNet
    encoder: TableEncoder
    schema: TabularSchema
    detector: GaussianMixtureDetector
    read_out: str


def load_fitted(model_dir: str | os.PathLike) -> FittedModel:
    """The network, encoder, schema and detector of a folder :func:`fit_tabular` wrote."""
    path = Path(model_dir) / MODEL_FILE
    if not path.is_file():
        raise TabularError(model_dir, "--model", f"a folder written by 'msma tabular fit' holding {MODEL_FILE}",
                           "no such file")
    try:
        net, info = load_gnsm_model(path)
        metadata = info["metadata"]
        encoder = TableEncoder.from_dict(metadata["encoder"])
        schema = TabularSchema.from_dict(metadata["schema"], source=str(path))
        norms = np.asarray(metadata["inlier_norms"], dtype=float)
        read_out = str(metadata["read_out"])
    except (CheckpointError, KeyError, TypeError, ValueError) as exc:
        raise TabularError(path, "", "a GNSM model written by 'msma tabular fit'", str(exc)) from exc
    return FittedModel(net, encoder, schema, fit_detector(norms, int(metadata.get("seed", 0))), read_out)


def score_tabular(model_dir: str | os.PathLike, table_path: str | os.PathLike,
                  out_path: str | os.PathLike) -> tuple[pd.DataFrame, list[Path]]:
    """Score every row of ``table_path`` with the model in ``model_dir``; write ``out_path`` (Parquet) and the
    same table as CSV beside it."""
    fitted = load_fitted(model_dir)
    out_path = Path(out_path)
    if out_path.suffix not in (".parquet", ".pq"):
        raise TabularError(out_path, "--out", "a .parquet file name (a .csv is written beside it)",
                           out_path.suffix or "no suffix")
    table = load_table(table_path, fitted.schema)
    encoded = fitted.encoder.transform(table, str(table_path))
    scores = _score_table(encoded, norms_of(fitted.net, encoded, fitted.read_out), fitted.detector)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return scores, write_scores(scores, out_path)
