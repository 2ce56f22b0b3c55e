"""Speed of multiscale score-norm extraction on the demo grid, against the naive loop in the same run.

Usage: .venv/bin/python bench/score_norms.py [--subjects 24] [--scales 20] [--grid 28 32 28]

The naive loop runs one forward pass per scale per subject (batch 1, float32, contiguous memory, ``no_grad``);
the batched path is :func:`models.score_model.norms.score_norms` (several subjects at one scale per pass,
channels-last-3d, ``inference_mode``). Both use the default profile's network with randomised output weights (an
untrained network's residual is zero, which would flatter neither path), on synthetic volumes of the demo grid.
The last line is a JSON object: subjects per second of both paths, the speed-up, achieved GFLOP/s (forward-pass
FLOPs counted by ``torch.utils.flop_counter``) and the largest relative difference of the norms.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from models.profiles import get_profile
from models.score_model.network import ScoreNet, count_parameters
from models.score_model.norms import score_norms, score_norms_naive
from models.score_model.sde import VESchedule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=24)
    parser.add_argument("--scales", type=int, default=20)
    parser.add_argument("--grid", type=int, nargs=3, default=(28, 32, 28))
    parser.add_argument("--batch", type=int, default=get_profile("default").inference_batch)
    parser.add_argument("--rank", type=int, default=40, help="rank of the analytic Gaussian (the demo chooses 40)")
    args = parser.parse_args()
    grid = tuple(args.grid)

    torch.manual_seed(0)
    model = ScoreNet(get_profile("default").net, grid, rank=args.rank)
    torch.nn.init.normal_(model.head.weight, std=0.05)
    rng = np.random.default_rng(0)
    mask = np.zeros(grid, dtype=bool)
    mask[2:-2, 2:-2, 2:-2] = True
    images = (rng.random((args.subjects, *grid), dtype=np.float32) * mask).astype(np.float32)
    factors = 0.05 * torch.randn(args.rank, *grid)
    model.set_gaussian(torch.from_numpy(images.mean(0)), torch.from_numpy(images.var(0) + 0.01), factors)
    sigmas = VESchedule(0.08, 20.0).sigmas(args.scales).numpy()

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.from_numpy(images[:1, None]), torch.tensor(sigmas[:1]))
    flops_per_pass = counter.get_total_flops()

    score_norms(model, images[:2], mask, sigmas, batch_size=args.batch)  # warm-up (allocator, kernels)
    score_norms_naive(model, images[:1], mask, sigmas[:2])

    start = time.perf_counter()
    naive = score_norms_naive(model, images, mask, sigmas)
    naive_s = time.perf_counter() - start
    start = time.perf_counter()
    batched = score_norms(model, images, mask, sigmas, batch_size=args.batch).norms
    batched_s = time.perf_counter() - start

    passes = args.subjects * args.scales
    result = {
        "grid": list(grid),
        "subjects": args.subjects,
        "scales": args.scales,
        "parameters": count_parameters(model),
        "threads": torch.get_num_threads(),
        "naive_subjects_per_s": round(args.subjects / naive_s, 3),
        "batched_subjects_per_s": round(args.subjects / batched_s, 3),
        "speedup": round(naive_s / batched_s, 2),
        "naive_gflops_per_s": round(flops_per_pass * passes / naive_s / 1e9, 2),
        "batched_gflops_per_s": round(flops_per_pass * passes / batched_s / 1e9, 2),
        "max_relative_difference": float(np.max(np.abs(batched - naive) / np.abs(naive))),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
