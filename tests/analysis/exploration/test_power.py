"""What the region step's test can see: power and detectable effects checked against scipy's own test, simulated.

Every simulation runs :func:`scipy.stats.mannwhitneyu` (``method="auto"``, as the region step does) on normal scores
shifted by ``d`` within-cohort SDs, with a fixed seed. The beta approximation of the power is documented to be
within 0.02 of the exact power near 80 % (0.03 when only the two most extreme U reject), so a simulated power must
lie within that allowance plus three Monte Carlo standard errors; the complete-separation case is exact and gets
three standard errors alone.
"""

from __future__ import annotations

from math import comb, sqrt

import numpy as np
import pytest
from scipy.stats import mannwhitneyu, multivariate_normal, norm

from analysis.exploration.power import (
    DetectableEffect,
    critical_u,
    detectable_effect,
    mann_whitney_power,
    null_p_values,
    per_test_level,
    scipy_method,
    separation_probability,
    shift_probabilities,
    u_moments,
)

APPROXIMATION = 0.02
"""The documented accuracy of :func:`mann_whitney_power` near 80 % power."""


def _simulate(n1: int, n2: int, shift_sd: float, per_test_alpha: float, draws: int = 20_000, seed: int = 0):
    """Share of ``draws`` simulated experiments in which scipy's test gives p < ``per_test_alpha``, and its SE."""
    rng = np.random.default_rng(seed)
    x = rng.normal(shift_sd, 1.0, size=(draws, n1))
    y = rng.normal(0.0, 1.0, size=(draws, n2))
    rejected = mannwhitneyu(x, y, alternative="two-sided", axis=1).pvalue < per_test_alpha
    share = float(rejected.mean())
    return share, sqrt(max(share * (1.0 - share), 1.0 / draws) / draws)


def _samples_with_every_u(n1: int, n2: int) -> tuple[np.ndarray, np.ndarray]:
    """Tie-free groups, one row per U in 0 .. n1 n2, whose first group's U is the row number."""
    rows = n1 * n2 + 1
    x, y = np.empty((rows, n1)), np.tile(np.arange(n2, dtype=float), (rows, 1))
    for u in range(rows):
        left = u
        for i in range(n1):  # greedy: the i-th X lies above `below` of the Y at 0 .. n2 - 1
            below = min(n2, left)
            left -= below
            x[u, i] = below - 0.5 + 1e-3 * (i + 1)
    return x, y


@pytest.mark.parametrize(("n1", "n2"), [(3, 2), (5, 5), (4, 11), (8, 9), (9, 9), (16, 12), (10, 14)])
def test_null_p_values_are_scipys_for_every_u(n1, n2):
    x, y = _samples_with_every_u(n1, n2)
    test = mannwhitneyu(x, y, alternative="two-sided", axis=1)
    np.testing.assert_array_equal(test.statistic, np.arange(n1 * n2 + 1))
    np.testing.assert_allclose(null_p_values(n1, n2), test.pvalue, rtol=1e-12, atol=0)
    assert scipy_method(n1, n2) == ("exact" if min(n1, n2) <= 8 else "asymptotic")


def test_critical_u_bounds_the_rejection_region():
    for n1, n2, level in [(16, 12, 0.05 / 104), (5, 5, 0.05), (8, 20, 0.001)]:
        p, c = null_p_values(n1, n2), critical_u(n1, n2, level)
        rejected = np.flatnonzero(p < level)
        u = np.arange(n1 * n2 + 1)
        np.testing.assert_array_equal(rejected, u[(u >= c) | (u <= n1 * n2 - c)])
    assert critical_u(3, 2, 0.05) is None  # the smallest p of 3 vs 2 is 2 / C(5, 2) = 0.2
    assert null_p_values(3, 2)[-1] == pytest.approx(2 / comb(5, 2))


def test_shift_probabilities_match_the_bivariate_normal_and_the_null():
    for shift in (0.0, 0.7, 2.1, -1.3):
        p1, p2 = shift_probabilities(shift)
        h = shift / sqrt(2.0)
        assert p1 == pytest.approx(norm.cdf(h), abs=1e-15)
        cov = [[1.0, 0.5], [0.5, 1.0]]
        orthant = multivariate_normal.cdf([h, h], mean=[0, 0], cov=cov, abseps=1e-9, releps=1e-9, rng=0)
        assert p2 == pytest.approx(orthant, abs=1e-7)
    assert shift_probabilities(0.0) == pytest.approx((0.5, 1.0 / 3.0), abs=1e-15)
    n1, n2 = 7, 11
    assert u_moments(n1, n2, 0.0) == pytest.approx((n1 * n2 / 2, n1 * n2 * (n1 + n2 + 1) / 12), rel=1e-13)


def test_lehmann_moments_of_u_match_simulation():
    rng = np.random.default_rng(1)
    for n1, n2, shift in [(3, 9, 1.2), (16, 12, 2.1)]:
        x, y = rng.normal(shift, 1.0, size=(20_000, n1)), rng.normal(0.0, 1.0, size=(20_000, n2))
        u = mannwhitneyu(x, y, axis=1).statistic
        mean, variance = u_moments(n1, n2, shift)
        assert u.mean() == pytest.approx(mean, abs=4 * sqrt(variance / u.size))
        assert u.var() == pytest.approx(variance, rel=4 * sqrt(2.0 / u.size))  # 4 SE of a normal sample's variance


def test_separation_probability():
    assert separation_probability(3, 2, 0.0) == pytest.approx(1 / comb(5, 2), abs=1e-12)
    assert separation_probability(4, 6, 0.0) == pytest.approx(1 / comb(10, 4), abs=1e-12)
    rng = np.random.default_rng(2)
    x, y = rng.normal(2.5, 1.0, size=(20_000, 5)), rng.normal(0.0, 1.0, size=(20_000, 4))
    share = (x.min(axis=1) > y.max(axis=1)).mean()
    assert separation_probability(5, 4, 2.5) == pytest.approx(share, abs=3 * sqrt(share * (1 - share) / 20_000))


@pytest.mark.parametrize(
    ("n1", "n2", "shift", "level"),
    [
        (16, 12, 2.1, 0.05 / 104),  # the explorer's example: asymptotic test, Bonferroni over 104 ROIs
        (16, 12, 1.7, 0.05 / 104),  # the same near 50 % power
        (10, 14, 2.5, 0.05 / 104),
        (16, 12, 1.0, 0.05),
        (5, 5, 2.3, 0.05),  # exact test
        (3, 9, 2.4, 0.05),
        (8, 40, 1.9, 0.05 / 104),
        (20, 20, 0.9, 0.05),
    ],
)
def test_power_matches_scipys_test_simulated(n1, n2, shift, level):
    simulated, se = _simulate(n1, n2, shift, level)
    assert mann_whitney_power(n1, n2, shift, level) == pytest.approx(simulated, abs=APPROXIMATION + 3 * se)
    assert mann_whitney_power(n2, n1, -shift, level) == pytest.approx(mann_whitney_power(n1, n2, shift, level))


def test_power_is_exact_when_only_complete_separation_rejects():
    n1, n2, level = 9, 9, 0.05 / 104  # p of a complete separation: 4.1e-4, just below the level
    assert critical_u(n1, n2, level) == n1 * n2
    for shift in (3.0, 3.7):
        simulated, se = _simulate(n1, n2, shift, level)
        assert mann_whitney_power(n1, n2, shift, level) == pytest.approx(simulated, abs=3 * se)


def test_power_without_a_reachable_level_is_zero():
    assert mann_whitney_power(3, 2, 10.0, 0.05) == 0.0


@pytest.mark.parametrize(("n1", "n2", "n_tests"), [(16, 12, 104), (9, 9, 104), (6, 6, 10)])
def test_the_detectable_effect_has_the_wanted_power_in_simulation(n1, n2, n_tests):
    effect = detectable_effect(n1, n2, n_tests)
    assert effect.rank_biserial == pytest.approx(2 * norm.cdf(effect.shift_sd / sqrt(2)) - 1, abs=1e-12)
    simulated, se = _simulate(n1, n2, effect.shift_sd, effect.per_test_alpha, seed=3)
    exact = critical_u(n1, n2, effect.per_test_alpha) == n1 * n2
    assert simulated == pytest.approx(0.8, abs=3 * se + (0 if exact else APPROXIMATION))


def test_more_subjects_or_fewer_tests_detect_smaller_effects():
    shifts = [detectable_effect(n, n, 104).shift_sd for n in (10, 12, 16, 30, 60)]
    assert np.all(np.diff(shifts) < 0)
    shifts = [detectable_effect(n, 2 * n, 10).shift_sd for n in (4, 5, 6, 8)]  # the exact test throughout
    assert np.all(np.diff(shifts) < 0)
    shifts = [detectable_effect(16, n, 104).shift_sd for n in (9, 12, 20, 40)]
    assert np.all(np.diff(shifts) < 0)
    shifts = [detectable_effect(16, 12, m).shift_sd for m in (500, 104, 20, 5, 1)]
    assert np.all(np.diff(shifts) < 0)
    bh = [detectable_effect(16, 12, 104, correction="bh", expected_true=k).shift_sd for k in (1, 5, 20, 104)]
    assert np.all(np.diff(bh) < 0)
    assert detectable_effect(16, 12, 104, power=0.9).shift_sd > detectable_effect(16, 12, 104).shift_sd


def test_the_sentence_of_the_explorer():
    effect = detectable_effect(16, 12, 104)
    assert effect.detectable and effect.per_test_alpha == pytest.approx(0.05 / 104)
    assert effect.sentence == (
        f"With 16 vs 12 subjects and 104 ROIs, Bonferroni finds only differences of rank-biserial >= "
        f"{effect.rank_biserial:.2f} ({effect.shift_sd:.2g} within-cohort SDs) with 80 % power."
    )
    bh = detectable_effect(16, 12, 104, correction="bh", expected_true=5).sentence
    assert bh.startswith("With 16 vs 12 subjects and 104 ROIs, Benjamini-Hochberg (q 0.05, if 5 ROIs truly differ)")


def test_nine_vs_nine_needs_more_than_eight_vs_eight_at_104_rois():
    """scipy leaves the exact test for the normal approximation once both groups pass 8 subjects, and that
    approximation's p of a complete separation is ten times the exact one: 4.1e-4 against 4.1e-5."""
    assert scipy_method(8, 8) == "exact" and scipy_method(9, 9) == "asymptotic"
    assert null_p_values(9, 9)[-1] == pytest.approx(4.12e-4, rel=1e-2)
    assert detectable_effect(9, 9, 104).shift_sd > detectable_effect(8, 8, 104).shift_sd


def test_sizes_that_cannot_reach_the_level_say_so():
    effect = detectable_effect(3, 2, 104)
    assert not effect.detectable and effect.shift_sd is None and effect.rank_biserial is None
    assert effect.smallest_p == pytest.approx(0.2)
    assert "cannot reach p < 0.00048 per ROI whatever the difference" in effect.sentence
    assert effect.sentence.startswith("With 3 vs 2 subjects and 104 ROIs, Bonferroni")
    assert not detectable_effect(3, 3, 1).detectable  # smallest p 2 / 20 = 0.1 > 0.05
    assert detectable_effect(4, 4, 1).detectable  # 2 / 70 < 0.05: only a complete separation


def test_bh_with_one_true_region_is_bonferroni():
    bonferroni = detectable_effect(16, 12, 104)
    bh = detectable_effect(16, 12, 104, correction="bh", expected_true=1)
    assert isinstance(bh, DetectableEffect)
    assert bh.per_test_alpha == bonferroni.per_test_alpha and bh.shift_sd == bonferroni.shift_sd
    assert detectable_effect(16, 12, 104, correction="bh").shift_sd == bonferroni.shift_sd
    assert per_test_level(104, correction="bh", alpha=0.05, expected_true=10) == pytest.approx(0.05 * 10 / 104)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: detectable_effect(0, 12, 104), "n1 must be an integer >= 1"),
        (lambda: detectable_effect(16, 2.5, 104), "n2 must be an integer >= 1"),
        (lambda: detectable_effect(True, 12, 104), "n1 must be an integer"),
        (lambda: detectable_effect(16, 12, 0), "n_tests must be an integer >= 1"),
        (lambda: detectable_effect(16, 12, 104, correction="holm"), "correction must be one of"),
        (lambda: detectable_effect(16, 12, 104, alpha=0.0), r"alpha must lie in \(0, 1\)"),
        (lambda: detectable_effect(16, 12, 104, alpha="0.05"), "alpha must be a number"),
        (lambda: detectable_effect(16, 12, 104, power=1.0), r"power must lie in \(0, 1\)"),
        (lambda: detectable_effect(16, 12, 104, expected_true=3), "expected_true applies to correction 'bh' only"),
        (lambda: detectable_effect(16, 12, 20, correction="bh", expected_true=21), "at most n_tests"),
        (lambda: detectable_effect(16, 12, 20, correction="bh", expected_true=0), "expected_true must be an integer"),
        (lambda: mann_whitney_power(16, 12, float("nan"), 0.05), "shift_sd must be finite"),
        (lambda: mann_whitney_power(16, 12, "1", 0.05), "shift_sd must be a number"),
        (lambda: mann_whitney_power(16, 12, 1.0, 0.0), r"per_test_alpha must lie in \(0, 1\)"),
    ],
)
def test_input_errors_name_the_parameter(call, message):
    with pytest.raises(ValueError, match=message):
        call()
