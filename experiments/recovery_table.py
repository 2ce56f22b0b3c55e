"""The chain's recovery of the demo's planted answer beside its oracle ceiling, for one or more demo studies.

Usage: .venv/bin/python experiments/recovery_table.py data_manifest.yaml [other/data_manifest.yaml ...]
(after `make demo`, and a refresh of each other study; about 30 s each)

For each study's latest run, two rows. ``chain``: what the refresh found (``run.json`` ``som.recovery``): the
Down-syndrome-like cohort's maximal prototype against the planted subgroup (precision, recall), the planted regions
among its significant ROIs with Bonferroni and with BH (recall, false discovery proportion), and the planted
behaviour pairs at BH q < 0.1. ``oracle``: the same chain, on the same ROI scores (adjusted for covariates when the
run has them), with the planted subgroup itself as the selection: the best any prototype could do with this map.
Prints a Markdown table and, last, a JSON object with every figure.
"""

from __future__ import annotations

import dataclasses
import json
import sys

from analysis.demo.config import read_demo_config
from analysis.demo.truth import planted_truth
from analysis.exploration.cohort_analysis import (
    HYPOTHESIS_Q,
    CohortAnalysis,
    behaviour_table,
    planted_recovery,
    region_step,
    split_cohort,
)
from analysis.exploration.power import detectable_effect
from analysis.runs.reader import open_run
from analysis.study.manifest import load_manifest


def _fdp(entry: dict) -> str:
    value = entry["false_discovery_proportion"]
    return "-" if value is None else f"{value:.2f}"


def _rb(power: dict) -> str:
    median, detectable = power["planted_median_rank_biserial"], power["detectable_rank_biserial"]
    shown = "-" if median is None else f"{median:.2f}"
    return f"{shown} / {'-' if detectable is None else f'{detectable:.2f}'} ({power['kept_rois']} kept ROIs)"


def oracle(run, truth) -> dict:
    """The chain with the planted subgroup as the selection, read with Bonferroni and with BH."""
    scores = run.roi_tables[run.default_roi_scores]
    cohort_ids = run.cohort_ids(truth.cohort)
    out = {"prototype_size": len(truth.subgroup), "precision": 1.0, "recall": 1.0}
    for correction in ("bonferroni", "bh"):
        step = region_step(scores, run.reference_ids, cohort_ids, truth.subgroup, correction=correction)
        table = behaviour_table(scores, run.behaviour, cohort_ids, step.significant_rois,
                                random_state=int(run.record.get("seed", 0)))
        analysis = CohortAnalysis(truth.cohort, step.kept_rois, step.tests, step.significant_rois,
                                  None if table is None else table.result())
        found = planted_recovery(analysis, truth.regions, truth.behaviour_pairs, HYPOTHESIS_Q)
        out["regions" if correction == "bonferroni" else "regions_bh"] = found["regions"]
        if correction == "bonferroni":
            out["behaviour"] = found["behaviour"]
    return out


def what_the_test_sees(run, truth, selection) -> dict:
    """For a grouping of the planted cohort: the planted regions' median rank-biserial among the kept ROIs, and
    the smallest rank-biserial the Bonferroni test over the kept ROIs detects with 80 % power."""
    scores = run.roi_tables[run.default_roi_scores]
    cohort_ids = run.cohort_ids(truth.cohort)
    step = region_step(scores, run.reference_ids, cohort_ids, selection)
    planted = {r for regions in truth.regions.values() for r in regions}
    tests = step.tests[step.tests["roi"].isin(planted)]
    inside, rest = split_cohort(cohort_ids, selection)
    effect = detectable_effect(len(inside), len(rest), max(1, len(step.kept_rois)))
    return {"kept_rois": len(step.kept_rois), "planted_kept": int(len(tests)),
            "planted_median_rank_biserial": float(tests["rank_biserial"].median()) if len(tests) else None,
            "detectable_rank_biserial": effect.rank_biserial, "sentence": effect.sentence}


def main(*manifests: str) -> None:
    rows, record = [], {}
    for path in manifests or ("data_manifest.yaml",):
        manifest = load_manifest(path, read_demo=read_demo_config)
        truth = planted_truth(manifest)
        if truth is None:
            raise SystemExit(f"{path}: not a demo study (no ground truth)")
        run = open_run(manifest)
        preset = (manifest.demo.settings or {}).get("preset", "default")
        chain = run.record["som"]["recovery"]
        both = {"chain": chain, "oracle": oracle(run, truth)}
        prototype = run.som.prototypes[truth.cohort]["members"]
        for name, selection in (("chain", prototype), ("oracle", list(truth.subgroup))):
            both[name] = {**both[name], "power": what_the_test_sees(run, truth, selection)}
        record[preset] = {"run_id": run.run_id, "roi_scores": run.default_roi_scores, **both}
        for name, r in both.items():
            b, bh = r["regions"], r.get("regions_bh") or {}
            pairs = r["behaviour"]
            rows.append(
                f"| {preset} | {name} | {r['prototype_size']} | {r['precision']:.2f} / {r['recall']:.2f} | "
                f"{b['recall']:.2f} ({b['significant']}) | {_fdp(b)} | "
                + (f"{bh['recall']:.2f} ({bh['significant']}) | {_fdp(bh)} | " if bh else "- | - | ")
                + f"{len(pairs['found'])} of {pairs['planted_pairs']} | {_rb(r['power'])} |"
            )
    print("| preset | grouping | members | precision / recall | planted-region recall, Bonferroni (significant) "
          "| FDP | recall, BH (significant) | FDP | planted behaviour pairs at BH q < 0.1 "
          "| planted regions' median rank-biserial / detectable at 80 % power |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    print("\n".join(rows))
    print(json.dumps(record, default=lambda o: dataclasses.asdict(o) if dataclasses.is_dataclass(o) else str(o)))


if __name__ == "__main__":
    main(*sys.argv[1:])
