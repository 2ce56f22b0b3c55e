"""How many planted regions a subgroup-vs-rest ROI test finds in the demo, given the best grouping and better maps.

Usage: .venv/bin/python experiments/recovery_ceiling.py [data_manifest.yaml]   (after `make demo`; about 15 s)

The chain of dissertation ch. 6.3 tests the planted cohort's prototype against the rest of the cohort, ROI by ROI
(Mann-Whitney U, Bonferroni p < 0.05). This script replaces the prototype by the planted subgroup itself (the
ground truth, the best any prototype can do) and the Spatial-MSMA ROI scores by simpler maps that know more than a
detector may:

- ``spatial_msma``: the latest run's ROI scores, as the chain uses them;
- ``intensity_drop``: the ROI mean of the voxel-wise z-score of intensity against the reference training subjects,
  sign flipped so that darker is higher. The demo darkens its planted regions, so this map is told the direction
  of the planted change;
- ``intensity_abs``: the ROI mean of the absolute z-score (direction not told);
- both intensity maps again after a similarity normalisation of every image to the template (isotropic scale from
  the brain's foreground volume, translation from its centroid, trilinear resampling): this removes the cohort's
  smaller brains, the global difference that a region-by-region reading mistakes for regional ones;
- ``true severity (generator)``: the severity the generator drew for each planted region's group (0 elsewhere and
  outside the subgroup), a map that measures exactly the planted change, to show the test itself can find them.

For each map and grouping it prints how many ROIs reach Bonferroni p < 0.05 (over all ROIs, and over the ROIs the
chain keeps: cohort mean above the reference 90th percentile) and BH q < 0.1, how many of them are planted (recall)
and the false discovery proportion.

Then the behaviour step, as if the region step had returned exactly the planted regions: Spearman correlations of
those regions' scores with every behaviour score over the cohort, permutation p-values, BH q < 0.1, and how many of
the planted (score, region group) pairs are found with the planted sign. The ``true severity`` row replaces the
ROI scores by the severity the generator drew for each region group (0 outside the subgroup): no map can do better.
The last line is a JSON object with every figure.
"""

from __future__ import annotations

import json
import sys

import numpy as np
import pandas as pd
from scipy import ndimage

from analysis.exploration.cohort_analysis import CohortAnalysis, planted_recovery
from analysis.exploration.correlations import spearman_permutation
from analysis.exploration.roi_stats import atypical_rois, prototype_vs_rest, roi_scores
from analysis.runs.store import RunStore
from analysis.study.images import load_images, normalise_intensity
from analysis.study.manifest import load_manifest
from analysis.study.validation import validate_study
from analysis.study.volumes import load_volume
from pipeline.keys import NORMALISATION

ALPHA, Q = 0.05, 0.1


def foreground(volume: np.ndarray) -> tuple[int, np.ndarray]:
    """Voxel count and centroid (voxel coordinates) of the voxels above 10 % of the volume's 99th percentile."""
    positive = volume[volume > 0]
    inside = volume > 0.1 * np.percentile(positive, 99)
    return int(inside.sum()), np.array(ndimage.center_of_mass(inside))


def to_template_size(images: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Resample every image (n, D, H, W) so that its foreground has the template's volume and centroid."""
    size_t, centre_t = foreground(template)
    points = np.indices(template.shape).reshape(3, -1).astype(np.float64) - centre_t[:, None]
    out = np.empty_like(images)
    for k, image in enumerate(images):
        size, centre = foreground(image)
        scale = (size / size_t) ** (1.0 / 3.0)
        out[k] = ndimage.map_coordinates(image, centre[:, None] + scale * points, order=1).reshape(template.shape)
    return np.clip(out, 0.0, None)


def z_maps(images: np.ndarray, mask: np.ndarray, train_rows: list[int]) -> np.ndarray:
    brain = images[:, mask].astype(np.float64)
    train = brain[train_rows]
    return (brain - train.mean(axis=0)) / train.std(axis=0)


def recovery(scores: pd.DataFrame, group: list[str], rest: list[str], kept: list[str],
             planted_regions: dict[str, list[str]]) -> dict:
    """Planted regions among the significant ROIs of three region tests of ``group`` vs ``rest``."""
    result = {}
    for name, rois, column, level in (
        ("bonferroni_all_rois", list(scores.columns), "p_bonferroni", ALPHA),
        ("bonferroni_kept_rois", kept, "p_bonferroni", ALPHA),
        ("bh_all_rois", list(scores.columns), "p_bh", Q),
    ):
        tests = prototype_vs_rest(scores, group, rest, rois=rois) if rois else pd.DataFrame(columns=[column, "roi"])
        significant = tests.loc[tests[column] < level, "roi"].tolist()
        found = planted_recovery(CohortAnalysis("", rois, tests, significant, None), planted_regions, [])["regions"]
        fdp = found["false_discovery_proportion"]
        result[name] = {"tested": len(rois), "significant": len(significant), "recall": round(found["recall"], 3),
                        "false_discovery_proportion": None if fdp is None else round(fdp, 3)}
    return result


def behaviour_recovery(scores: pd.DataFrame, behaviour: pd.DataFrame, pairs: list[dict]) -> dict:
    """Planted pairs found at BH q < Q among all (ROI, score) pairs of ``scores`` x ``behaviour``, counted as the
    refresh counts them (:func:`analysis.exploration.cohort_analysis.planted_recovery`)."""
    correlations = spearman_permutation(scores, behaviour, n_permutations=10_000, random_state=0)
    found = planted_recovery(CohortAnalysis("", list(scores.columns), pd.DataFrame(), list(scores.columns),
                                            correlations), {}, pairs, Q)["behaviour"]
    return {"pairs_tested": int(correlations.table["testable"].sum()), "significant": found["significant_pairs"],
            "planted_found": len(found["found"]), "of": len(pairs), "false_discoveries": found["false_discoveries"]}


def main(manifest_path: str = "data_manifest.yaml") -> None:
    manifest = load_manifest(manifest_path)
    study = validate_study(manifest, progress=False, check_voxels=False)
    if manifest.demo is None:
        raise SystemExit(f"{manifest_path}: this diagnostic needs the demo's ground truth (a `demo:` section)")
    truth = json.loads((manifest.resolve(manifest.demo.folder) / "ground_truth.json").read_text())
    run_dir = RunStore(manifest.output_dir).latest()
    run = json.loads((run_dir / "run.json").read_text())
    table = pd.read_parquet(run_dir / "roi_scores.parquet").set_index("subject_id")
    rois = list(run["spatial"]["roi_scores"]["rois"])
    ids = list(table.index)
    mask, labels = study.brain_mask, study.atlas_labels[study.brain_mask]

    cohort = truth["planted_cohort"]
    members = list(table.index[table["cohort"] == cohort])
    subgroup = [i for i in members if i in set(truth["planted_subgroup"])]
    prototype = [i for i in run["som"]["prototypes"][cohort]["members"] if i in set(members)]
    reference = list(table.index[(table["cohort"] == truth["reference_cohort"]) & (table["role"] != "train")])
    train_rows = [k for k, i in enumerate(ids) if table.loc[i, "cohort"] == truth["reference_cohort"]
                  and table.loc[i, "role"] == "train"]
    planted = {r for regions in truth["planted_regions"].values() for r in regions}

    raw = load_images(study, ids, progress=False).astype(np.float32)
    template = load_volume(manifest.template.image, study.grid).astype(np.float32)
    native = normalise_intensity(raw.copy(), mask, NORMALISATION)
    sized = normalise_intensity(to_template_size(raw, template), mask, NORMALISATION)
    maps = {"spatial_msma": table[rois].astype(float)}
    for space, images in (("native", native), ("template_size", sized)):
        z = z_maps(images, mask, train_rows)
        maps[f"intensity_drop ({space})"] = roi_scores(-z, labels, study.label_names, ids)[rois]
        maps[f"intensity_abs ({space})"] = roi_scores(np.abs(z), labels, study.label_names, ids)[rois]
    group_of = {region: group for group, regions in truth["planted_regions"].items() for region in regions}
    maps["true severity (generator)"] = pd.DataFrame(
        {roi: [truth["subjects"].get(i, {}).get("severity", {}).get(group_of.get(roi), 0.0) for i in ids]
         for roi in rois},
        index=ids,
    )

    results = {}
    for name, scores in maps.items():
        kept = atypical_rois(scores, reference, members)
        for grouping, group in (("planted subgroup", subgroup), ("SOM prototype", prototype)):
            rest = [i for i in members if i not in set(group)]
            results[f"{name} | {grouping}"] = recovery(scores, group, rest, kept, truth["planted_regions"])

    print(f"run {run_dir.name}: {cohort}, {len(subgroup)} planted subgroup members, {len(prototype)} in the SOM "
          f"prototype, {len(members)} in the cohort; {len(planted)} planted regions of {len(rois)} ROIs")
    rows = []
    for key, result in results.items():
        name, grouping = key.split(" | ")
        row = {"ROI score": name, "group vs rest": grouping}
        for test, figures in result.items():
            fdp = figures["false_discovery_proportion"]
            row[test] = (f"{figures['significant']}/{figures['tested']} sig, recall {figures['recall']:.2f}, "
                         f"FDP {'-' if fdp is None else f'{fdp:.2f}'}")
        rows.append(row)
    with pd.option_context("display.width", 250, "display.max_colwidth", 60):
        print(pd.DataFrame(rows).to_string(index=False))
    behaviour = study.behaviour.reindex(members)
    severity = pd.DataFrame(
        {region: [truth["subjects"][i]["severity"].get(group, 0.0) for i in members]
         for group, regions in truth["planted_regions"].items() for region in regions},
        index=members,
    )
    pairs = truth["planted_behaviour_pairs"]
    behaviour_results = {"true severity": behaviour_recovery(severity, behaviour, pairs)}
    for name in ("spatial_msma", "intensity_drop (native)", "intensity_drop (template_size)"):
        behaviour_results[name] = behaviour_recovery(maps[name].loc[members, sorted(planted)], behaviour, pairs)
    print(f"\nbehaviour step on the {len(planted)} planted regions x {behaviour.shape[1]} scores, "
          f"{len(members)} cohort members, BH q < {Q}:")
    print(pd.DataFrame(behaviour_results).T.to_string())
    print(json.dumps({"run_id": run_dir.name, "results": results, "behaviour": behaviour_results}))


if __name__ == "__main__":
    main(*sys.argv[1:])
