"""Which prototype definition recovers a planted subgroup: precision and recall against subgroup size and strength.

Usage: .venv/bin/python experiments/prototype_definitions.py [data_manifest.yaml] [--seeds N] [--cache FILE.npz]
(after `make demo`; about 11 minutes on 2 cores with the default 3 seeds)

A cohort's maximal prototype is the single SOM unit holding most of it (dissertation ch. 6.2); the definitions of
:mod:`analysis.exploration.prototypes` gather a prototype from several units. This script measures each of them on
the Down-syndrome-like cohort of the demo and of variants of it:

- ``default``: the latest run itself (its score norms, its planted subgroup of ``ground_truth.json``);
- variants: the Down-syndrome-like cohort regenerated with 24 subjects, a planted subgroup of 6, 10 or 14
  (three quarters female, as in the demo) and its regional volume and intensity changes scaled by 0.35, 0.5, 0.75
  or 1,
  with several generator seeds. Only those 24 subjects are simulated (the demo's generator, on the run's template
  grid) and scored with the run's trained score network (as the refresh scores: brain-p99 intensity
  normalisation, the run's sigmas); every other subject keeps the run's score norms, the run's Down-syndrome rows
  are replaced by the variant's.

Every map is fitted as the refresh fits it (:func:`analysis.exploration.som.fit_cohort_map`, 7 x 9 on all subjects'
norms standardised by the reference cohort). For each definition, precision and recall of its members against the
planted subgroup (within the cohort); for each cohort, the subgroup's detection AUROC against the reference test
subjects on the GMM detector's score (fitted on the reference training subjects' run norms, as the refresh fits it).
The ``ceiling`` row knows the answer: the units where the planted subgroup outnumbers the rest of its cohort, the
best any union of the map's units can do.

Before measuring, it checks that it reproduces the run: the generator rebuilds a Down-syndrome-like subject's image
of the demo exactly, rescoring that image gives the run's norms, the GMM gives the run's detector scores and the
map gives the run's maximal prototype. The last line is a JSON object with every figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from threadpoolctl import threadpool_limits

from analysis.demo.config import demo_config_from_mapping
from analysis.demo.plan import plan_cohort
from analysis.demo.simulator import DemoSimulator
from analysis.detection.detectors import GaussianMixtureDetector
from analysis.detection.metrics import detection_metrics
from analysis.exploration import prototypes
from analysis.exploration.som import fit_cohort_map
from analysis.runs import layout
from analysis.runs.store import RunStore
from analysis.study.images import normalise_intensity
from analysis.study.manifest import load_manifest
from analysis.study.reference_space import ReferenceSpace
from analysis.study.volumes import load_volume
from models.checkpoint import load_score_model
from models.score_model.norms import score_norms
from pipeline.keys import NORMALISATION

COHORT_SIZE = 24
SUBGROUP_SIZES = (6, 10, 14)
STRENGTHS = (0.35, 0.5, 0.75, 1.0)
FEMALE_SHARE = 0.75
"""Of the planted subgroup, as in the demo (12 of 16)."""
DEFINITIONS = {
    "maximal": lambda som, labels, cohort, ref, X: prototypes.maximal(som, labels, cohort),
    "enriched": lambda som, labels, cohort, ref, X: prototypes.enriched(som, labels, cohort, ref),
    "enriched_bridged": lambda som, labels, cohort, ref, X: prototypes.enriched(som, labels, cohort, ref,
                                                                                bridge_empty=True),
    "enriched_region": lambda som, labels, cohort, ref, X: prototypes.enriched_region(som, labels, cohort, ref),
    "superclass": lambda som, labels, cohort, ref, X: prototypes.superclass(som, labels, cohort),
    "stable": lambda som, labels, cohort, ref, X: prototypes.stable(som, labels, cohort, X),
}


class Scorer:
    """The run's score network and sigmas, scoring volumes as the refresh does."""

    def __init__(self, run_dir, n_scales: int, mask: np.ndarray, batch_size: int = 4):
        self.model, schedule, _ = load_score_model(run_dir / layout.SCORE_MODEL.name)
        self.sigmas = schedule.sigmas(n_scales).numpy()
        recorded = json.loads((run_dir / layout.RECORD.name).read_text()).get("schedule", {}).get("sigmas")
        if recorded is not None and not np.allclose(recorded, self.sigmas, rtol=1e-6):
            raise SystemExit("the checkpoint's schedule does not give the run's sigmas")
        self.mask, self.batch_size = mask, batch_size

    def __call__(self, images: np.ndarray) -> np.ndarray:
        images = normalise_intensity(np.array(images, dtype=np.float32), self.mask, NORMALISATION)
        return score_norms(self.model, images, self.mask, self.sigmas, batch_size=self.batch_size).norms


def recovery(prototype, planted: set[int]) -> dict:
    found = set(prototype.members.tolist())
    hit = len(found & planted)
    return {"size": len(found), "units": len(prototype.units), "precision": hit / len(found) if found else 0.0,
            "recall": hit / len(planted), "fallback": prototype.note is not None}


def ceiling(som, cohorts: np.ndarray, cohort: str, planted: set[int]) -> dict:
    """What the map allows, knowing the answer: the units where the planted subgroup outnumbers the rest of the
    cohort (the union of units with the most planted minus unplanted members)."""
    rows = np.flatnonzero(cohorts == cohort)
    flat = som.bmu_[rows, 0] * som.weights_.shape[1] + som.bmu_[rows, 1]
    is_planted = np.isin(rows, sorted(planted))
    units = [u for u in np.unique(flat) if is_planted[flat == u].sum() > (~is_planted[flat == u]).sum()]
    found = set(rows[np.isin(flat, units)].tolist())
    hit = len(found & planted)
    return {"size": len(found), "units": len(units), "precision": hit / len(found) if found else 0.0,
            "recall": hit / len(planted), "fallback": False}


def measure(norms: np.ndarray, cohorts: np.ndarray, ids: list[str], planted: set[int], cohort: str,
            reference: str) -> dict:
    """Every definition's recovery of ``planted`` (row indices) on the map the refresh would fit, and the map's
    ceiling (``ceiling``, which knows the answer)."""
    _, _, som = fit_cohort_map(norms, ids, cohorts, reference)
    measured = {name: recovery(define(som, cohorts, cohort, reference, norms), planted)
                for name, define in DEFINITIONS.items()}
    return {**measured, "ceiling": ceiling(som, cohorts, cohort, planted)}


def variant_config(base, size: int, strength: float, seed: int):
    sizes = dataclasses.replace(base.sizes, down_syndrome=COHORT_SIZE, down_syndrome_subgroup=size,
                                subgroup_female=round(FEMALE_SHARE * size))
    effects = dataclasses.replace(
        base.effects,
        subgroup_region_volume_change=base.effects.subgroup_region_volume_change * strength,
        subgroup_region_intensity_change=base.effects.subgroup_region_intensity_change * strength,
    )
    return dataclasses.replace(base, seed=seed, sizes=sizes, effects=effects)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("manifest", nargs="?", default="data_manifest.yaml")
    parser.add_argument("--seeds", type=int, default=3, help="generator seeds per (size, strength) (default 3)")
    parser.add_argument("--cache", help="an .npz file keeping each variant's score norms (read when it holds them "
                        "for this run, so a rerun skips the simulation and scoring)")
    args = parser.parse_args()
    torch.set_num_threads(2)
    started = time.time()

    manifest = load_manifest(args.manifest)
    if manifest.demo is None:
        raise SystemExit(f"{args.manifest}: this measurement needs the demo's ground truth (a `demo:` section)")
    demo_folder = manifest.resolve(manifest.demo.folder)
    truth = json.loads((demo_folder / "ground_truth.json").read_text())
    base = demo_config_from_mapping(truth["config"])
    cohort, reference = truth["planted_cohort"], truth["reference_cohort"]
    run_dir = RunStore(manifest.output_dir).latest()
    run = json.loads((run_dir / layout.RECORD.name).read_text())
    table = pd.read_parquet(run_dir / layout.SCORE_NORMS.name)
    columns = [c for c in table.columns if c.startswith("norm_")]
    norms, cohorts, ids = table[columns].to_numpy(), table["cohort"].to_numpy(), table["subject_id"].tolist()
    print(f"run {run_dir.name}: {len(ids)} subjects, {len(columns)} scales; generator config of {demo_folder}")

    # The GMM detector as the refresh fits it, on the reference training subjects' run norms.
    train_rows = np.flatnonzero(table["role"].to_numpy() == "train")
    test_rows = np.flatnonzero((cohorts == reference) & (table["split"].to_numpy() == "test"))
    with threadpool_limits(1):
        gmm = GaussianMixtureDetector(random_state=manifest.model.seed).fit(norms[train_rows])
    detector = pd.read_parquet(run_dir / layout.DETECTOR_SCORES.name)["msma_gmm"].to_numpy()
    if not np.allclose(gmm.score_samples(norms), detector, rtol=1e-6, atol=1e-6):
        raise SystemExit("the GMM refitted here does not give the run's msma_gmm scores")
    reference_test = gmm.score_samples(norms[test_rows])

    def auroc(subgroup_norms: np.ndarray) -> float:
        """Detection AUROC of a subgroup against the reference test subjects on the GMM score."""
        return detection_metrics(reference_test, gmm.score_samples(subgroup_norms))["auroc"]

    # The default demo: the run itself.
    planted_ids = set(truth["planted_subgroup"])
    planted = {i for i, s in enumerate(ids) if s in planted_ids}
    _, _, som = fit_cohort_map(norms, ids, cohorts, reference)
    if [ids[i] for i in som.maximal_prototype(cohorts, cohort).members] != run["som"]["prototypes"][cohort]["members"]:
        raise SystemExit("the map fitted here does not give the run's maximal prototype")
    results = [{"variant": "default", "cohort_size": int((cohorts == cohort).sum()), "subgroup": len(planted),
                "strength": 1.0, "seed": base.seed, "auroc": auroc(norms[sorted(planted)]),
                "definitions": measure(norms, cohorts, ids, planted, cohort, reference)}]

    # The generator and the score network reproduce the run on one of its Down-syndrome-like subjects.
    space = ReferenceSpace(base.voxel_size_mm)
    simulator = DemoSimulator(space, base)
    mask = space.brain_mask
    scorer = Scorer(run_dir, len(columns), mask)
    first = next(p for p in plan_cohort(base) if p.cohort == cohort)
    on_disk = load_volume(demo_folder / "images" / f"{first.subject_id}_T1w.nii.gz", space.grid)
    rebuilt = simulator.simulate(first).image
    if not np.array_equal(rebuilt, on_disk):
        raise SystemExit(f"the generator here does not rebuild {first.subject_id} of the demo "
                         f"(max difference {np.abs(rebuilt - on_disk).max():.3g}): run it with the code that built it")
    rescored = scorer(on_disk[None])[0]
    if not np.allclose(rescored, norms[ids.index(first.subject_id)], rtol=1e-4):
        raise SystemExit(f"rescoring {first.subject_id} does not give the run's norms")
    print(f"checks passed: generator, score network, GMM and map reproduce the run ({time.time() - started:.0f} s)")

    cache = {}
    if args.cache and Path(args.cache).is_file():
        cache = dict(np.load(args.cache))
    keep = np.flatnonzero(cohorts != cohort)
    for size in SUBGROUP_SIZES:
        for strength in STRENGTHS:
            for seed in range(1, args.seeds + 1):
                config = variant_config(base, size, strength, seed)
                plans = [p for p in plan_cohort(config) if p.cohort == cohort]
                key = f"{run['score_model']['key']}_{config.digest()}"  # the same network scores alike in any run
                if key not in cache:
                    cache[key] = scorer(np.stack([simulator.simulate(p).image for p in plans]))
                    if args.cache:
                        np.savez(args.cache, **cache)
                variant_norms = np.vstack([norms[keep], cache[key]])
                variant_cohorts = np.concatenate([cohorts[keep], [cohort] * len(plans)])
                variant_ids = [ids[i] for i in keep] + [f"variant-{p.subject_id}" for p in plans]
                rows = {len(keep) + k for k, p in enumerate(plans) if p.phenotype.label == "down_syndrome_subgroup"}
                result = {"variant": f"n{size}_x{strength:g}_s{seed}", "cohort_size": len(plans), "subgroup": size,
                          "strength": strength, "seed": seed, "auroc": auroc(variant_norms[sorted(rows)]),
                          "definitions": measure(variant_norms, variant_cohorts, variant_ids, rows, cohort,
                                                 reference)}
                results.append(result)
                line = "  ".join(f"{name} {r['precision']:.2f}/{r['recall']:.2f}"
                                 for name, r in result["definitions"].items())
                print(f"{result['variant']:<14} AUROC {result['auroc']:.3f}  {line}  ({time.time() - started:.0f} s)",
                      flush=True)

    rows = [{"variant": r["variant"], "subgroup": r["subgroup"], "strength": r["strength"], "auroc": r["auroc"],
             "definition": name, **m} for r in results for name, m in r["definitions"].items()]
    frame = pd.DataFrame(rows)
    frame["both_07"] = (frame["precision"] >= 0.7) & (frame["recall"] >= 0.7)
    summary = (frame[frame["variant"] != "default"]
               .groupby(["subgroup", "strength", "definition"], sort=True)
               .agg(auroc=("auroc", "mean"), precision=("precision", "mean"), recall=("recall", "mean"),
                    size=("size", "mean"), both_07=("both_07", "mean"), fallback=("fallback", "mean"))
               .reset_index())
    pd.set_option("display.width", 200)
    print("\nmean over seeds (precision, recall of the planted subgroup; both_07: share of seeds with both >= 0.7)")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
    cells = summary.assign(cell=[f"{p:.2f} / {r:.2f}" for p, r in zip(summary.precision, summary.recall, strict=True)])
    table = cells.pivot_table(index=["subgroup", "strength"], columns="definition", values="cell", aggfunc="first")
    table.insert(0, "auroc", summary.groupby(["subgroup", "strength"])["auroc"].mean().map(lambda v: f"{v:.2f}"))
    print("\nprecision / recall, mean over seeds (ceiling: the units where the planted subgroup is the majority)")
    print(table[["auroc", *DEFINITIONS, "ceiling"]].to_string())
    overall = (frame[frame["variant"] != "default"].groupby("definition")
               .agg(precision=("precision", "mean"), recall=("recall", "mean"), both_07=("both_07", "mean")))
    print("\nall variants\n" + overall.to_string(float_format=lambda v: f"{v:.2f}"))
    print(f"\ndefault demo ({results[0]['subgroup']} planted of {results[0]['cohort_size']}, "
          f"AUROC {results[0]['auroc']:.3f})")
    for name, m in results[0]["definitions"].items():
        print(f"  {name:<17} size {m['size']:>2}  units {m['units']:>2}  precision {m['precision']:.2f}  "
              f"recall {m['recall']:.2f}")
    print(f"time {time.time() - started:.0f} s")
    print(json.dumps({"run": run_dir.name, "seconds": round(time.time() - started, 1), "results": results,
                      "summary": summary.to_dict(orient="records")}))


if __name__ == "__main__":
    main()
