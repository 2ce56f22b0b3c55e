"""Train a variant of the Spatial-MSMA flow on the latest run's score passes and compare it on held-out likelihood
and on the lesion protocol.

Usage: .venv/bin/python experiments/spatial_ablation.py [MANIFEST.yaml] [KEY=VALUE ...]   (after `make demo`; a few
minutes per variant; the manifest defaults to data_manifest.yaml)

KEY=VALUE overrides fields of ``models.spatial.flow.SpatialFlowConfig`` (e.g. ``n_frequencies=7``,
``n_components=1``, ``cosine_decay=0``, ``standardisation=global``); without any, the default flow is retrained.
Prints the best validation NLL (mean nats per voxel over the validation subjects' fixed voxels: the
model-selection criterion) and the lesion metrics of the variant's heatmaps with the two patch-to-voxel mappings:
the patch's value at its centre voxel (the default) and the minimum over covering patches. The last line is a JSON
object.
"""

from __future__ import annotations

import dataclasses
import json
import sys

import numpy as np
import pandas as pd
import torch

from analysis.lesions import evaluate_study_lesions
from analysis.runs.store import RunStore
from analysis.study.images import load_images, normalise_intensity
from analysis.study.manifest import load_manifest
from analysis.study.validation import validate_study
from models.spatial.flow import SpatialFlowConfig, train_spatial_flow
from models.spatial.heatmap import VOXEL_MAPPINGS, patches_to_voxels
from models.spatial.patch_norms import patch_norms
from pipeline.keys import NORMALISATION


def _config(overrides: list[str], manifest) -> SpatialFlowConfig:
    config = dataclasses.replace(
        SpatialFlowConfig(), patch_size=manifest.model.patch_size, seed=manifest.model.seed
    )
    values = {}
    for item in overrides:
        key, _, raw = item.partition("=")
        default = getattr(config, key)  # AttributeError names an unknown field
        values[key] = raw not in ("0", "false", "False") if isinstance(default, bool) else type(default)(raw)
    return dataclasses.replace(config, **values)


def main(overrides: list[str], manifest_path: str = "data_manifest.yaml") -> None:
    manifest = load_manifest(manifest_path)
    study = validate_study(manifest, progress=False, check_voxels=False)
    config = _config(overrides, manifest)
    run_dir = RunStore(manifest.output_dir).latest()
    table = pd.read_parquet(run_dir / "score_norms.parquet")
    ids = list(table["subject_id"])
    images = load_images(study, ids, progress=False)
    normalise_intensity(images, study.brain_mask, NORMALISATION)
    norms = patch_norms(np.load(run_dir / "voxel_scores.npy", mmap_mode="r"), study.brain_mask, config.patch_size)
    train = np.flatnonzero(table["role"].to_numpy() == "train")
    val = np.flatnonzero(table["role"].to_numpy() == "val")
    result = train_spatial_flow(config, images, norms, study.brain_mask, train, val, progress=True)

    lesions = study.lesions
    rows = [ids.index(i) for i in lesions.index]
    with torch.inference_mode():
        patch = np.stack(
            [result.model.heatmaps(torch.as_tensor(images[r : r + 1]), torch.as_tensor(norms[r : r + 1]))[0].numpy()
             for r in rows]
        )
    maps = {mapping: patches_to_voxels(patch, study.brain_mask, config.patch_size, mapping)
            for mapping in VOXEL_MAPPINGS}
    summary = evaluate_study_lesions(study, maps, n_jobs=2).summary
    print(f"variant {config.as_dict()}")
    print(f"best validation NLL {result.best_val_nll:.3f} at step {result.best_step} of {result.steps}")
    print(summary.round(3).to_string(index=False))
    print(json.dumps({"run_id": run_dir.name, "config": config.as_dict(), "best_val_nll": result.best_val_nll,
                      "lesions": summary.to_dict(orient="records")}, default=float))


if __name__ == "__main__":
    arguments = sys.argv[1:]
    manifests = [a for a in arguments if a.endswith((".yaml", ".yml"))]
    overrides = [a for a in arguments if a not in manifests]
    unclear = [a for a in overrides if "=" not in a]
    if len(manifests) > 1 or unclear:
        raise SystemExit(f"usage: spatial_ablation.py [MANIFEST.yaml] [KEY=VALUE ...]; got {len(manifests)} manifests "
                         f"and arguments without '=': {unclear}")
    main(overrides, *manifests)
