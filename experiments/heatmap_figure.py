"""Draw docs/heatmaps.png from the latest run: Spatial-MSMA heatmaps of lesion subjects beside the baseline maps.

Usage: .venv/bin/python experiments/heatmap_figure.py [data_manifest.yaml]   (after `make demo`)

Rows: two subjects with faint (x1.2) and two with bright (x1.5) lesions, each on the axial slice holding most of
their lesion voxels. Columns: the image, then each method's map (stored in the run's ``lesion_maps.npy``), drawn
from its subject's median to its 99.5th percentile, with the ground-truth outline in cyan.
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from analysis.runs.report import LESION_METHOD_NAMES  # noqa: E402
from analysis.runs.store import RunStore  # noqa: E402
from analysis.study.images import load_images, normalise_intensity  # noqa: E402
from analysis.study.manifest import load_manifest  # noqa: E402
from analysis.study.validation import validate_study  # noqa: E402
from analysis.study.volumes import load_volume  # noqa: E402

SHOWN = ("spatial_msma", "unconditional_flow", "patch_magnitude", "voxel_magnitude", "z_score")


def main(manifest_path: str = "data_manifest.yaml", out: str = "docs/heatmaps.png") -> None:
    study = validate_study(load_manifest(manifest_path), progress=False, check_voxels=False)
    run_dir = RunStore(study.manifest.output_dir).latest()
    record = json.loads((run_dir / "run.json").read_text())["spatial"]["lesions"]
    maps = np.load(run_dir / record["maps"]["file"], mmap_mode="r")
    methods = list(record["methods"])
    mask = study.brain_mask
    lesions = study.lesions
    chosen = [*lesions.index[lesions["group"] == "faint"][:2], *lesions.index[lesions["group"] == "bright"][:2]]
    images = load_images(study, chosen, progress=False)
    normalise_intensity(images, mask, "brain_p99")
    fig, axes = plt.subplots(len(chosen), 1 + len(SHOWN), figsize=(2.1 * (1 + len(SHOWN)), 2.3 * len(chosen)))
    for r, subject in enumerate(chosen):
        truth = load_volume(lesions.loc[subject, "mask"], study.grid) > 0
        z = int(np.argmax(truth.sum(axis=(0, 1))))
        row = record["subjects"].index(subject)
        axes[r, 0].imshow(images[r][:, :, z].T, origin="lower", cmap="gray")
        axes[r, 0].set_title(f"{subject}\n{lesions.loc[subject, 'group']}", fontsize=8)
        for c, method in enumerate(SHOWN, start=1):
            volume = np.full(mask.shape, np.nan)
            volume[mask] = maps[row, methods.index(method)]
            low, high = np.nanpercentile(volume, [50, 99.5])
            axes[r, c].imshow(volume[:, :, z].T, origin="lower", cmap="magma", vmin=low, vmax=high)
            axes[r, c].contour(truth[:, :, z].T, levels=[0.5], colors="cyan", linewidths=0.8)
            if r == 0:
                axes[r, c].set_title(LESION_METHOD_NAMES[method], fontsize=8)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(f"run {run_dir.name}: lesion outlines in cyan; each map from its median to its 99.5th percentile",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    print(json.dumps({"run_id": run_dir.name, "figure": str(out)}))


if __name__ == "__main__":
    main(*sys.argv[1:2])
