"""How much of the planted cohort's prototype-vs-rest ROI differences the subjects' brain size explains.

Usage: .venv/bin/python experiments/roi_confound.py [data_manifest.yaml]   (after `make demo`; a few seconds)

The demo plants a regional phenotype in a subgroup of the Down-syndrome-like cohort; the subgroup also has smaller
brains than the rest of the cohort (ground_truth.json, ``brain_volume_ml``), and the whole cohort's brains are
smaller than nearly every reference brain. This script reads the latest run's ROI scores and the cohort's SOM
prototype and prints:

1. the mean whole-brain heatmap level (the mean over ROIs) against brain volume, per cohort, and its correlation
   with brain volume;
2. the chain's Mann-Whitney test of prototype vs rest on the kept ROIs, Bonferroni p < 0.05, as the run does it
   (planted-region recall and false discovery proportion), then the same on ROI scores residualised within the
   cohort on (a) each subject's median ROI score and (b) its true brain volume (the demo's ground truth, which a
   real study would replace with intracranial volume);
3. per ROI, the subgroup-vs-rest effect (mean difference over the within-cohort SD) on the volume-adjusted
   scores, and how well it ranks the planted regions first (AUROC).

The last line is a JSON object with every figure.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from analysis.exploration.cohort_analysis import CohortAnalysis, planted_recovery
from analysis.exploration.roi_stats import atypical_rois, prototype_vs_rest
from analysis.runs.store import RunStore
from analysis.study.manifest import load_manifest
from analysis.study.validation import validate_study

ALPHA = 0.05


def residualise(scores: pd.DataFrame, covariates: np.ndarray) -> pd.DataFrame:
    """Least-squares residuals of every column on the covariates (with an intercept), over these rows."""
    design = np.column_stack([np.ones(len(scores)), covariates])
    beta, *_ = np.linalg.lstsq(design, scores.to_numpy(dtype=float), rcond=None)
    return scores - design @ beta


def recovery(scores: pd.DataFrame, prototype: list[str], rest: list[str], kept: list[str],
             planted_regions: dict[str, list[str]]) -> dict:
    """The chain's region step on ``scores`` (Bonferroni over ``kept``), counted as the refresh counts it."""
    tests = prototype_vs_rest(scores, prototype, rest, rois=kept)
    significant = tests.loc[tests["p_bonferroni"] < ALPHA, "roi"].tolist()
    found = planted_recovery(CohortAnalysis("", kept, tests, significant, None), planted_regions, [])["regions"]
    return {
        "significant": len(significant),
        "planted_found": len(significant) - len(found["false_discoveries"]),
        "recall": found["recall"],
        "false_discovery_proportion": found["false_discovery_proportion"],
    }


def main(manifest_path: str = "data_manifest.yaml") -> None:
    study = validate_study(load_manifest(manifest_path), progress=False, check_voxels=False)
    if study.manifest.demo is None:
        raise SystemExit(f"{manifest_path}: this diagnostic needs the demo's ground truth (a `demo:` section)")
    truth = json.loads((study.manifest.resolve(study.manifest.demo.folder) / "ground_truth.json").read_text())
    run_dir = RunStore(study.manifest.output_dir).latest()
    run = json.loads((run_dir / "run.json").read_text())
    table = pd.read_parquet(run_dir / "roi_scores.parquet").set_index("subject_id")
    rois = list(run["spatial"]["roi_scores"]["rois"])
    scores = table[rois].astype(float)
    cohort_name = truth["planted_cohort"]
    members = list(table.index[table["cohort"] == cohort_name])
    prototype = [i for i in run["som"]["prototypes"][cohort_name]["members"] if i in set(members)]
    rest = [i for i in members if i not in set(prototype)]
    reference = list(table.index[(table["cohort"] == truth["reference_cohort"]) & (table["role"] != "train")])
    planted = {r for regions in truth["planted_regions"].values() for r in regions}
    subgroup = set(truth["planted_subgroup"])
    volume = pd.Series({s: truth["subjects"][s]["brain_volume_ml"] for s in table.index})
    level = scores.mean(axis=1)

    groups = table["cohort"].where(~table.index.isin(subgroup), cohort_name + " (planted subgroup)")
    groups = groups.where(~(table.index.isin(members) & ~table.index.isin(subgroup)), cohort_name + " (rest)")
    by_cohort = []
    for name, ids in groups.groupby(groups).groups.items():
        by_cohort.append({
            "cohort": name, "n": len(ids), "brain_volume_ml": round(float(volume[ids].mean()), 1),
            "mean_roi_score": round(float(level[ids].mean()), 3),
            "r_with_volume": round(float(np.corrcoef(level[ids], volume[ids])[0, 1]), 3),
        })
    print(f"run {run_dir.name}: whole-brain heatmap level (mean ROI score) and brain volume")
    print(pd.DataFrame(by_cohort).to_string(index=False))

    kept = atypical_rois(scores, reference, members)
    cohort_scores = scores.loc[members]
    variants = {
        "as the run tests them": cohort_scores,
        "residualised on the median ROI score": residualise(cohort_scores, cohort_scores.median(axis=1).to_numpy()),
        "residualised on brain volume (ground truth)": residualise(cohort_scores, volume[members].to_numpy()),
    }
    results = {name: recovery(s, prototype, rest, kept, truth["planted_regions"]) for name, s in variants.items()}
    print(f"\n{cohort_name}: prototype ({len(prototype)}) vs rest ({len(rest)}) on the {len(kept)} kept ROIs, "
          f"Bonferroni p < {ALPHA}; {len(planted)} planted regions")
    frame = pd.DataFrame(results).T
    frame = frame.astype({"significant": int, "planted_found": int, "recall": float,
                          "false_discovery_proportion": float}).round(2)
    print(frame.to_string())

    adjusted = variants["residualised on brain volume (ground truth)"]
    inside = adjusted.index.isin(subgroup)
    effect = (adjusted[inside].mean() - adjusted[~inside].mean()) / adjusted.std()
    ranking_auroc = roc_auc_score(effect.index.isin(planted), effect)
    raw_effect = (cohort_scores[inside].mean() - cohort_scores[~inside].mean()) / cohort_scores.std()
    print(f"\nsubgroup vs rest effect (mean difference / within-cohort SD) of the planted regions: median "
          f"{raw_effect[list(planted)].median():.2f} raw, {effect[list(planted)].median():.2f} volume-adjusted; "
          f"volume-adjusted effects rank the planted regions first with AUROC {ranking_auroc:.3f}")
    print(json.dumps({
        "run_id": run_dir.name, "cohorts": by_cohort, "kept_rois": len(kept), "recovery": results,
        "planted_effect_median": {"raw": float(raw_effect[list(planted)].median()),
                                  "volume_adjusted": float(effect[list(planted)].median())},
        "volume_adjusted_ranking_auroc": float(ranking_auroc),
    }))


if __name__ == "__main__":
    main(*sys.argv[1:2])
