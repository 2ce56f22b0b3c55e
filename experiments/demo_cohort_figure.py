"""Draw docs/demo_cohort.png from a built demo cohort: what the simulated subjects look like.

Usage: .venv/bin/python experiments/demo_cohort_figure.py [data_manifest.yaml]   (after `make demo`)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import numpy as np  # noqa: E402

from analysis.study.manifest import load_manifest  # noqa: E402
from analysis.study.validation import validate_study  # noqa: E402


def main(manifest_path: str = "data_manifest.yaml", out: str = "docs/demo_cohort.png") -> None:
    study = validate_study(load_manifest(manifest_path), progress=False)
    root = study.manifest.root
    truth = json.loads((study.manifest.resolve(study.manifest.demo.folder) / "ground_truth.json").read_text())
    subjects = study.subjects
    subgroup = truth["planted_subgroup"]
    faint = next(e for e in truth["lesions"] if e["kind"] == "faint")
    bright = next(e for e in truth["lesions"] if e["kind"] == "bright")
    panels = [
        ("MNI152 template", nib.load(study.manifest.template.image).get_fdata(), None),
        ("typical", _image(root, subjects, subjects.index[subjects.cohort == "typical"][0]), None),
        ("Down-syndrome-like,\nplanted subgroup", _image(root, subjects, subgroup[0]), None),
        ("faint lesions (x1.2)", _image(root, subjects, faint["subject_id"]), nib.load(root / faint["mask"])),
        (
            "bright lesions (x1.5)",
            _image(root, subjects, bright["subject_id"]),
            nib.load(root / bright["mask"]),
        ),
    ]
    typical = subjects.index[(subjects.cohort == "typical") & (subjects.split == "test")]
    difference = np.mean([_image(root, subjects, i) for i in subgroup], axis=0) - np.mean(
        [_image(root, subjects, i) for i in typical], axis=0
    )
    fig, axes = plt.subplots(2, len(panels) + 1, figsize=(2.6 * (len(panels) + 1), 5.4), facecolor="white")
    for col, (title, volume, mask) in enumerate(panels):
        mask_data = mask.get_fdata() > 0 if mask is not None else None
        z = int(np.argmax(mask_data.sum(axis=(0, 1)))) if mask_data is not None else volume.shape[2] // 2
        y = int(np.argmax(mask_data.sum(axis=(0, 2)))) if mask_data is not None else volume.shape[1] // 2
        for row, (section, outline) in enumerate(
            [
                (volume[:, :, z], None if mask_data is None else mask_data[:, :, z]),
                (volume[:, y, :], None if mask_data is None else mask_data[:, y, :]),
            ]
        ):
            ax = axes[row, col]
            ax.imshow(np.rot90(section), cmap="gray", vmin=0, vmax=1.2)
            if outline is not None and outline.any():
                ax.contour(np.rot90(outline), levels=[0.5], colors="magenta", linewidths=1.2)
            ax.set_axis_off()
        axes[0, col].set_title(title, fontsize=10)
    # Where the planted subgroup differs from typical subjects: hippocampus/temporal (coronal), cerebellum (axial).
    hippocampus = int(np.argmax(np.abs(difference).sum(axis=(0, 2))))
    for row, section in enumerate([difference[:, :, volume.shape[2] // 4], difference[:, hippocampus, :]]):
        ax = axes[row, -1]
        ax.imshow(np.rot90(section), cmap="RdBu_r", vmin=-0.25, vmax=0.25)
        ax.set_axis_off()
    title = f"subgroup minus typical mean\n(n={len(subgroup)}, {len(typical)}; blue: darker)"
    axes[0, -1].set_title(title, fontsize=10)
    fig.suptitle(
        f"Demo cohort on the {'x'.join(map(str, study.grid.shape))} grid "
        f"({study.grid.voxel_size[0]:g} mm): axial (top) and coronal (bottom) sections; lesion masks in magenta",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"saved {out}")
    print(json.dumps({"figure": str(out), "grid": list(study.grid.shape), "subgroup": len(subgroup)}))


def _image(root: Path, subjects, subject_id: str) -> np.ndarray:
    return nib.load(root / subjects.loc[subject_id, "T1w"]).get_fdata()


if __name__ == "__main__":
    main(*sys.argv[1:])
