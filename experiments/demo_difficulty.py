"""How hard the demo cohort is at its default effect sizes, measured with two model-free baselines.

Usage: .venv/bin/python experiments/demo_difficulty.py [data_manifest.yaml]   (after `make demo`)

1. Subject level: the analytic score of a per-voxel Gaussian fitted to the reference training volumes, perturbed
   by VE noise, s(x, sigma) = -(x - mu) / (var + sigma^2); for 20 scales geometric between 0.05 and the 99th
   percentile of pairwise distances of training volumes, the norms ||sigma s(x, sigma)|| over brain voxels; a
   3-component GMM on their logarithms; AUROC of each cohort against the held-out reference test subjects
   (higher GMM negative log-likelihood = more anomalous).
2. Voxel level: AUROC of the absolute voxel-wise z-score against the reference training volumes for the lesion
   masks, faint (x1.2) and bright (x1.5) lesions apart.

These are the no-network baselines the trained models have to beat; they are quoted in the README.
"""

from __future__ import annotations

import json
import sys

import nibabel as nib
import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture

from analysis.study.manifest import load_manifest
from analysis.study.validation import validate_study


def main(manifest_path: str = "data_manifest.yaml") -> None:
    study = validate_study(load_manifest(manifest_path), progress=False)
    manifest, subjects, mask = study.manifest, study.subjects, study.brain_mask
    truth = json.loads((manifest.resolve(manifest.demo.folder) / "ground_truth.json").read_text())

    def volume(subject_id: str) -> np.ndarray:
        return nib.load(manifest.resolve(subjects.loc[subject_id, "T1w"])).get_fdata()

    reference = subjects[subjects.cohort == manifest.reference_cohort]
    train = np.stack([volume(i)[mask] for i in reference.index[reference.split == "train"]])
    mean, var = train.mean(axis=0), train.var(axis=0)
    squared = (train**2).sum(axis=1)
    distances = np.sqrt(np.maximum(squared[:, None] + squared[None] - 2 * train @ train.T, 0.0))
    sigmas = np.geomspace(0.05, np.percentile(distances[np.triu_indices(len(train), 1)], 99), 20)

    def log_norms(x: np.ndarray) -> np.ndarray:
        return np.log([np.linalg.norm(s * (x - mean) / (var + s**2)) for s in sigmas])

    gmm = GaussianMixture(3, n_init=3, random_state=0).fit([log_norms(x) for x in train])

    def anomaly(ids) -> np.ndarray:
        return -gmm.score_samples([log_norms(volume(i)[mask]) for i in ids])

    test = anomaly(reference.index[reference.split == "test"])
    subgroup = set(truth["planted_subgroup"])
    down = subjects.index[subjects.cohort == "down_syndrome"]
    groups = {
        "down_syndrome planted subgroup": [i for i in down if i in subgroup],
        "down_syndrome heterogeneous": [i for i in down if i not in subgroup],
        **{c: list(subjects.index[subjects.cohort == c]) for c in sorted(set(subjects.cohort)) if c != "typical"},
    }
    groups.pop("down_syndrome")
    print("subject level: Gaussian-score norms + GMM, AUROC against held-out reference test subjects")
    figures = {"subject_auroc": {}, "lesion_voxel_auroc": {}}
    for name, ids in groups.items():
        scores = anomaly(ids)
        labels = np.r_[np.zeros(len(test)), np.ones(len(scores))]
        figures["subject_auroc"][name] = float(roc_auc_score(labels, np.r_[test, scores]))
        print(f"  {name:<32} n={len(ids):<3} AUROC {figures['subject_auroc'][name]:.3f}")

    sd = np.sqrt(var) + 1e-3
    print("voxel level: |z-score| against the reference training volumes, AUROC for lesion voxels")
    for kind in ("faint", "bright"):
        entries = [e for e in truth["lesions"] if e["kind"] == kind]
        lesion = np.concatenate([nib.load(manifest.resolve(e["mask"])).get_fdata()[mask] > 0 for e in entries])
        z = np.concatenate([np.abs(volume(e["subject_id"])[mask] - mean) / sd for e in entries])
        figures["lesion_voxel_auroc"][kind] = float(roc_auc_score(lesion, z))
        print(f"  {kind} lesions ({len(entries)} subjects)  AUROC {figures['lesion_voxel_auroc'][kind]:.3f}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main(*sys.argv[1:])
