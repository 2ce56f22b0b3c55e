"""What the explorer's SOM input menu changes on the demo: the planted cohort's prototype on the map of the score
norms (the refresh's) and on the map of the score and GNSM norms side by side (the *+ GNSM* input).

Usage: .venv/bin/python experiments/gnsm_som_input.py [data_manifest.yaml]   (after `make demo`; the run needs the
manifest's gnsm: block)

For each input it prints the map's grid, the maximal prototype's unit and size and its precision and recall
against the demo's planted subgroup (``demo_data/ground_truth.json``), and the detection AUROC of the planted
subgroup for the MSMA GMM and the GNSM GMM from the run's metrics. Last line: one JSON object.
"""

from __future__ import annotations

import json
import sys

from analysis.demo.truth import planted_truth
from analysis.runs.reader import open_run
from analysis.study.manifest import load_manifest
from app.views import SOM_INPUTS, Explorer, MapGrid


def main(manifest_path: str = "data_manifest.yaml") -> None:
    manifest = load_manifest(manifest_path)
    truth = planted_truth(manifest)
    if truth is None:
        raise SystemExit(f"{manifest_path}: not a demo study (no ground truth to measure against)")
    run = open_run(manifest)
    ex = Explorer(run)
    if "gnsm" not in ex.som_inputs:
        raise SystemExit(f"run {run.run_id} has no GNSM norms: refresh with the manifest's gnsm: block")
    cohort, planted = truth.cohort, set(truth.subgroup)
    som = run.som
    result = {"run_id": run.run_id, "cohort": cohort, "planted": len(planted), "maps": {}}
    for norms in SOM_INPUTS:
        prototype = ex.map(MapGrid(som.n_rows, som.n_cols, som.topology, norms)).som.prototypes[cohort]
        members = set(prototype["members"])
        hits = len(members & planted)
        entry = {"unit": prototype["unit"], "size": len(members), "precision": hits / len(members),
                 "recall": hits / len(planted)}
        result["maps"][norms] = entry
        print(f"{SOM_INPUTS[norms]}: {som.n_rows} x {som.n_cols} map, maximal prototype at {tuple(entry['unit'])} "
              f"with {entry['size']} members, precision {entry['precision']:.2f}, recall {entry['recall']:.2f}")
    group = f"{cohort} (planted subgroup)"
    result["auroc_gmm"] = {row["norms"]: row["auroc"] for row in run.record.get("metrics") or []
                           if row.get("detector") == "gmm" and row.get("group") == group
                           and row.get("norms") in ("msma", "gnsm")}
    for norms, auroc in result["auroc_gmm"].items():
        print(f"{norms} GMM: planted subgroup vs held-out reference test subjects, AUROC {auroc:.3f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(*sys.argv[1:])
