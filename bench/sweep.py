"""Speed of the SOM grid-stability sweep: the 13 x 13 sweep (rows and columns 3..15) on 2,000 subjects x 20 norms.

Usage: .venv/bin/python bench/sweep.py [--subjects 2000] [--scales 20] [--first 3] [--last 15] [--jobs N]

The reference, measured in the same run, is minisom's own ``train_batch_offline`` (a Python loop over subjects)
for one 9 x 9 map, scaled to the whole sweep by the number of units of each grid. The last line is a JSON object:
the sweep's seconds, the worker processes it ran in, its CPU seconds over this process and its workers (steadier
than the wall clock on a shared machine), the estimated seconds of the minisom loop, and their ratio.
The goal is a sweep of at most 5 s on 2 cores, so the explorer can run it while the user waits.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
from minisom import MiniSom

from analysis.exploration.som import DEFAULT_ITERATIONS
from analysis.exploration.sweep import SweepGrids, grid_stability_sweep


def _cpu_seconds() -> float:
    """User and system CPU seconds of this process and of its finished children (the sweep's workers)."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--scales", type=int, default=20)
    parser.add_argument("--first", type=int, default=3)
    parser.add_argument("--last", type=int, default=15)
    parser.add_argument("--jobs", type=int, default=None)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    n_ds = args.subjects // 20
    logs = rng.normal(size=(args.subjects, args.scales))
    logs[:n_ds, :5] += 2.0
    X = np.exp(0.3 * logs)
    labels = np.array(["ds"] * n_ds + ["typical"] * (args.subjects - n_ds))
    sizes = range(args.first, args.last + 1)

    cpu_start = _cpu_seconds()
    start = time.perf_counter()
    table = grid_stability_sweep(X, labels, "ds", reference=labels == "typical",
                                 grids=SweepGrids(rows=sizes, cols=sizes), n_jobs=args.jobs, progress=False)
    sweep_s = time.perf_counter() - start
    sweep_cpu_s = _cpu_seconds() - cpu_start

    Z = (np.log(X) - np.log(X).mean(0)) / np.log(X).std(0)
    som = MiniSom(9, 9, args.scales, sigma=4.5, learning_rate=0.5)
    som.pca_weights_init(Z)
    iterations = 20
    start = time.perf_counter()
    som.train_batch_offline(Z, iterations)
    per_unit_iteration = (time.perf_counter() - start) / (81 * iterations)
    units = sum(r * c for r in sizes for c in sizes)
    minisom_s = per_unit_iteration * units * DEFAULT_ITERATIONS
    print(
        json.dumps(
            {
                "grids": len(table),
                "subjects": args.subjects,
                "scales": args.scales,
                "sweep_s": round(sweep_s, 2),
                "workers": args.jobs or len(os.sched_getaffinity(0)),
                "sweep_cpu_s": round(sweep_cpu_s, 1),
                "minisom_loop_s_estimated": round(minisom_s, 1),
                "speedup": round(minisom_s / sweep_s, 1),
                "largest_prototype": int(table["size"].max()),
            }
        )
    )


if __name__ == "__main__":
    main()
