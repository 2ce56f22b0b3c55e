"""How the choice of voxel mapping trades faint-lesion sensitivity against bright-lesion sharpness.

Usage: .venv/bin/python experiments/voxel_mappings.py [data_manifest.yaml]   (after `make demo`; about 30 s)

Spatial-MSMA scores patches; a voxel belongs to the k^3 patches centred on it and on its neighbours. The run's
heatmaps keep the score of the patch centred on each voxel ("centre"); ``models.spatial.heatmap`` also offers the
minimum over the covering patches ("min"). This script re-maps the run's stored centre map (the
``spatial_msma`` column of ``lesion_maps.npy``) with mappings in between and runs every one of them through the
lesion protocol of the run (``analysis.lesions.evaluate_study_lesions``):

- ``order q``: the ceil(q n)-th smallest score of the n covering patches centred in the brain (q = 0 is "min").
  For a one-voxel anomaly, 9 of a face neighbour's 27 covering patches do not contain the anomaly, so q <= 1/3
  keeps neighbours low in the noise-free case while it tolerates a few low patches over the anomaly.
- ``blend``: the mean of the centre and the minimum.

Prints table 5.1's metrics with the voxel AUROC and the fraction of lesions found before any false positive, per
lesion group; the last line is a JSON object with every figure.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np

from analysis.lesions import LesionProtocol, evaluate_study_lesions
from analysis.runs.store import RunStore
from analysis.study.manifest import load_manifest
from analysis.study.validation import validate_study

ORDER_FRACTIONS = (0.0, 0.15, 1 / 3, 0.5)


def covering_values(values: np.ndarray, mask: np.ndarray, patch_size: int) -> np.ndarray:
    """(n_brain_voxels, k^3) patch scores covering each brain voxel, NaN where the patch centre is off the brain."""
    r = patch_size // 2
    volume = np.full(mask.shape, np.nan)
    volume[mask] = values
    padded = np.pad(volume, r, constant_values=np.nan)
    d, h, w = mask.shape
    offsets = range(patch_size)
    return np.stack(
        [padded[a:a + d, b:b + h, c:c + w][mask] for a in offsets for b in offsets for c in offsets], axis=-1
    )


def order_statistic(values: np.ndarray, mask: np.ndarray, patch_size: int, q: float) -> np.ndarray:
    """Per brain voxel, the ceil(q n)-th smallest of the n covering patch scores (the smallest for q = 0)."""
    out = np.empty(values.shape, dtype=np.float64)
    for i, row in enumerate(values):
        cover = covering_values(row, mask, patch_size)
        n = np.isfinite(cover).sum(axis=1)
        ranked = np.sort(np.where(np.isfinite(cover), cover, np.inf), axis=1)
        k = np.maximum(np.ceil(q * n).astype(int) - 1, 0)
        out[i] = ranked[np.arange(len(ranked)), k]
    return out


def main(manifest_path: str = "data_manifest.yaml") -> None:
    study = validate_study(load_manifest(manifest_path), progress=False, check_voxels=False)
    run_dir = RunStore(study.manifest.output_dir).latest()
    run = json.loads((run_dir / "run.json").read_text())
    record = run["spatial"]["lesions"]
    patch_size = int(run["spatial"]["config"]["patch_size"])
    order = list(record["maps"]["order"])
    stored = np.load(run_dir / record["maps"]["file"], mmap_mode="r")
    rows = [record["subjects"].index(s) for s in study.lesions.index]  # the lesions table's order
    centre = np.asarray(stored[rows, order.index("spatial_msma")], dtype=np.float64)
    mask = study.brain_mask

    maps = {"centre": centre}
    for q in ORDER_FRACTIONS:
        maps["min" if q == 0 else f"order q={q:.2f}"] = order_statistic(centre, mask, patch_size, q)
    minimum = maps["min"]
    maps["blend (centre + min) / 2"] = 0.5 * (centre + minimum)
    if "spatial_msma_min" in order:  # the stored min mapping must be reproduced exactly
        reference = np.asarray(stored[rows, order.index("spatial_msma_min")], dtype=np.float64)
        if not np.allclose(minimum, reference, rtol=1e-5, atol=1e-5, equal_nan=True):
            raise SystemExit(f"run {run_dir.name}: the re-mapped minimum differs from its stored spatial_msma_min")

    protocol = LesionProtocol(**{k: record["protocol"][k] for k in ("n_thresholds", "min_size", "dilation_radius")})
    table = evaluate_study_lesions(study, maps, protocol, n_jobs=2).summary
    columns = ["hd99", "msd", "tpr", "ppv", "auroc", "tpr_at_zero_fp"]
    rank = {name: i for i, name in enumerate(maps)}
    table = table.sort_values(["group", "method"], key=lambda s: s.map(rank) if s.name == "method" else s)
    print(f"run {run_dir.name}: Spatial-MSMA's centre map re-mapped to voxels ({patch_size}^3 patches), "
          "mean over subjects")
    shown = table[["group", "method"] + [f"{c}_mean" for c in columns]].rename(
        columns={f"{c}_mean": c for c in columns})
    print(shown.round(3).to_string(index=False))
    figures = [{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in row.items()}
               for row in shown.to_dict(orient="records")]
    print(json.dumps({"run_id": run_dir.name, "patch_size": patch_size, "mappings": figures}))


if __name__ == "__main__":
    main(*sys.argv[1:2])
