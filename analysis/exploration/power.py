"""What the region step's test can see: the smallest difference it detects with a given power.

The explorer's region step (:func:`analysis.exploration.cohort_analysis.region_step`) compares ``n1`` selected
subjects against ``n2`` other cohort members with a two-sided Mann-Whitney U on each of ``n_tests`` ROIs, and calls a
ROI significant when its Bonferroni- or Benjamini-Hochberg-corrected p is below ``alpha``.
:func:`detectable_effect` answers how large a difference must be for that to happen with 80 % power, both as the
rank-biserial correlation the explorer shows and in within-cohort standard deviations.

Model
-----
The scores of the selection are ``X ~ N(d, 1)`` and those of the other members ``Y ~ N(0, 1)`` (units: within-cohort
SDs), so ``P(X > Y) = Phi(d / sqrt 2)`` and the rank-biserial correlation is ``2 Phi(d / sqrt 2) - 1``. The test is
the one :func:`scipy.stats.mannwhitneyu` runs with ``method="auto"`` on such tie-free data: the exact null
distribution of U when either group has at most 8 subjects, else the normal approximation with continuity correction.
:func:`null_p_values` gives its two-sided p for every possible U, which fixes the rejection region exactly.

Power comes from Lehmann's (1951) exact mean ``n1 n2 p1`` and variance of U under the shift::

    Var U = n1 n2 [p1 (1 - p1) + (n2 - 1)(p2 - p1^2) + (n1 - 1)(p3 - p1^2)]

with ``p1 = P(X > Y)``, ``p2 = P(X > Y, X > Y')`` and ``p3 = P(X > Y, X' > Y)``; for a normal shift ``p2 = p3`` is the
bivariate normal orthant probability ``Phi2(d / sqrt 2, d / sqrt 2; 1/2)``, computed through Owen's T function
(deterministic, unlike the quasi-Monte-Carlo of :func:`scipy.stats.multivariate_normal.cdf`, which it matches).
The shape given to U is a beta distribution, not the normal: under a real difference U piles up against its maximum
``n1 n2``, and the normal approximation with these moments understates the power by 0.01-0.09 near 80 % (by 0.2 when
only a complete separation rejects), so it would overstate the detectable effect. The beta approximation of
:func:`mann_whitney_power` is within about 0.02 of the exact power near 80 % (checked against a numerical integration
over the ordered samples and against simulations of :func:`scipy.stats.mannwhitneyu`,
tests/analysis/exploration/test_power.py), which moves the detectable shift by about 0.03 SD; when only a complete
separation of the groups rejects, the power is exact.

Benjamini-Hochberg
------------------
BH's per-test level depends on how many ROIs it rejects. :func:`per_test_level` takes the number of truly different
ROIs, ``expected_true`` (default 1), and uses ``q * expected_true / n_tests``: the level at which a truly different
ROI is rejected when the ``expected_true`` different ROIs are found and no other ROI is. With ``expected_true = 1`` it
equals Bonferroni's ``alpha / n_tests``; a larger value is optimistic by the share of different ROIs that are missed.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from math import comb, exp, isfinite, pi, sqrt

import numpy as np
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.special import betainc, ndtr, owens_t

from analysis.checks import check_int

CORRECTION_NAMES = {"bonferroni": "Bonferroni", "bh": "Benjamini-Hochberg"}
"""The corrections of the region step (the keys of :data:`analysis.exploration.cohort_analysis.CORRECTIONS`) and
the names the sentence gives them."""

EXACT_MAX_GROUP = 8
"""scipy's ``method="auto"`` uses the exact null distribution of U when either group has at most this many subjects
(and there are no ties)."""

_LARGE_SHIFT = 40.0
"""A shift (within-cohort SDs) past which ``P(X > Y)`` is 1 in double precision: the root finding's upper bound."""


@dataclass(frozen=True)
class DetectableEffect:
    """The smallest difference a corrected two-sided Mann-Whitney U detects with the given power.

    ``shift_sd`` and ``rank_biserial`` are None when no difference can reach ``per_test_alpha`` with these group
    sizes (``smallest_p`` is not below it).
    """

    n1: int
    """Subjects in the selection."""
    n2: int
    """Other cohort members it is compared with."""
    n_tests: int
    """ROIs tested (the size of the correction's family)."""
    correction: str
    """``"bonferroni"`` or ``"bh"``."""
    alpha: float
    """Family-wise error rate (Bonferroni) or false discovery rate q (BH)."""
    power: float
    """Probability of finding one truly different ROI."""
    expected_true: int
    """Truly different ROIs assumed by BH's per-test level (1 for Bonferroni)."""
    per_test_alpha: float
    """The raw p below which one ROI is significant."""
    smallest_p: float
    """The smallest two-sided p the test can give with these group sizes (complete separation)."""
    shift_sd: float | None
    """Detectable location shift ``d``, in within-cohort SDs; None when none is."""
    rank_biserial: float | None
    """Detectable rank-biserial correlation ``2 Phi(d / sqrt 2) - 1``, in (0, 1]; None when none is."""

    @property
    def detectable(self) -> bool:
        """Whether any difference reaches ``per_test_alpha`` with these group sizes."""
        return self.shift_sd is not None

    @property
    def sentence(self) -> str:
        """The explorer's line, e.g. "With 16 vs 12 subjects and 104 ROIs, Bonferroni finds only differences of
        rank-biserial >= 0.86 (2.1 within-cohort SDs) with 80 % power."."""
        name = CORRECTION_NAMES[self.correction]
        if self.correction == "bh":
            truly = "ROI truly differs" if self.expected_true == 1 else "ROIs truly differ"
            name = f"{name} (q {self.alpha:g}, if {self.expected_true} {truly})"
        start = f"With {self.n1} vs {self.n2} subjects and {self.n_tests} ROI{'s' if self.n_tests > 1 else ''}, {name}"
        if not self.detectable:
            return (
                f"{start} cannot reach p < {self.per_test_alpha:.2g} per ROI whatever the difference "
                f"(the smallest possible p is {self.smallest_p:.2g})."
            )
        return (
            f"{start} finds only differences of rank-biserial >= {self.rank_biserial:.2f} "
            f"({self.shift_sd:.2g} within-cohort SDs) with {100 * self.power:g} % power."
        )


def detectable_effect(
    n1: int,
    n2: int,
    n_tests: int,
    *,
    correction: str = "bonferroni",
    alpha: float = 0.05,
    power: float = 0.8,
    expected_true: int | None = None,
) -> DetectableEffect:
    """The smallest normal location shift the region step's corrected test detects with probability ``power``.

    Parameters
    ----------
    n1, n2 : int >= 1
        Subjects in the selection and other cohort members it is compared with.
    n_tests : int >= 1
        ROIs tested, over which the correction runs.
    correction : {"bonferroni", "bh"}
        Bonferroni (per-test level ``alpha / n_tests``) or Benjamini-Hochberg (``alpha * expected_true / n_tests``,
        see :func:`per_test_level`).
    alpha : float in (0, 1)
        Family-wise error rate (Bonferroni) or false discovery rate q (BH).
    power : float in (0, 1)
        Wanted probability that a truly different ROI is significant.
    expected_true : int in [1, n_tests], optional
        BH only: how many ROIs truly differ (default 1, which makes BH's level Bonferroni's).

    Returns
    -------
    DetectableEffect
        With ``shift_sd`` in within-cohort SDs and the matching ``rank_biserial``; both None when even a complete
        separation of the groups cannot give a p below the per-test level. A level so loose that power at no
        difference already reaches ``power`` gives 0.
    """
    n1, n2 = check_int(n1, "n1"), check_int(n2, "n2")
    power = _check_probability(power, "power")
    level = per_test_level(n_tests, correction=correction, alpha=alpha, expected_true=expected_true)
    kept = {"n1": n1, "n2": n2, "n_tests": int(n_tests), "correction": correction, "alpha": float(alpha)}
    kept |= {"power": power, "expected_true": 1 if expected_true is None else int(expected_true)}
    kept |= {"per_test_alpha": level, "smallest_p": float(null_p_values(n1, n2)[-1])}
    if critical_u(n1, n2, level) is None:
        return DetectableEffect(**kept, shift_sd=None, rank_biserial=None)
    shift = _solve_shift(n1, n2, level, power)
    return DetectableEffect(**kept, shift_sd=shift, rank_biserial=float(2.0 * ndtr(shift / sqrt(2.0)) - 1.0))


def per_test_level(n_tests: int, *, correction: str = "bonferroni", alpha: float = 0.05, expected_true=None) -> float:
    """The raw p below which one ROI is significant under the correction.

    Bonferroni: ``alpha / n_tests``. Benjamini-Hochberg at ``q = alpha``: ``q * expected_true / n_tests``, the level
    of BH's step for ``expected_true`` rejections, which a truly different ROI must pass when the ``expected_true``
    truly different ROIs are found and no other (default ``expected_true = 1``: Bonferroni's level).

    Parameters
    ----------
    n_tests : int >= 1
    correction : {"bonferroni", "bh"}
    alpha : float in (0, 1)
    expected_true : int in [1, n_tests], optional (BH only)

    Returns
    -------
    float
        The per-test level, in (0, 1).
    """
    n_tests = check_int(n_tests, "n_tests")
    alpha = _check_probability(alpha, "alpha")
    if correction not in CORRECTION_NAMES:
        raise ValueError(f"correction must be one of {sorted(CORRECTION_NAMES)}; received {correction!r}")
    if expected_true is None:
        return alpha / n_tests
    if correction != "bh":
        raise ValueError(f"expected_true applies to correction 'bh' only; received it with {correction!r}")
    expected_true = check_int(expected_true, "expected_true")
    if expected_true > n_tests:
        raise ValueError(f"expected_true must be at most n_tests ({n_tests}); received {expected_true}")
    return alpha * expected_true / n_tests


def mann_whitney_power(n1: int, n2: int, shift_sd: float, per_test_alpha: float) -> float:
    """Probability that the two-sided Mann-Whitney U of ``n1`` vs ``n2`` subjects gives p < ``per_test_alpha`` when
    the first group's scores are shifted by ``shift_sd`` within-cohort SDs (normal scores, equal SDs).

    The rejection region is that of :func:`scipy.stats.mannwhitneyu` (``method="auto"``, no ties), from
    :func:`critical_u`. The probability of U falling in it is a beta approximation with Lehmann's exact mean and
    variance of U under the shift (:func:`u_moments`): ``V = (U + J) / (n1 n2 + 1)``, with ``J`` uniform on [0, 1)
    spreading each value of U over its own interval, is given the beta distribution of V's mean and variance, so
    ``P(U >= c) = P(V >= c / (n1 n2 + 1))``. When only a complete separation of the groups reaches the level, the
    power is computed exactly instead (one integral, :func:`separation_probability`).

    Parameters
    ----------
    n1, n2 : int >= 1
        Group sizes.
    shift_sd : float
        Location shift of the first group, in within-cohort SDs (the sign does not matter: the test is two-sided).
    per_test_alpha : float in (0, 1)
        The raw p below which the test rejects.

    Returns
    -------
    float
        Power in [0, 1]; 0 when no U reaches ``per_test_alpha`` with these sizes. Within about 0.02 of the power of
        scipy's test between 40 % and 80 % (0.03 when only the two most extreme values of U reject).
    """
    n1, n2 = check_int(n1, "n1"), check_int(n2, "n2")
    per_test_alpha = _check_probability(per_test_alpha, "per_test_alpha")
    if isinstance(shift_sd, bool) or not isinstance(shift_sd, int | float | np.integer | np.floating):
        raise ValueError(f"shift_sd must be a number (within-cohort SDs); received {shift_sd!r}")
    if not isfinite(shift_sd):
        raise ValueError(f"shift_sd must be finite; received {shift_sd!r}")
    shift_sd = float(shift_sd)
    critical = critical_u(n1, n2, per_test_alpha)
    if critical is None:
        return 0.0
    size = n1 * n2
    if critical == size:  # U = n1 n2 or U = 0: every selected subject above every other, or below
        return min(1.0, separation_probability(n1, n2, shift_sd) + separation_probability(n2, n1, -shift_sd))
    mean, variance = u_moments(n1, n2, shift_sd)
    mean, variance = (mean + 0.5) / (size + 1), (variance + 1.0 / 12.0) / (size + 1) ** 2
    spread = mean * (1.0 - mean) / variance - 1.0
    a, b = mean * spread, (1.0 - mean) * spread
    upper = betainc(b, a, 1.0 - critical / (size + 1))  # P(V >= c / (N + 1))
    lower = betainc(a, b, (size - critical + 1) / (size + 1))  # P(V < (N - c + 1) / (N + 1)), i.e. U <= N - c
    return float(min(1.0, upper + lower))


def separation_probability(n_high: int, n_low: int, shift_sd: float) -> float:
    """Probability that all of ``n_high`` scores from ``N(shift_sd, 1)`` lie above all of ``n_low`` from
    ``N(0, 1)``: ``integral of n_low phi(y) Phi(y)^(n_low - 1) Phi(shift_sd - y)^n_high dy`` (units: within-cohort
    SDs), by adaptive quadrature."""
    low = min(0.0, shift_sd) - 12.0
    high = max(0.0, shift_sd) + 12.0

    def integrand(y: float) -> float:
        density = n_low * exp(-0.5 * y * y) / sqrt(2.0 * pi) * ndtr(y) ** (n_low - 1)  # of the largest low score
        return density * ndtr(shift_sd - y) ** n_high

    value, _ = quad(integrand, low, high, points=(0.0, shift_sd), epsabs=1e-13, epsrel=1e-10, limit=200)
    return float(min(1.0, max(0.0, value)))


def u_moments(n1: int, n2: int, shift_sd: float) -> tuple[float, float]:
    """Mean and variance of the first group's U (pairs in which it scores higher) under a normal location shift.

    Parameters
    ----------
    n1, n2 : int
        Group sizes.
    shift_sd : float
        Location shift of the first group, in within-cohort SDs.

    Returns
    -------
    (float, float)
        ``n1 n2 p1`` and Lehmann's ``n1 n2 [p1 (1 - p1) + (n2 - 1)(p2 - p1^2) + (n1 - 1)(p3 - p1^2)]``, with
        ``p2 = p3`` for a normal shift (see :func:`shift_probabilities`).
    """
    p1, p2 = shift_probabilities(shift_sd)
    p3 = p2
    variance = n1 * n2 * (p1 * (1.0 - p1) + (n2 - 1) * (p2 - p1 * p1) + (n1 - 1) * (p3 - p1 * p1))
    return n1 * n2 * p1, max(variance, 0.0)


def shift_probabilities(shift_sd: float) -> tuple[float, float]:
    """``P(X > Y)`` and ``P(X > Y, X > Y')`` (= ``P(X > Y, X' > Y)``) for ``X ~ N(d, 1)``, ``Y, Y' ~ N(0, 1)``.

    Parameters
    ----------
    shift_sd : float
        ``d``, in within-cohort SDs.

    Returns
    -------
    (float, float)
        ``Phi(h)`` and the bivariate normal ``Phi2(h, h; 1/2) = Phi(h) - 2 T(h, 1/sqrt 3)`` with ``h = d / sqrt 2``
        and Owen's T function.
    """
    h = shift_sd / sqrt(2.0)
    p1 = float(ndtr(h))
    return p1, float(p1 - 2.0 * owens_t(h, 1.0 / sqrt(3.0)))


def scipy_method(n1: int, n2: int) -> str:
    """``"exact"`` or ``"asymptotic"``: the method :func:`scipy.stats.mannwhitneyu` picks for tie-free groups."""
    return "exact" if min(n1, n2) <= EXACT_MAX_GROUP else "asymptotic"


@lru_cache(maxsize=64)
def null_p_values(n1: int, n2: int) -> np.ndarray:
    """Two-sided p of :func:`scipy.stats.mannwhitneyu` (``method="auto"``, no ties) for every U in ``0 .. n1 n2``.

    Exact: twice the null probability of a U at least ``max(U, n1 n2 - U)``, from the exact null counts (the
    Gaussian binomial coefficient ``[n1 + n2 choose n1]``, in integers). Asymptotic: the normal approximation with
    continuity correction, ``2 Phi(-(max(U, n1 n2 - U) - n1 n2 / 2 - 1/2) / sqrt(n1 n2 (n1 + n2 + 1) / 12))``.
    Both clipped to 1. The returned array is read-only.
    """
    u = np.arange(n1 * n2 + 1)
    larger = np.maximum(u, n1 * n2 - u)
    if scipy_method(n1, n2) == "exact":
        counts = _null_counts(min(n1, n2), max(n1, n2))
        at_least = np.cumsum(counts[::-1])[::-1]  # number of arrangements with U >= k, as Python ints
        total = comb(n1 + n2, n1)
        tail = np.array([count / total for count in at_least], dtype=float)
        p = 2.0 * tail[larger]
    else:
        z = (larger - n1 * n2 / 2.0 - 0.5) / sqrt(n1 * n2 * (n1 + n2 + 1) / 12.0)
        p = 2.0 * ndtr(-z)
    p = np.clip(p, 0.0, 1.0)
    p.flags.writeable = False
    return p


def critical_u(n1: int, n2: int, per_test_alpha: float) -> int | None:
    """The smallest U whose two-sided p is below ``per_test_alpha`` (the test rejects at U >= it and at
    U <= n1 n2 - it), or None when no U is."""
    p = null_p_values(n1, n2)
    below = np.flatnonzero(p < per_test_alpha)
    if below.size == 0:
        return None
    return int(below[below >= n1 * n2 / 2.0][0])


def _null_counts(small: int, large: int) -> np.ndarray:
    """Arrangements of ``small`` vs ``large`` tie-free values giving each U in ``0 .. small * large`` (object array of
    Python ints): the coefficients of ``prod_{i=1..small} (1 - q^(large + i)) / (1 - q^i)``."""
    size = small * large + 1
    counts = [1] + [0] * (size - 1)
    for i in range(1, small + 1):
        step = large + i
        for k in range(size - 1, step - 1, -1):  # times (1 - q^step)
            counts[k] -= counts[k - step]
        for k in range(i, size):  # divided by (1 - q^i)
            counts[k] += counts[k - i]
    return np.array(counts, dtype=object)


def _solve_shift(n1: int, n2: int, per_test_alpha: float, power: float) -> float:
    """The shift (within-cohort SDs) at which :func:`mann_whitney_power` equals ``power``, by Brent's method."""

    def shortfall(shift: float) -> float:
        return mann_whitney_power(n1, n2, shift, per_test_alpha) - power

    if shortfall(0.0) >= 0.0:
        return 0.0
    high = 1.0
    while shortfall(high) < 0.0 and high < _LARGE_SHIFT:
        high *= 2.0
    return float(brentq(shortfall, high / 2.0 if high > 1.0 else 0.0, high, xtol=1e-6))


def _check_probability(value, name: str) -> float:
    """``value`` as a float in the open interval (0, 1), or a ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise ValueError(f"{name} must be a number in (0, 1); received {value!r}")
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie in (0, 1); received {value!r}")
    return float(value)
