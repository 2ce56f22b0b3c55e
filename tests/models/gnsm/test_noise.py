"""ExpConcrete noise: the closed-form score (eq. 4.9) against autograd's gradient of the log-density (eq. 4.2), the
density itself against a Monte-Carlo check, and the sampler's properties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.gnsm.noise import (
    Blocks,
    NoiseScales,
    exp_concrete_log_density,
    exp_concrete_score,
    gumbel,
    onehot_logits,
    sample_exp_concrete,
)

SIZES = (3, 2, 5, 4)


def _onehot(rng: np.random.Generator, n: int, sizes=SIZES) -> torch.Tensor:
    parts = [np.eye(k)[rng.integers(k, size=n)] for k in sizes]
    return torch.from_numpy(np.concatenate(parts, axis=1)).double()


def test_closed_form_score_equals_autograd_of_the_log_density():
    rng = np.random.default_rng(3)
    blocks = Blocks(SIZES)
    n = 7
    logits = onehot_logits(_onehot(rng, n), blocks)
    lam = torch.from_numpy(rng.uniform(2, 20, n))
    y = sample_exp_concrete(logits, lam, blocks, gumbel((n, blocks.width), torch.Generator().manual_seed(1)).double())
    y = y.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(exp_concrete_log_density(y, logits, lam, blocks).sum(), y)
    closed = exp_concrete_score(y.detach(), logits, lam, blocks)
    relative = (closed - grad).abs() / grad.abs().clamp_min(1e-12)
    assert float(relative.max()) < 1e-5


def test_log_density_integrates_to_one_for_two_levels():
    # For K = 2 the ExpConcrete variable is one-dimensional: y = (-softplus(-d), -softplus(d)) with d = y1 - y2
    # (logsumexp 0). Eq. 4.2 is then the density of d (it reduces to lam * logistic_pdf(lam d - logit)), so it
    # integrates to 1 over d.
    blocks = Blocks((2,))
    logits = torch.log(torch.tensor([[0.7, 0.3]], dtype=torch.float64))
    lam = torch.tensor([1.7], dtype=torch.float64)
    d = torch.linspace(-40, 40, 400_001, dtype=torch.float64)
    y = torch.stack([-torch.nn.functional.softplus(-d), -torch.nn.functional.softplus(d)], dim=1)
    density = torch.exp(exp_concrete_log_density(y, logits.expand(len(d), 2), lam.expand(len(d)), blocks))
    assert float(torch.trapezoid(density, d)) == pytest.approx(1.0, abs=1e-6)
    logit = math.log(0.7 / 0.3)
    u = 1.7 * d - logit
    logistic = 1.7 * torch.exp(-u) / (1 + torch.exp(-u)) ** 2
    assert torch.allclose(density, logistic, atol=1e-10)


def test_samples_lie_on_the_log_simplex_and_their_logit_noise_is_the_gumbel_softmax():
    blocks = Blocks(SIZES)
    rng = np.random.default_rng(0)
    logits = onehot_logits(_onehot(rng, 11), blocks).float()
    lam = torch.full((11,), 3.0)
    g = gumbel((11, blocks.width), torch.Generator().manual_seed(2))
    y = sample_exp_concrete(logits, lam, blocks, g)
    assert torch.allclose(blocks.logsumexp(y), torch.zeros(11, len(SIZES)), atol=1e-5)
    # softmax(logits - lam y) = softmax(-g) within every block, whatever x and lam
    assert torch.allclose(blocks.softmax(logits - lam[:, None] * y), blocks.softmax(-g), atol=1e-5)


def test_low_temperature_samples_keep_the_level_and_high_ones_approach_uniform():
    blocks = Blocks((4,))
    onehot = torch.zeros(20_000, 4)
    onehot[:, 2] = 1
    logits = onehot_logits(onehot, blocks)
    g = gumbel(tuple(onehot.shape), torch.Generator().manual_seed(5))
    cold = sample_exp_concrete(logits, torch.full((20_000,), 2.0), blocks, g).exp()
    hot = sample_exp_concrete(logits, torch.full((20_000,), 20.0), blocks, g).exp()
    assert float((cold.argmax(1) == 2).float().mean()) > 0.99
    # at lam = 20 the clamped zeros (log 1e-5) sit only 0.58 below the level: close to uniform, not at it
    assert float(hot.mean(0).max()) < 0.4 and float(hot.mean(0).min()) > 0.2
    assert float(hot.max(1).values.mean()) < float(cold.max(1).values.mean())


def test_blocks_softmax_matches_a_loop_over_features():
    blocks = Blocks(SIZES)
    x = torch.randn(6, blocks.width, generator=torch.Generator().manual_seed(4))
    expected = torch.cat([torch.softmax(part, dim=1) for part in torch.split(x, list(SIZES), dim=1)], dim=1)
    assert torch.allclose(blocks.softmax(x), expected, atol=1e-6)
    assert torch.allclose(blocks.sum(x), torch.stack([p.sum(1) for p in torch.split(x, list(SIZES), 1)], 1))


def test_noise_scales_are_geometric_and_ascending():
    scales = NoiseScales()
    lam = scales.temperatures().double().numpy()
    assert lam[0] == pytest.approx(2.0) and lam[-1] == pytest.approx(20.0) and len(lam) == 20
    assert np.allclose(np.diff(np.log(lam)), math.log(10) / 19, rtol=1e-5)
    with pytest.raises(ValueError, match="lam_min"):
        NoiseScales(lam_min=0)
    with pytest.raises(ValueError, match="at least 2 levels"):
        Blocks((3, 1))


def test_the_temperature_never_hides_the_level_only_delta_does():
    # argmax(y) = argmax(log alpha + G) at every temperature; P(argmax = level) = (1 + delta) / (1 + K delta)
    blocks = Blocks((3,))
    onehot = torch.zeros(40_000, 3, dtype=torch.float64)
    onehot[:, 1] = 1
    g = gumbel(tuple(onehot.shape), torch.Generator().manual_seed(9)).double()
    for delta in (1e-5, 0.5):
        logits = onehot_logits(onehot, blocks, delta)
        picks = [sample_exp_concrete(logits, torch.full((40_000,), lam, dtype=torch.float64), blocks, g).argmax(1)
                 for lam in (2.0, 20.0)]
        assert torch.equal(picks[0], picks[1])
        kept = float((picks[0] == 1).double().mean())
        assert kept == pytest.approx((1 + delta) / (1 + 3 * delta), abs=0.01)


def test_per_row_delta_matches_a_scalar_delta_row_by_row():
    blocks = Blocks((2, 3))
    onehot = torch.tensor([[1.0, 0, 0, 0, 1], [0, 1, 1, 0, 0]])
    per_row = onehot_logits(onehot, blocks, torch.tensor([0.1, 0.7]))
    assert torch.allclose(per_row[0], onehot_logits(onehot[:1], blocks, 0.1)[0])
    assert torch.allclose(per_row[1], onehot_logits(onehot[1:], blocks, 0.7)[0])
    assert torch.allclose(blocks.logsumexp(per_row), torch.zeros(2, 2), atol=1e-6)
