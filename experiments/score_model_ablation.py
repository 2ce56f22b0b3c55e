"""What each part of the score model buys on the demo: the README's ablation table.

Usage: .venv/bin/python experiments/score_model_ablation.py [data_manifest.yaml] [VARIANT ...]   (after `make demo`)

Runs a full refresh per variant of the default profile into ``.ablation_runs/<variant>/`` (never touching the
study's own ``runs/``) and prints, per variant, the AUROC of each cohort against the held-out reference test
subjects for the GMM detector on the trained model's norms. About 7 minutes per variant on two cores. Variants:

* ``default``: low-rank Gaussian score + learned residual, 3000 steps (what ``msma refresh`` does);
* ``net_over_sigma``: the plain NCSN parameterisation s = net / sigma, same training;
* ``steps6000``: the default trained twice as long.

Every run also reports the two no-network Gaussians (low-rank and per-voxel) for the same scales; they do not
depend on the variant.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from analysis.demo.truth import planted_truth
from analysis.runs.store import read_run
from analysis.study.manifest import load_manifest
from models.profiles import get_profile
from pipeline.refresh import refresh

VARIANTS = ("default", "net_over_sigma", "steps6000")


def variant_profile(name: str):
    profile = get_profile("default")
    if name == "net_over_sigma":
        net = dataclasses.replace(profile.net, parameterisation="net_over_sigma")
        return dataclasses.replace(profile, name=name, net=net)
    if name == "steps6000":
        train = dataclasses.replace(profile.train, max_steps=6000, patience=100)
        return dataclasses.replace(profile, name=name, train=train)
    if name == "default":
        return profile
    raise SystemExit(f"unknown variant {name!r}; expected some of {VARIANTS}")


def main(manifest_path: str = "data_manifest.yaml", *variants: str) -> None:
    manifest = load_manifest(manifest_path)
    rows = {}
    for name in variants or VARIANTS:
        out = Path(manifest.root) / ".ablation_runs" / name
        result = refresh(dataclasses.replace(manifest, output_dir=out), profile=variant_profile(name), progress=False,
                         truth=planted_truth(manifest))
        run = read_run(result.run_dir)
        for m in run["metrics"]:
            # the no-network Gaussians do not depend on the variant: reported once (GNSM's norms are not this table's)
            no_network = m["norms"] in ("lowrank", "gaussian") and name == (variants or VARIANTS)[0]
            if m["detector"] == "gmm" and (m["norms"] == "msma" or no_network):
                label = name if m["norms"] == "msma" else f"{m['norms']} (no network)"
                rows.setdefault(label, {})[m["group"]] = m["auroc"]
        print(f"{name}: {run['score_model']['steps']} steps in {run['score_model']['train_seconds']} s", flush=True)
    groups = list(next(iter(rows.values())))
    print("| score norms (GMM) | " + " | ".join(groups) + " |")
    print("|---|" + "---|" * len(groups))
    for label, values in rows.items():
        print(f"| {label} | " + " | ".join(f"{100 * values[g]:.1f}" for g in groups) + " |")
    print(json.dumps({"auroc_gmm": rows}))


if __name__ == "__main__":
    main(*sys.argv[1:])
