"""Speed of the permutation Spearman correlations against a per-pair loop of scipy.stats.permutation_test.

Usage: .venv/bin/python bench/permutation.py [--rois 40] [--scores 35] [--subjects 28] [--permutations 10000]
       [--reference-pairs 20] [--repeats 7]

The case of dissertation ch. 6.3: 40 ROIs x 35 behavioural scores, 28 subjects, 10,000 permutations (the method
documents' own pipeline took hours). Two scipy loops (``permutation_test`` with ``permutation_type="pairings"``,
one call per pair) are timed on a few pairs and scaled to all pairs: with a vectorised Spearman statistic
(``--reference-pairs`` pairs), and as a user would write it, with ``spearmanr`` as the statistic (2 pairs).
:func:`analysis.exploration.correlations.spearman_permutation` runs on all pairs, at P permutations (the median of
``--repeats`` calls: the explorer reruns it on every selection) and once at 10 x P. The last
line is a JSON object with the times, the speed-ups and the largest p-value difference on the timed pairs (two
Monte-Carlo estimates; scipy's two-sided p is twice the smaller one-sided one).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
from scipy import stats

from analysis.exploration.correlations import spearman_permutation


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rois", type=int, default=40)
    parser.add_argument("--scores", type=int, default=35)
    parser.add_argument("--subjects", type=int, default=28)
    parser.add_argument("--permutations", type=int, default=10_000)
    parser.add_argument("--reference-pairs", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=7, help="timed calls at P permutations (median reported)")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rois = pd.DataFrame(rng.normal(size=(args.subjects, args.rois)), columns=[f"roi{j}" for j in range(args.rois)])
    scores = rng.normal(size=(args.subjects, args.scores))
    scores[rng.random(scores.shape) < 0.06] = np.nan
    behaviour = pd.DataFrame(scores, columns=[f"score{k}" for k in range(args.scores)])

    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        result = spearman_permutation(rois, behaviour, n_permutations=args.permutations, min_complete=10)
        times.append(time.perf_counter() - start)
    fast_s = float(np.median(times))
    start = time.perf_counter()
    spearman_permutation(rois, behaviour, n_permutations=10 * args.permutations, min_complete=10)
    fast_10x_s = time.perf_counter() - start

    def statistic(a, b, axis=-1):
        ra, rb = stats.rankdata(a, axis=axis), stats.rankdata(b, axis=axis)
        ra = ra - ra.mean(axis=axis, keepdims=True)
        rb = rb - rb.mean(axis=axis, keepdims=True)
        return (ra * rb).sum(axis=axis) / np.sqrt((ra**2).sum(axis=axis) * (rb**2).sum(axis=axis))

    table = result.table.set_index(["roi", "behaviour"])
    pairs = [(f"roi{j % args.rois}", f"score{j % args.scores}") for j in range(args.reference_pairs)]
    differences = []
    start = time.perf_counter()
    for roi, score in pairs:
        keep = behaviour[score].notna().to_numpy()
        p = stats.permutation_test(
            (rois[roi].to_numpy()[keep], behaviour[score].to_numpy()[keep]),
            statistic,
            permutation_type="pairings",
            n_resamples=args.permutations,
            vectorized=True,
            random_state=1,
        ).pvalue
        differences.append(abs(p - table.loc[(roi, score), "p_perm"]))
    scipy_s = (time.perf_counter() - start) / len(pairs) * args.rois * args.scores

    # The loop as a user would write it: scipy's own spearmanr as the statistic, one resample per call.
    start = time.perf_counter()
    for roi, score in pairs[:2]:
        keep = behaviour[score].notna().to_numpy()
        stats.permutation_test(
            (rois[roi].to_numpy()[keep], behaviour[score].to_numpy()[keep]),
            lambda a, b: stats.spearmanr(a, b).statistic,
            permutation_type="pairings",
            n_resamples=args.permutations,
            vectorized=False,
            random_state=1,
        )
    spearmanr_s = (time.perf_counter() - start) / 2 * args.rois * args.scores

    print(
        json.dumps(
            {
                "pairs": args.rois * args.scores,
                "subjects": args.subjects,
                "permutations": args.permutations,
                "fast_s": round(fast_s, 4),
                "fast_s_first_call": round(times[0], 4),
                "fast_10x_permutations_s": round(fast_10x_s, 3),
                "scipy_loop_vectorised_statistic_s_estimated": round(scipy_s, 1),
                "scipy_loop_spearmanr_s_estimated": round(spearmanr_s, 1),
                "speedup_vs_vectorised_loop": round(scipy_s / fast_s, 1),
                "speedup_vs_spearmanr_loop": round(spearmanr_s / fast_s, 1),
                "max_abs_p_difference_on_timed_pairs": round(float(max(differences)), 4),
            }
        )
    )


if __name__ == "__main__":
    main()
