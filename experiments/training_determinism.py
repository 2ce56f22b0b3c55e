"""Why two refreshes of the same demo with the same seed can differ: which parts of the score model's training are
bit-for-bit reproducible on a CPU.

Usage: .venv/bin/python experiments/training_determinism.py   (nothing to run first; about 20 s)

The demo cohort itself is generated deterministically: two builds (``analysis.demo.writer.build_demo_cohort``) with
PYTHONHASHSEED 1 and 2 gave the same 537 files byte for byte on 2026-12-02, equal to a third build. The
score network (the default profile's, on the demo's 4 mm grid shape) is then run on one random batch with 1 and 2
threads: the forward pass, and the gradient of a squared output. Both are compared bit for bit between two calls at
the same thread count and between thread counts. A gradient that depends on the thread count (the order of a
reduction) can also depend on the CPU's vector instructions, so a 3,000-step training is reproducible on one kind
of machine with one thread count; elsewhere last-bit differences can grow through training (not measured here).

The last line is a JSON object.
"""

from __future__ import annotations

import json

import torch

from models.score_model.network import ScoreNet, ScoreNetConfig

GRID = (40, 48, 40)


def _forward_and_gradient(net: ScoreNet, x: torch.Tensor, sigma: torch.Tensor, threads: int):
    torch.set_num_threads(threads)
    net.zero_grad()
    out = net(x, sigma)
    out.square().mean().backward()
    gradient = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]).clone()
    return out.detach().clone(), gradient


def main() -> None:
    torch.manual_seed(0)
    net = ScoreNet(ScoreNetConfig(), GRID)
    x = torch.randn(4, 1, *GRID)
    sigma = torch.full((4,), 0.3)
    one = _forward_and_gradient(net, x, sigma, 1)
    two = _forward_and_gradient(net, x, sigma, 2)
    two_again = _forward_and_gradient(net, x, sigma, 2)
    record = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "forward_same_threads_equal": bool(torch.equal(two[0], two_again[0])),
        "forward_1_vs_2_threads_equal": bool(torch.equal(one[0], two[0])),
        "gradient_same_threads_equal": bool(torch.equal(two[1], two_again[1])),
        "gradient_1_vs_2_threads_equal": bool(torch.equal(one[1], two[1])),
        "gradient_1_vs_2_threads_max_abs_diff": float((one[1] - two[1]).abs().max()),
    }
    for key, value in record.items():
        print(f"{key}: {value}")
    print(json.dumps(record))


if __name__ == "__main__":
    main()
