"""Where the lesion maps of the latest run go wrong: false-positive components at the edge of the brain mask, and
two per-voxel calibrations of the Spatial-MSMA heatmap that were tried and not adopted.

Usage: .venv/bin/python docs/spatial_diagnostics.py [data_manifest.yaml]   (after `make demo`)

For every method of the run's ``lesion_maps.npy``, the segmentation that the evaluation protocol selects for each
lesion subject is split into components (26-connectivity); a component that touches no lesion is a false
positive, and it is counted as "at the edge" when it holds a voxel of the brain mask's surface. Then the heatmaps
are calibrated voxel by voxel against the reference training subjects' heatmaps (``heatmaps.npy``): minus their
mean, and minus their mean over their standard deviation, and run through the same protocol. Prints a table per
lesion group; the last line is a JSON object with every figure.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
from scipy import ndimage

from analysis.artifacts import RunStore
from analysis.lesions import best_threshold, evaluate_methods, summarise, surface
from analysis.manifest import load_manifest
from analysis.validation import validate_study
from analysis.volumes import load_volume


def main(manifest_path: str = "data_manifest.yaml") -> None:
    study = validate_study(load_manifest(manifest_path), progress=False, check_voxels=False)
    run_dir = RunStore(study.manifest.output_dir).latest()
    record = json.loads((run_dir / "run.json").read_text())["spatial"]["lesions"]
    maps = np.load(run_dir / record["maps"]["file"])
    methods = list(record["methods"])
    mask, spacing = study.brain_mask, study.grid.voxel_size
    subjects = record["subjects"]
    groups = [study.lesions.loc[s, "group"] for s in subjects]
    truth = [load_volume(study.lesions.loc[s, "mask"], study.grid) > 0 for s in subjects]
    edge = surface(mask)
    full = ndimage.generate_binary_structure(3, 3)

    counts = {}
    for k, method in enumerate(methods):
        n_fp = n_edge = 0
        for row, gt in enumerate(truth):
            volume = np.full(mask.shape, np.nan)
            volume[mask] = maps[row, k]
            _, segmentation = best_threshold(volume, gt, mask, spacing)
            labels, n = ndimage.label(segmentation, full)
            for c in range(1, n + 1):
                component = labels == c
                if not (component & gt).any():
                    n_fp += 1
                    n_edge += bool((component & edge).any())
        counts[method] = {"false_positive_components": n_fp, "touching_the_mask_edge": n_edge}

    table = pd.read_parquet(run_dir / "heatmaps.parquet")
    stack = np.load(run_dir / "heatmaps.npy", mmap_mode="r")
    train = np.flatnonzero(table["role"].to_numpy() == "train")
    reference = np.stack([stack[i][mask] for i in train])
    mean, sd = reference.mean(axis=0), reference.std(axis=0)
    spatial = maps[:, methods.index("spatial_msma")]
    calibrated = {"spatial_msma": spatial, "minus_reference_mean": spatial - mean,
                  "reference_z_score": (spatial - mean) / sd}
    per_subject = evaluate_methods(calibrated, subjects, groups, truth, mask, spacing, n_jobs=2)
    summary = summarise(per_subject, ["group", "method"])

    print(f"run {run_dir.name}: false-positive components of the selected segmentations")
    for method, c in counts.items():
        print(f"  {method}: {c['false_positive_components']}, of which {c['touching_the_mask_edge']} touch the edge")
    print("heatmap calibrations against the reference training subjects:")
    print(summary.round(3).to_string(index=False))
    print(json.dumps({"run_id": run_dir.name, "false_positives": counts,
                      "calibrations": summary.to_dict(orient="records")}, default=float))


if __name__ == "__main__":
    main(*sys.argv[1:2])
