"""Average precision of the shallow baselines (Isolation Forest, ECOD) on the generated tabular sets, the protocol
of table 4.2: each set's inliers split 80/10/10, fitted on the train inliers, scored on the test inliers and every
anomaly, mean and SD over seeds.

Usage: .venv/bin/python bench/tabular_baselines.py [--seeds 5] [--data-seed 0]

The data are generated once (``--data-seed``); each seed s draws the split and is the methods' ``random_state``, as
in the paper, where the data sets are fixed and five seeds vary the split and the model. ``Oracle`` is the
negative log-likelihood under the generator's true inlier model, the ceiling a joint model can approach; ``ratio``
is the test set's anomaly ratio, the AP of a random score. APs are printed in percent like table 4.2; the last line
is a JSON object of the same numbers (fractions).
"""

from __future__ import annotations

import argparse
import json
import time

from analysis.tabular.baselines import BASELINES
from analysis.tabular.datasets import benchmark_sets
from analysis.tabular.protocol import average_precision, split, summarise


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--data-seed", type=int, default=0)
    args = parser.parse_args()

    start = time.perf_counter()
    records, ratios = [], {}
    for data in benchmark_sets(args.data_seed):
        for seed in range(args.seeds):
            rows = split(data.is_anomaly, seed)
            labels = data.is_anomaly[rows.test]
            ratios[data.name] = float(labels.mean())
            scores = {"Oracle": data.oracle_nll[rows.test]}
            scores.update({name: method(data, rows, seed) for name, method in BASELINES.items()})
            records += [
                {"dataset": data.name, "method": name, "seed": seed, "ap": average_precision(s, labels)}
                for name, s in scores.items()
            ]
    summary = summarise(records)

    methods = list(dict.fromkeys(r["method"] for r in records))
    print(f"{'dataset':<24} {'ratio':>6} " + " ".join(f"{m:>14}" for m in methods))
    for dataset, ratio in ratios.items():
        cells = [f"{100 * summary.loc[(dataset, m), 'mean']:6.2f} ± {100 * summary.loc[(dataset, m), 'sd']:5.2f}"
                 for m in methods]
        print(f"{dataset:<24} {ratio:6.2f} " + " ".join(f"{c:>14}" for c in cells))
    print(f"{args.seeds} seeds, {time.perf_counter() - start:.1f} s")
    print(json.dumps({
        "ratio": ratios,
        "ap": {f"{d}/{m}": {"mean": round(float(row["mean"]), 4), "sd": round(float(row["sd"]), 4)}
               for (d, m), row in summary.iterrows()},
    }))


if __name__ == "__main__":
    main()
