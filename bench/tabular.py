"""GNSM against the shallow baselines (Isolation Forest, ECOD) on the generated tabular sets, by the protocol of the
GNSM paper's table 2 (dissertation table 4.2): each set's inliers split 80/10/10 into train, validation (early
stopping) and test; GNSM's Gaussian mixture fitted on the train and validation rows' score norms; every method
scores the test inliers and all anomalies; average precision, mean and SD over seeds.

Usage::

    .venv/bin/python bench/tabular.py [--seeds 5] [--data-seed 0] [--profile default] [--sets NAME,...]
    .venv/bin/python bench/tabular.py --speed          # training time on a 10,000-row, 40-column table

The data are generated once (``--data-seed``); seed s draws the split and seeds GNSM and Isolation Forest, as in the
paper, where the data sets are fixed and five seeds vary the split and the model. ``Oracle`` is the negative
log-likelihood under the generator's true inlier model, the ceiling a joint model can approach; ``ratio`` is the
test set's anomaly ratio, the AP of a random score. No categorical anomaly-detection set ships inside a package
this project can install (see docs/gnsm.md), so all sets are generated. APs are printed in percent like table 4.2;
the last line is a JSON object of the same numbers (fractions) and the wall-clock seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

from analysis.detection.detectors import KNNDetector
from analysis.tabular.baselines import BASELINES
from analysis.tabular.datasets import TabularSet, benchmark_sets, wide_set
from analysis.tabular.encoding import fit_encoder
from analysis.tabular.protocol import Split, average_precision, split, summarise
from analysis.tabular.schema import TabularSchema
from pipeline.tabular import FitOptions, fit_detector, get_profile, norms_of, train_network


def gnsm(data: TabularSet, rows: Split, seed: int, options: FitOptions) -> tuple[dict[str, np.ndarray], dict]:
    """GNSM-MSMA scores of ``rows.test``: the network trained on ``rows.train`` and early-stopped on ``rows.val``,
    the detectors (the Gaussian mixture, the default, and KNN) fitted on the norms of both."""
    profile = get_profile(FitOptions(profile=options.profile, seed=seed, progress=False, variant=options.variant))
    schema = TabularSchema.from_columns(data.columns)
    encoder = fit_encoder(data.table.iloc[rows.train], schema, data.name)
    encoded = encoder.transform(data.table, data.name)
    result = train_network(encoded.subset(rows.train), encoded.subset(rows.val), profile, progress=False)
    fitted = norms_of(result.model, encoded.subset(np.concatenate([rows.train, rows.val])), profile.read_out)
    test = norms_of(result.model, encoded.subset(rows.test), profile.read_out)
    name = f"GNSM[{options.variant}]"
    scores = {f"{name} GMM": fit_detector(fitted, seed).score_samples(test),
              f"{name} KNN": KNNDetector().fit(fitted).score_samples(test)}
    return scores, {"steps": result.steps, "stopped": result.stopped, "seconds": round(result.seconds, 1)}


def speed(profile_name: str) -> None:
    """Train on :func:`wide_set` (10,000 rows x 40 columns, 90/10 split) until early stopping or the profile's
    step budget; print the time."""
    data = wide_set()
    rows = split(np.zeros(len(data.table), dtype=bool), 0)
    train = np.concatenate([rows.train, rows.test])
    profile = get_profile(FitOptions(profile=profile_name, progress=True))
    encoder = fit_encoder(data.table.iloc[train], TabularSchema.from_columns(data.columns), data.name)
    encoded = encoder.transform(data.table, data.name)
    result = train_network(encoded.subset(train), encoded.subset(rows.val), profile, progress=True)
    print(f"{len(data.table)} rows x {len(data.columns)} columns ({sum(encoded.sizes)} one-hot features), "
          f"profile {profile_name}: {result.steps} steps in {result.seconds:.0f} s, stopped by {result.stopped}, "
          f"{os.cpu_count()} cores")
    print(json.dumps({"rows": len(data.table), "columns": len(data.columns), "steps": result.steps,
                      "stopped": result.stopped, "seconds": round(result.seconds, 1),
                      "best_val_loss": round(result.best_val_loss, 5)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--profile", default="default", help="GNSM profile of pipeline.tabular (default, fast)")
    parser.add_argument("--sets", help="comma-separated data set names (default: all)")
    parser.add_argument("--variants", default="paper", help="comma-separated GNSM variants of pipeline.tabular "
                        "(paper, paper-mode, smoothed; default paper)")
    parser.add_argument("--speed", action="store_true", help="time training on a 10,000 x 40 table instead")
    args = parser.parse_args()
    if args.speed:
        speed(args.profile)
        return

    start = time.perf_counter()
    records, ratios, fits = [], {}, []
    sets = benchmark_sets(args.data_seed)
    if args.sets:
        wanted = args.sets.split(",")
        sets = [s for s in sets if s.name in wanted]
    for data in sets:
        for seed in range(args.seeds):
            rows = split(data.is_anomaly, seed)
            labels = data.is_anomaly[rows.test]
            ratios[data.name] = float(labels.mean())
            scores = {"Oracle": data.oracle_nll[rows.test]}
            scores.update({name: method(data, rows, seed) for name, method in BASELINES.items()})
            for variant in args.variants.split(","):
                more, fit = gnsm(data, rows, seed, FitOptions(profile=args.profile, variant=variant))
                scores.update(more)
                fits.append({"dataset": data.name, "seed": seed, "variant": variant, **fit})
            records += [
                {"dataset": data.name, "method": name, "seed": seed, "ap": average_precision(s, labels)}
                for name, s in scores.items()
            ]
            print(f"{data.name} seed {seed}: " + ", ".join(f"{r['method']} {100 * r['ap']:.1f}"
                                                             for r in records[-len(scores):])
                  + f" (last GNSM fit: {fit['steps']} steps, {fit['seconds']} s, {fit['stopped']})", flush=True)
    summary = summarise(records)

    methods = list(dict.fromkeys(r["method"] for r in records))
    width = max(14, *(len(m) for m in methods))
    print(f"{'dataset':<24} {'ratio':>6} " + " ".join(f"{m:>{width}}" for m in methods))
    for dataset, ratio in ratios.items():
        cells = [f"{100 * summary.loc[(dataset, m), 'mean']:6.2f} ± {100 * summary.loc[(dataset, m), 'sd']:5.2f}"
                 for m in methods]
        print(f"{dataset:<24} {ratio:6.2f} " + " ".join(f"{c:>{width}}" for c in cells))
    average = {m: float(np.mean([summary.loc[(d, m), "mean"] for d in ratios])) for m in methods}
    print(f"{'average':<24} {'':>6} " + " ".join(f"{100 * average[m]:{width}.2f}" for m in methods))
    seconds = time.perf_counter() - start
    print(f"{args.seeds} seeds, profile {args.profile}, {seconds:.0f} s")
    print(json.dumps({
        "ratio": ratios,
        "ap": {f"{d}/{m}": {"mean": round(float(row["mean"]), 4), "sd": round(float(row["sd"]), 4)}
               for (d, m), row in summary.iterrows()},
        "average": {m: round(v, 4) for m, v in average.items()},
        "profile": args.profile, "variants": args.variants.split(","), "fits": fits, "seconds": round(seconds, 1),
    }))


if __name__ == "__main__":
    main()
