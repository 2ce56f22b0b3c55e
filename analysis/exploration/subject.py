"""Why is this subject atypical? One subject read against the reference cohort, three ways.

1. :func:`norm_profile`: its L-vector of score norms in the SOM's input space (log norm standardised by the
   reference cohort, so the reference is about N(0, 1) at every noise scale), the reference cohort's 5-95 % band
   and median per scale, and its best-matching unit's codebook vector; the scales outside the band.
2. :func:`centile_chart`: a detector score against age with the reference cohort's centile curves, the
   normative-chart habit of BrainChart and PCNtoolkit, and the subject's own centile.
3. :func:`top_rois`: the subject's most atypical ROIs, with their reference percentiles.

:func:`subject_story` gathers the three from a :class:`~analysis.runs.reader.PublishedRun`.

Centile curves are linear quantile regressions of the score on age (Koenker & Bassett 1978), fitted on the
reference subjects with both a score and an age, each solved exactly as a linear programme. The design is chosen
by held-out pinball loss (k-fold, summed over the chart's centiles), simplest first, as the normative ROI model
chooses its own (:mod:`analysis.exploration.normative`): age-independent quantiles, linear in age, or linear plus
the square of age, each richer one only when it lowers the best held-out loss so far by :data:`RICHER_MARGIN`. With
80-300 reference subjects a low-order polynomial is about what the data carry: the GAMLSS and spline models of
BrainChart and PCNtoolkit need thousands. Quantiles are fitted on a fine grid (:data:`QUANTILE_GRID`) and sorted
at every age (the rearrangement of Chernozhukov, Fernandez-Val & Galichon 2010), so the curves never cross; a
subject's centile is where its score falls among its age's rearranged quantiles (linear between levels), i.e. the
fitted share of reference subjects of its age scoring below it.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.optimize import linprog

from analysis.detection.detectors import check_score_norms, fit_standardisation
from analysis.exploration.normative import RICHER_MARGIN
from analysis.exploration.roi_stats import percentile_of_reference
from analysis.methods import DETECTORS, NORM_SETS, names

__all__ = [
    "CentileChart",
    "NormProfile",
    "ReferenceCentiles",
    "SubjectStory",
    "centile_chart",
    "default_detector",
    "detector_label",
    "fit_reference_centiles",
    "norm_profile",
    "place_subject",
    "subject_story",
    "top_rois",
]

BAND = (5.0, 95.0)
"""The reference band of the norm profile, in percent."""
CHART_CENTILES = (5.0, 25.0, 50.0, 75.0, 95.0)
"""The centile curves drawn on a chart, in percent."""
QUANTILE_GRID = np.unique(np.round(np.concatenate([[0.01], np.arange(0.025, 0.976, 0.025), [0.99]]), 4))
"""Quantile levels fitted for a subject's centile: 1 %, 2.5 %, 5 %, ..., 97.5 %, 99 % (the chart's among them)."""
DESIGNS = ("constant", "linear", "quadratic")
"""Centile-curve designs, simplest first: quantiles without age; linear in age; plus age squared."""
MIN_REFERENCE = 20
"""Fewest reference subjects with a score for a chart (and with an age too, for curves in age)."""
N_FOLDS = 5
AGE_GRID_POINTS = 61
DEFAULT_DETECTOR = "msma_gmm"
"""The detection stage's headline: the GMM on the trained network's score norms (dissertation table 3.8)."""
DETECTOR_UNITS = {"gmm": "NLL, nats", "flow": "NLL, nats", "knn": "distance, log-norm SD"}
"""What each detector's score measures (:mod:`analysis.detection.detectors`, ``models.norm_flow``)."""
ADJUSTED_UNIT = "z vs normative prediction"


def _rows(selection, n: int, name: str) -> np.ndarray:
    """Boolean mask of shape ``(n,)`` from a boolean mask or an integer index array."""
    array = np.asarray(selection)
    if array.ndim != 1:
        raise ValueError(f"{name} must be a 1-D boolean mask or index array; received shape {array.shape}")
    if array.dtype == bool:
        if array.size != n:
            raise ValueError(f"{name} as a boolean mask must have one entry per subject ({n}); received {array.size}")
        return array.copy()
    if array.size and not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{name} must be a boolean mask or integer row indices; received dtype {array.dtype}")
    index = array.astype(int)
    if ((index < 0) | (index >= n)).any():
        raise ValueError(f"{name} indices must lie in [0, {n}); received {index.min()}..{index.max()}")
    mask = np.zeros(n, dtype=bool)
    mask[index] = True
    return mask


def _row(subject, n: int) -> int:
    if isinstance(subject, bool) or not isinstance(subject, int | np.integer) or not 0 <= subject < n:
        raise ValueError(f"subject must be a row index in [0, {n}); received {subject!r}")
    return int(subject)


# --- 1. norm profile ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NormProfile:
    """A subject's score norms in the SOM's input space, against the reference band and its BMU.

    Every array has shape ``(L,)``, one entry per noise scale in the run's order (scale 1 = smallest sigma).
    """

    subject: np.ndarray
    """``(log norm - reference mean) / reference SD`` (the :class:`~analysis.exploration.som.SelfOrganizingMap`
    transform)."""
    lower: np.ndarray
    """The band reference's ``band[0]`` percentile (numpy's default, linear interpolation)."""
    median: np.ndarray
    upper: np.ndarray
    codebook: np.ndarray
    """The best-matching unit's codebook vector."""
    bmu: tuple[int, int]
    bmu_distance: float
    """Euclidean distance between ``subject`` and ``codebook`` (the SOM's quantisation distance)."""
    band: tuple[float, float]
    n_reference: int
    """Subjects whose percentiles draw the band."""

    @property
    def above(self) -> np.ndarray:
        return self.subject > self.upper

    @property
    def below(self) -> np.ndarray:
        return self.subject < self.lower

    @property
    def outside_scales(self) -> list[int]:
        """1-based noise scales where the subject lies outside the band."""
        return (np.flatnonzero(self.above | self.below) + 1).tolist()


def norm_profile(norms, subject: int, reference, weights, bmu: Sequence[int], band_reference=None,
                 band: tuple[float, float] = BAND) -> NormProfile:
    """One subject's norm profile against the reference cohort and its best-matching unit.

    Parameters
    ----------
    norms : array_like, shape (n_subjects, L)
        Positive score norms of every subject the map was fitted on.
    subject : int
        The subject's row.
    reference : array_like of bool, shape (n_subjects,), or of int
        The rows whose log-norm mean and SD (``ddof=0``) standardise every scale: those the SOM was standardised
        with (a run's whole reference cohort, :func:`~analysis.exploration.som.fit_cohort_map`).
    weights : array_like, shape (n_rows, n_cols, L)
        The SOM codebook, in that standardised space.
    bmu : (row, col)
        The subject's best-matching unit.
    band_reference : like ``reference``, optional
        The rows whose percentiles draw the band (default ``reference``), e.g. only the reference subjects the
        models did not train on.
    band : (lower, upper) percentiles
    """
    norms = check_score_norms(norms, name="norms")
    n, n_scales = norms.shape
    row = _row(subject, n)
    standardising = _rows(reference, n, "reference")
    banding = standardising if band_reference is None else _rows(band_reference, n, "band_reference")
    for mask, name in ((standardising, "reference"), (banding, "band_reference")):
        if mask.sum() < 2:
            raise ValueError(f"{name} must select at least 2 subjects; received {int(mask.sum())}")
    weights = np.asarray(weights, dtype=float)
    if weights.ndim != 3 or weights.shape[2] != n_scales:
        raise ValueError(f"weights must have shape (n_rows, n_cols, {n_scales}); received {weights.shape}")
    r, c = (int(v) for v in bmu)
    if not (0 <= r < weights.shape[0] and 0 <= c < weights.shape[1]):
        raise ValueError(f"bmu must be a unit of the {weights.shape[0]} x {weights.shape[1]} map; received {bmu}")
    lower_pct, upper_pct = (float(v) for v in band)
    if not 0 <= lower_pct < upper_pct <= 100:
        raise ValueError(f"band must be two percentiles 0 <= lower < upper <= 100; received {band}")

    logs = np.log(norms)
    centre, scale = fit_standardisation(logs[standardising])
    z = (logs - centre) / scale
    lower, median, upper = np.percentile(z[banding], [lower_pct, 50.0, upper_pct], axis=0)
    codebook = weights[r, c].copy()
    return NormProfile(
        subject=z[row], lower=lower, median=median, upper=upper, codebook=codebook, bmu=(r, c),
        bmu_distance=float(np.linalg.norm(z[row] - codebook)), band=(lower_pct, upper_pct),
        n_reference=int(banding.sum()),
    )


# --- 2. centile chart ---------------------------------------------------------------------------------------------


def pinball_loss(y: np.ndarray, predicted: np.ndarray, tau: float) -> float:
    """Mean check loss ``rho_tau(y - predicted)``, the loss quantile regression minimises."""
    residual = np.asarray(y, dtype=float) - np.asarray(predicted, dtype=float)
    return float(np.mean(np.maximum(tau * residual, (tau - 1) * residual)))


def _design_matrix(age: np.ndarray, design: str) -> np.ndarray:
    """Columns of a design on standardised age ``age`` (n,): intercept, age, age squared as the design needs."""
    columns = [np.ones_like(age)]
    if design in ("linear", "quadratic"):
        columns.append(age)
    if design == "quadratic":
        columns.append(age**2)
    return np.column_stack(columns)


def _fit_quantiles(x: np.ndarray, y: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Quantile-regression coefficients ``(len(taus), p)`` of ``y`` on design ``x`` (n, p), exact.

    Each level solves Koenker & Bassett's linear programme, ``min tau 1'u + (1 - tau) 1'v`` subject to
    ``x b + u - v = y`` and ``u, v >= 0``, with scipy's HiGHS (R's ``quantreg::rq`` solves the same programme by
    simplex). statsmodels' ``QuantReg`` approximates it by reweighted least squares, which stalls a little off the
    optimum at outer levels and takes 3-10 times longer on a few hundred subjects.
    """
    if x.shape[1] == 1:  # intercept only: a sample quantile minimises the check loss
        return np.quantile(y, taus, method="inverted_cdf")[:, None]
    n, p = x.shape
    constraints = sparse.hstack([sparse.csr_matrix(x), sparse.eye(n), -sparse.eye(n)]).tocsr()
    bounds = [(None, None)] * p + [(0, None)] * (2 * n)
    coefficients = np.empty((len(taus), p))
    for k, tau in enumerate(taus):
        cost = np.concatenate([np.zeros(p), np.full(n, tau), np.full(n, 1 - tau)])
        result = linprog(cost, A_eq=constraints, b_eq=y, bounds=bounds, method="highs")
        if not result.success:
            raise ValueError(f"the quantile regression at level {tau:g} did not solve: {result.message}")
        coefficients[k] = result.x[:p]
    return coefficients


def held_out_pinball(age: np.ndarray, y: np.ndarray, designs: Sequence[str], taus: Sequence[float],
                     n_folds: int = N_FOLDS, random_state: int = 0) -> dict[str, float]:
    """k-fold held-out pinball loss of each design, summed over ``taus`` (standardised ``age``, scores ``y``)."""
    folds = np.random.default_rng(random_state).permutation(len(y)) % min(n_folds, len(y))
    losses = {}
    for design in designs:
        x = _design_matrix(age, design)
        total = 0.0
        for fold in np.unique(folds):
            test = folds == fold
            beta = _fit_quantiles(x[~test], y[~test], np.asarray(taus))
            total += sum(pinball_loss(y[test], x[test] @ b, t) * test.sum() for b, t in zip(beta, taus, strict=True))
        losses[design] = total / len(y)
    return losses


@dataclass(frozen=True)
class ReferenceCentiles:
    """Quantile curves of a score over the reference cohort, in age (or without age)."""

    design: str
    """One of :data:`DESIGNS`; "constant" for a chart without age."""
    taus: np.ndarray
    """(T,) quantile levels in (0, 1)."""
    coefficients: np.ndarray
    """(T, p) coefficients on intercept, standardised age (and its square)."""
    uses_age: bool
    age_centre: float
    age_scale: float
    age_range: tuple[float, float] | None
    """The fit subjects' youngest and oldest age (years); None without age."""
    held_out_loss: dict[str, float]
    """Design -> k-fold held-out pinball loss summed over the chart's centiles (empty unless "auto" compared)."""
    n_reference: int
    """Reference subjects the curves were fitted on."""
    note: str
    """What the fit left out or could not do, for the reader; empty when nothing."""

    def quantiles(self, ages) -> np.ndarray:
        """(len(ages), T) rearranged (non-decreasing along T) quantiles at ``ages`` (years; ignored without age)."""
        ages = np.atleast_1d(np.asarray(ages, dtype=float))
        age = (ages - self.age_centre) / self.age_scale if self.uses_age else np.zeros_like(ages)
        return np.sort(_design_matrix(age, self.design) @ self.coefficients.T, axis=1)

    def centile(self, age: float, score: float) -> float:
        """Percent of reference subjects of age ``age`` fitted to score below ``score``: where it falls among the
        age's quantiles, linear between levels, clipped to the outer levels (NaN for a NaN score)."""
        if not np.isfinite(score):
            return float("nan")
        return float(100 * np.interp(score, self.quantiles([age])[0], self.taus))


def fit_reference_centiles(scores, ages=None, design: str = "auto", taus=QUANTILE_GRID,
                           random_state: int = 0) -> ReferenceCentiles:
    """Quantile curves of the reference subjects' ``scores`` in ``ages``.

    Parameters
    ----------
    scores : array_like, shape (n_reference,)
        A detector score per reference subject; NaN scores are left out.
    ages : array_like, shape (n_reference,), optional
        Ages in years, NaN where unknown. Without ages, with fewer than :data:`MIN_REFERENCE` scored subjects
        with an age, or with a single age, the curves are the reference distribution's quantiles (the note says
        why).
    design : "auto" or one of :data:`DESIGNS`
        "auto": from the simplest, each richer design replaces the best so far only when it lowers the held-out
        pinball loss by :data:`RICHER_MARGIN`.
    taus : quantile levels, each in (0, 1); must contain the chart's centiles

    Raises
    ------
    ValueError
        Fewer than :data:`MIN_REFERENCE` reference subjects with a finite score; an unknown design.
    """
    if design != "auto" and design not in DESIGNS:
        raise ValueError(f"design must be 'auto' or one of {DESIGNS}; received {design!r}")
    taus = np.unique(np.asarray(taus, dtype=float))
    if not ((taus > 0) & (taus < 1)).all():
        raise ValueError(f"taus must lie strictly between 0 and 1; received {taus.min()}..{taus.max()}")
    y = np.asarray(scores, dtype=float).ravel()
    scored = np.isfinite(y)
    if scored.sum() < MIN_REFERENCE:
        raise ValueError(f"a centile chart needs at least {MIN_REFERENCE} reference subjects with a finite score; "
                         f"received {int(scored.sum())} (of {y.size})")
    notes = []
    age = np.full(y.shape, np.nan) if ages is None else np.asarray(ages, dtype=float).ravel()
    if age.shape != y.shape:
        raise ValueError(f"ages must have one entry per score ({y.size}); received {age.size}")
    aged = scored & np.isfinite(age)
    if ages is None or not aged.any():
        notes.append("no reference ages: curves without age")
    elif aged.sum() < MIN_REFERENCE:
        notes.append(f"only {int(aged.sum())} reference subjects with an age (fewer than {MIN_REFERENCE}): "
                     f"curves without age")
    elif np.ptp(age[aged]) == 0:
        notes.append("every reference subject has the same age: curves without age")
    uses_age = not notes
    if not uses_age:
        return ReferenceCentiles("constant", taus, _fit_quantiles(np.ones((scored.sum(), 1)), y[scored], taus),
                                 False, 0.0, 1.0, None, {}, int(scored.sum()), "; ".join(notes))
    if aged.sum() < scored.sum():
        notes.append(f"{int(scored.sum() - aged.sum())} reference subjects without an age left out")
    centre, scale = float(age[aged].mean()), float(age[aged].std())
    standard, values = (age[aged] - centre) / scale, y[aged]
    losses = {}
    if design == "auto":
        levels = np.asarray(CHART_CENTILES) / 100
        losses = held_out_pinball(standard, values, DESIGNS, levels, random_state=random_state)
        design = DESIGNS[0]
        for richer in DESIGNS[1:]:  # each against the best so far: a U-shape beats the line and the constant
            if losses[richer] < (1 - RICHER_MARGIN) * losses[design]:
                design = richer
    coefficients = _fit_quantiles(_design_matrix(standard, design), values, taus)
    return ReferenceCentiles(design, taus, coefficients, True, centre, scale,
                             (float(age[aged].min()), float(age[aged].max())), losses, int(aged.sum()),
                             "; ".join(notes))


@dataclass(frozen=True)
class CentileChart:
    """A subject's detector score on the reference cohort's centile curves."""

    centiles: tuple[float, ...]
    """The curves drawn, in percent (:data:`CHART_CENTILES`)."""
    age_grid: np.ndarray | None
    """(G,) ages in years at which ``curves`` are evaluated; None for a chart without age."""
    curves: np.ndarray
    """(G, K) score at each age and centile; (1, K) without age."""
    reference_ages: np.ndarray
    """(n_reference,) years, NaN where unknown."""
    reference_scores: np.ndarray
    subject_age: float
    """Years; NaN when unknown."""
    subject_score: float
    subject_centile: float
    """Percent of reference subjects (of its age) fitted to score below the subject, within the fitted levels
    (1-99 %); NaN for a NaN score."""
    fit: ReferenceCentiles
    note: str
    """What the chart left out or could not do (e.g. no ages), for the reader; empty when nothing."""

    @property
    def uses_age(self) -> bool:
        return self.age_grid is not None

    @property
    def beyond(self) -> str | None:
        """"above" or "below" when the score lies outside every fitted quantile at its age, else None."""
        if not np.isfinite(self.subject_score):
            return None
        levels = self.fit.quantiles([self.subject_age if self.uses_age else 0.0])[0]
        return "above" if self.subject_score > levels[-1] else "below" if self.subject_score < levels[0] else None


def place_subject(fit: ReferenceCentiles, reference_scores, reference_ages, subject_score: float,
                  subject_age: float = float("nan"), centiles: Sequence[float] = CHART_CENTILES) -> CentileChart:
    """The chart of one subject on curves already fitted (:func:`fit_reference_centiles`; a view fits them once
    per detector). A subject without an age is read against the reference distribution, without age."""
    levels = np.asarray(centiles, dtype=float) / 100
    columns = np.abs(fit.taus[None, :] - levels[:, None]).argmin(axis=1)
    if not np.allclose(fit.taus[columns], levels, rtol=0, atol=1e-9):
        raise ValueError(f"the fit's quantile levels must include the chart's centiles {tuple(centiles)}")
    ref_scores = np.asarray(reference_scores, dtype=float).ravel()
    ref_ages = (np.full(ref_scores.shape, np.nan) if reference_ages is None
                else np.asarray(reference_ages, dtype=float).ravel())
    subject_age, subject_score = float(subject_age), float(subject_score)
    fitted, notes = fit, [fit.note] if fit.note else []
    if fit.uses_age and not np.isfinite(subject_age):
        # Curves in age cannot place a subject without one: read it against the whole reference distribution.
        fitted = fit_reference_centiles(ref_scores, None, taus=fit.taus)
        notes = ["the subject's age is unknown: curves without age"]
    if not np.isfinite(subject_score):
        notes.append("the subject has no score")
    age_grid = None
    if fitted.uses_age:
        low, high = fitted.age_range
        if not low <= subject_age <= high:
            notes.append(f"the subject's age {subject_age:g} lies outside the reference ages {low:g}-{high:g}: "
                         f"curves extrapolated")
        age_grid = np.linspace(min(low, subject_age), max(high, subject_age), AGE_GRID_POINTS)
        curves = fitted.quantiles(age_grid)[:, columns]
    else:
        curves = fitted.quantiles([0.0])[:, columns]
    return CentileChart(
        centiles=tuple(float(c) for c in centiles), age_grid=age_grid, curves=curves, reference_ages=ref_ages,
        reference_scores=ref_scores, subject_age=subject_age, subject_score=subject_score,
        subject_centile=fitted.centile(subject_age if fitted.uses_age else 0.0, subject_score), fit=fitted,
        note="; ".join(notes),
    )


def centile_chart(scores, reference, subject: int, ages=None, design: str = "auto") -> CentileChart:
    """A subject's score on the reference cohort's centile curves in age.

    Parameters
    ----------
    scores : array_like, shape (n_subjects,)
        A detector score per subject (higher = more anomalous).
    reference : array_like of bool, shape (n_subjects,), or of int
        The reference rows the curves are fitted on.
    subject : int
        The subject's row.
    ages : array_like, shape (n_subjects,), optional
        Years, NaN where unknown; without, the chart is the reference distribution (its note says so).
    design : "auto" or one of :data:`DESIGNS` (:func:`fit_reference_centiles`)
    """
    scores = np.asarray(scores, dtype=float).ravel()
    n = scores.size
    row, mask = _row(subject, n), _rows(reference, n, "reference")
    age = None if ages is None else np.asarray(ages, dtype=float).ravel()
    if age is not None and age.size != n:
        raise ValueError(f"ages must have one entry per subject ({n}); received {age.size}")
    ref_ages = None if age is None else age[mask]
    fit = fit_reference_centiles(scores[mask], ref_ages, design)
    return place_subject(fit, scores[mask], ref_ages, scores[row], np.nan if age is None else age[row])


# --- 3. top ROIs --------------------------------------------------------------------------------------------------


def top_rois(table: pd.DataFrame, subject, reference_ids: Sequence, percentiles: pd.DataFrame | None = None,
             n: int = 10, by: str = "percentile") -> pd.DataFrame:
    """The subject's ``n`` most atypical ROIs of ``table`` (subjects x ROIs, higher = more anomalous).

    Parameters
    ----------
    percentiles : subjects x ROIs, optional
        Reference percentiles of ``table`` (a run's ``roi_percentiles`` for its raw scores); default: recomputed
        with :func:`~analysis.exploration.roi_stats.percentile_of_reference` over ``reference_ids``.
    by : "percentile" or "value"
        "percentile": by reference percentile, the scale raw scores of different ROIs share, ties (several ROIs
        above every reference subject) broken by the distance above the reference mean in reference SDs. "value":
        by the score itself, for scores already on one scale (covariate-adjusted z), ties by percentile. ROIs
        without a score come last.

    Returns
    -------
    DataFrame with columns roi, value, percentile, reference_z; at most ``n`` rows, most atypical first.
    """
    keys = {"percentile": ["percentile", "reference_z"], "value": ["value", "percentile"]}
    if by not in keys:
        raise ValueError(f"by must be one of {sorted(keys)}; received {by!r}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
        raise ValueError(f"n must be an integer >= 1; received {n!r}")
    if subject not in table.index:
        raise KeyError(f"subject {subject!r} has no row in the ROI table")
    reference = table.loc[list(reference_ids)].to_numpy(dtype=float)
    values = table.loc[subject].to_numpy(dtype=float)
    if percentiles is None:
        rows = list(dict.fromkeys([subject, *reference_ids]))
        shares = percentile_of_reference(table.loc[rows], reference_ids).loc[subject]
    else:
        shares = percentiles.loc[subject].reindex(table.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an ROI without reference scores: NaN, sorted last
        spread = np.nanstd(reference, axis=0)
        reference_z = (values - np.nanmean(reference, axis=0)) / np.where(spread > 0, spread, np.nan)
    frame = pd.DataFrame({"roi": [str(c) for c in table.columns], "value": values,
                          "percentile": shares.to_numpy(dtype=float), "reference_z": reference_z})
    frame = frame.sort_values(keys[by], ascending=False, na_position="last", kind="mergesort")
    return frame.head(int(n)).reset_index(drop=True)


# --- the story of one subject -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubjectStory:
    """Everything the subject view shows about one subject of a run."""

    subject_id: str
    cohort: str
    age: float
    sex: str | None
    reference_cohort: str
    profile: NormProfile
    chart: CentileChart
    detector: str
    """The detector column of the run's ``detector_scores``."""
    detector_name: str
    detector_unit: str
    rois: pd.DataFrame
    """:func:`top_rois` of ``roi_scores``: raw scores by reference percentile, adjusted ones by their z."""
    roi_scores: str
    """"adjusted" or "raw"."""
    roi_unit: str
    sigmas: tuple[float, ...] | None
    """The noise scales' sigmas, ascending as the norms' columns (from ``run.json``); None when not recorded."""


def default_detector(columns: Sequence[str]) -> str:
    """The detector a view opens on: :data:`DEFAULT_DETECTOR` when the run has it, else the first of the
    refresh's norm sets x detectors (``<norms>_<detector>``), else the first column."""
    columns = [str(c) for c in columns]
    if not columns:
        raise ValueError("the run has no detector scores")
    ordered = [f"{n.key}_{d.key}" for n in NORM_SETS for d in DETECTORS]
    return next((c for c in [DEFAULT_DETECTOR, *ordered] if c in columns), columns[0])


def detector_label(column: str) -> tuple[str, str]:
    """Display name ("MSMA GMM") and unit of a ``<norms>_<detector>`` column (the column itself when unknown)."""
    norms, _, detector = str(column).partition("_")
    norm_names, detector_names = names(NORM_SETS), names(DETECTORS)
    if norms in norm_names and detector in detector_names:
        return f"{norm_names[norms]} {detector_names[detector]}", DETECTOR_UNITS.get(detector, "score")
    return str(column), "score"


def subject_story(run, subject_id: str, scores: str | None = None, detector: str | None = None, n_rois: int = 10,
                  centiles: ReferenceCentiles | None = None) -> SubjectStory:
    """Why ``subject_id`` is atypical, from a published run.

    Parameters
    ----------
    run : PublishedRun
    scores : "adjusted", "raw" or None
        The ROI table; default the run's (:attr:`PublishedRun.default_roi_scores`).
    detector : a column of ``run.detector_scores``; default :func:`default_detector`
    centiles : curves already fitted for this run and detector (a view's cache); default fitted here

    The norms are standardised over the whole reference cohort, as the refresh standardised the SOM's input; the
    band, the centile curves and the ROI percentiles read the reference subjects the models did not train on
    (:attr:`PublishedRun.reference_ids`), as the ROI percentiles of the run do.

    Raises
    ------
    KeyError
        An id that is not a subject of the run; an unknown detector.
    ValueError
        An unknown ROI table; too few reference subjects for a centile chart.
    """
    subjects = run.subjects
    if subject_id not in run.row_of:
        example = ", ".join(subjects.index[:3])
        raise KeyError(f"subject {subject_id!r} is not in run {run.run_id} ({len(subjects)} subjects, e.g. {example})")
    scores = run.default_roi_scores if scores is None else scores
    if scores not in run.roi_tables:
        raise ValueError(f"scores must be one of {sorted(run.roi_tables)} for this run; received {scores!r}")
    detector = default_detector(run.detector_scores.columns) if detector is None else detector
    if detector not in run.detector_scores.columns:
        raise KeyError(f"detector {detector!r} is not in run {run.run_id}; it has {list(run.detector_scores.columns)}")
    row = run.row_of[subject_id]
    reference = (subjects["cohort"] == run.reference_cohort).to_numpy()
    held_out = subjects.index.isin(run.reference_ids)
    profile = norm_profile(run.score_norms.to_numpy(dtype=float), row, reference, run.som.weights,
                           (subjects["bmu_row"].iloc[row], subjects["bmu_col"].iloc[row]), band_reference=held_out)
    values = run.detector_scores[detector].to_numpy(dtype=float)
    ages = subjects["age"].to_numpy(dtype=float)
    if centiles is None:
        centiles = fit_reference_centiles(values[held_out], ages[held_out])
    chart = place_subject(centiles, values[held_out], ages[held_out], values[row], ages[row])
    table = run.roi_tables[scores]
    rois = (top_rois(table, subject_id, run.reference_ids, run.roi_percentiles, n_rois) if scores == "raw"
            else top_rois(table, subject_id, run.reference_ids, n=n_rois, by="value"))
    name, unit = detector_label(detector)
    sigmas = ((run.record.get("schedule") or {}).get("sigmas")) or None
    sex = subjects["sex"].iloc[row]
    return SubjectStory(
        subject_id=subject_id, cohort=str(subjects["cohort"].iloc[row]), age=float(ages[row]),
        sex=None if pd.isna(sex) else str(sex), reference_cohort=run.reference_cohort, profile=profile, chart=chart,
        detector=detector, detector_name=name, detector_unit=unit, rois=rois, roi_scores=scores,
        roi_unit=ADJUSTED_UNIT if scores == "adjusted" else run.heatmap_unit,
        sigmas=None if sigmas is None else tuple(float(s) for s in sigmas),
    )
