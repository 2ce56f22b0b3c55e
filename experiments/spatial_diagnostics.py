"""Where the lesion maps of the latest run go wrong: false-positive components, how many touch the edge of the
brain mask, and degenerate segmentations.

Usage: .venv/bin/python experiments/spatial_diagnostics.py [data_manifest.yaml]   (after `make demo`)

For every method of the run's ``lesion_maps.npy``, the segmentation that the evaluation protocol selects for each
lesion subject is split into components (26-connectivity); a component that touches no lesion is a false
positive, and it is counted as "at the edge" when it holds a voxel of the brain mask's surface. A selected
segmentation covering more than a quarter of the brain is counted as degenerate: the protocol chose one large
region spreading from the lesions, which its component-wise TPR and PPV count as a hit for every lesion it
touches. Prints a table per lesion group.

It also prints how the calibrated heatmaps of typical subjects read: the reference training subjects (on whom the
flow was fitted and calibrated) against the held-out reference subjects (validation and test): the mean over
subjects and voxels, the median over voxels of the per-voxel standard deviation across subjects, and the 99th
percentile of all their brain voxels. The last line is a JSON object with every figure.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
from scipy import ndimage

from analysis.lesions import best_threshold, surface
from analysis.runs.store import RunStore
from analysis.study.manifest import load_manifest
from analysis.study.validation import validate_study
from analysis.study.volumes import load_volume

DEGENERATE_FRACTION = 0.25


def main(manifest_path: str = "data_manifest.yaml") -> None:
    study = validate_study(load_manifest(manifest_path), progress=False, check_voxels=False)
    run_dir = RunStore(study.manifest.output_dir).latest()
    record = json.loads((run_dir / "run.json").read_text())["spatial"]["lesions"]
    maps = np.load(run_dir / record["maps"]["file"])
    methods = list(record["maps"]["order"])
    protocol = {k: record["protocol"][k] for k in ("n_thresholds", "min_size", "dilation_radius")}
    mask, spacing = study.brain_mask, study.grid.voxel_size
    subjects = record["subjects"]
    groups = [study.lesions.loc[s, "group"] for s in subjects]
    truth = [load_volume(study.lesions.loc[s, "mask"], study.grid) > 0 for s in subjects]
    edge = surface(mask)
    full = ndimage.generate_binary_structure(3, 3)

    rows = []
    for k, method in enumerate(methods):
        for row, (group, gt) in enumerate(zip(groups, truth, strict=True)):
            volume = np.full(mask.shape, np.nan)
            volume[mask] = maps[row, k]
            _, segmentation = best_threshold(volume, gt, mask, spacing, **protocol)
            labels, n = ndimage.label(segmentation, full)
            false = [c for c in range(1, n + 1) if not (gt & (labels == c)).any()]
            rows.append({
                "group": group, "method": method,
                "false_positive_components": len(false),
                "at_the_edge": sum(bool((edge & (labels == c)).any()) for c in false),
                "degenerate": bool(segmentation.sum() > DEGENERATE_FRACTION * mask.sum()),
            })
    table = pd.DataFrame(rows).groupby(["group", "method"], sort=True).sum().reset_index()
    print(f"run {run_dir.name}: false-positive components of the selected segmentations, and segmentations "
          f"covering more than {DEGENERATE_FRACTION:.0%} of the brain")
    print(table.to_string(index=False))

    listing = pd.read_parquet(run_dir / "heatmaps.parquet")
    stack = np.load(run_dir / "heatmaps.npy", mmap_mode="r")
    typical = listing["cohort"] == study.manifest.reference_cohort
    calibration = {}
    for name, rows in (("training", typical & (listing["role"] == "train")),
                       ("held_out", typical & (listing["role"] != "train"))):
        values = np.stack([stack[i][mask] for i in np.flatnonzero(rows.to_numpy())]).astype(np.float64)
        calibration[name] = {
            "subjects": len(values),
            "mean": round(float(values.mean()), 3),
            "median_voxel_sd": round(float(np.median(values.std(axis=0))), 3),
            "p99": round(float(np.percentile(values, 99)), 3),
        }
    print("\ncalibrated heatmaps of typical subjects (reference standard deviations)")
    print(pd.DataFrame(calibration).T.astype({"subjects": int}).to_string())
    print(json.dumps({"run_id": run_dir.name, "diagnostics": table.to_dict(orient="records"),
                      "calibration": calibration}, default=int))


if __name__ == "__main__":
    main(*sys.argv[1:2])
