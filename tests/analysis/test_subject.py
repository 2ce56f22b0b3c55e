"""One subject against the reference cohort (analysis.exploration.subject), checked against the SOM's own
transform, numpy percentiles, statsmodels' QuantReg, scipy's percentileofscore and the run's stored percentiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm, percentileofscore
from statsmodels.regression.quantile_regression import QuantReg

from analysis.demo.synthetic_run import write_synthetic_study
from analysis.exploration.som import SelfOrganizingMap
from analysis.exploration.subject import (
    CHART_CENTILES,
    MIN_REFERENCE,
    centile_chart,
    default_detector,
    detector_label,
    fit_reference_centiles,
    norm_profile,
    place_subject,
    subject_story,
    top_rois,
)
from analysis.runs.reader import open_run

# --- norm profile ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fitted_map():
    """Odd sizes (37 subjects, 7 scales, a 3 x 4 map) so an axis mix-up fails."""
    rng = np.random.default_rng(3)
    norms = np.exp(rng.normal(np.linspace(2.0, 0.2, 7), 0.3, (37, 7)))
    reference = np.arange(37) < 25
    som = SelfOrganizingMap(3, 4, n_iterations=20).fit(norms, reference=reference)
    return norms, reference, som


def test_the_profile_is_in_the_soms_own_input_space(fitted_map):
    norms, reference, som = fitted_map
    z = som.standardise(norms)
    for row in (0, 24, 30):
        profile = norm_profile(norms, row, reference, som.weights_, som.bmu_[row])
        np.testing.assert_allclose(profile.subject, z[row], rtol=1e-12)
        np.testing.assert_array_equal(profile.codebook, som.weights_[tuple(som.bmu_[row])])
        assert profile.bmu == tuple(som.bmu_[row])
        assert profile.bmu_distance == pytest.approx(som.quantization_distances_[row], rel=1e-10)
    # integer indices select the same reference as the mask
    by_index = norm_profile(norms, 3, np.flatnonzero(reference), som.weights_, som.bmu_[3])
    np.testing.assert_allclose(by_index.subject, z[3])


def test_the_band_is_numpys_percentiles_of_the_band_reference(fitted_map):
    norms, reference, som = fitted_map
    z = som.standardise(norms)
    band_rows = np.arange(37) % 3 == 0
    profile = norm_profile(norms, 30, reference, som.weights_, som.bmu_[30], band_reference=band_rows)
    lower, median, upper = np.percentile(z[band_rows], [5, 50, 95], axis=0)
    np.testing.assert_allclose(profile.lower, lower)
    np.testing.assert_allclose(profile.median, median)
    np.testing.assert_allclose(profile.upper, upper)
    assert profile.n_reference == band_rows.sum()
    outside = (z[30] > upper) | (z[30] < lower)
    assert profile.outside_scales == (np.flatnonzero(outside) + 1).tolist()
    wide = norm_profile(norms, 3, reference, som.weights_, som.bmu_[3], band=(0, 100))
    np.testing.assert_allclose(wide.lower, z[reference].min(axis=0))
    assert wide.outside_scales == []  # a reference subject within its own reference's range


def test_a_profile_refuses_inputs_that_do_not_fit_together(fitted_map):
    norms, reference, som = fitted_map
    with pytest.raises(ValueError, match=r"weights must have shape \(n_rows, n_cols, 7\)"):
        norm_profile(norms, 0, reference, som.weights_[..., :5], (0, 0))
    with pytest.raises(ValueError, match="bmu must be a unit of the 3 x 4 map"):
        norm_profile(norms, 0, reference, som.weights_, (3, 0))
    with pytest.raises(ValueError, match=r"subject must be a row index in \[0, 37\)"):
        norm_profile(norms, 37, reference, som.weights_, (0, 0))
    with pytest.raises(ValueError, match="reference must select at least 2 subjects"):
        norm_profile(norms, 0, np.arange(37) == 1, som.weights_, (0, 0))


# --- centile chart --------------------------------------------------------------------------------------------------


def _reference(n=163, seed=0, shape="linear", noise=1.0):
    """Ages and scores of ``n`` reference subjects; 163 makes ``n * tau`` fractional at every fitted level, so each
    quantile regression has one solution to compare."""
    rng = np.random.default_rng(seed)
    age = rng.uniform(6, 16, n)
    mean = {"none": 0.0 * age, "linear": 0.6 * age, "quadratic": 0.4 * (age - 11) ** 2}[shape]
    return age, 3.0 + mean + rng.normal(0, noise, n)


TIGHT = {"max_iter": 20_000, "p_tol": 1e-12}
"""statsmodels' IRLS run to convergence: with its defaults it stops up to 0.02 off the optimum at outer levels."""


def _check_loss(y, predicted, tau):
    residual = y - predicted
    return np.sum(np.maximum(tau * residual, (tau - 1) * residual))


def test_linear_curves_are_statsmodels_quantreg_in_age_rearranged():
    age, y = _reference()
    fit = fit_reference_centiles(y, age, design="linear")
    x = np.column_stack([np.ones_like(age), age])
    by_statsmodels = np.array([QuantReg(y, x).fit(q=tau, **TIGHT).params for tau in fit.taus])
    slopes = fit.coefficients[:, 1] / fit.age_scale
    ours = np.column_stack([fit.coefficients[:, 0] - slopes * fit.age_centre, slopes])  # age in years
    np.testing.assert_allclose(ours, by_statsmodels, atol=2e-3)
    for tau, mine, theirs in zip(fit.taus, ours, by_statsmodels, strict=True):  # exact: never a worse check loss
        assert _check_loss(y, x @ mine, tau) <= _check_loss(y, x @ theirs, tau) + 1e-9
    grid = np.linspace(age.min(), age.max(), 7)
    raw = by_statsmodels[:, :1].T + grid[:, None] * by_statsmodels[:, 1:].T  # (7, T) before rearrangement
    np.testing.assert_allclose(fit.quantiles(grid), np.sort(raw, axis=1), atol=2e-2)


def test_quadratic_curves_are_statsmodels_quantreg_in_age_and_its_square():
    age, y = _reference(shape="quadratic")
    fit = fit_reference_centiles(y, age, design="quadratic")
    standard = (age - fit.age_centre) / fit.age_scale
    x = np.column_stack([np.ones_like(age), standard, standard**2])
    for k in np.searchsorted(fit.taus, [0.25, 0.5, 0.75]):
        theirs = QuantReg(y, x).fit(q=fit.taus[k], **TIGHT).params
        np.testing.assert_allclose(fit.coefficients[k], theirs, atol=2e-3)
        assert _check_loss(y, x @ fit.coefficients[k], fit.taus[k]) <= _check_loss(y, x @ theirs, fit.taus[k]) + 1e-9


def test_auto_chooses_the_design_the_data_carry():
    age, y = _reference(shape="linear")
    assert fit_reference_centiles(y, age).design == "linear"
    age, y = _reference(shape="quadratic")
    assert fit_reference_centiles(y, age).design == "quadratic"
    age, y = _reference(shape="none")
    fit = fit_reference_centiles(y, age)
    assert fit.design == "constant" and set(fit.held_out_loss) == {"constant", "linear", "quadratic"}


def test_without_an_age_effect_the_curves_are_the_empirical_quantiles():
    age, y = _reference(shape="none")
    chart = centile_chart(y, np.ones(y.size, dtype=bool), 0, ages=age)
    assert chart.fit.design == "constant" and chart.uses_age
    expected = np.quantile(y, np.asarray(CHART_CENTILES) / 100, method="inverted_cdf")
    np.testing.assert_allclose(chart.curves, np.tile(expected, (chart.curves.shape[0], 1)))
    # the subject's centile is the share of reference scores below it, to the grid's resolution
    for row in (0, 5, 77):
        chart = centile_chart(y, np.ones(y.size, dtype=bool), row, ages=age)
        share = percentileofscore(y, y[row], kind="weak")
        assert chart.subject_centile == pytest.approx(np.clip(share, 1, 99), abs=2.6)


def test_a_subjects_centile_is_its_fitted_share_of_reference_subjects_of_its_age():
    age, y = _reference(n=400, seed=5, shape="linear")
    fit = fit_reference_centiles(y, age, design="linear")
    for z in (-1.0, 0.0, 1.3):
        score = 3.0 + 0.6 * 10.0 + z  # the true conditional distribution at age 10 is N(9, 1)
        chart = place_subject(fit, y, age, score, 10.0)
        assert chart.subject_centile == pytest.approx(100 * norm.cdf(z), abs=6)
    # a subject on a drawn curve sits at that centile exactly
    curve = fit.quantiles([10.0])[0][int(np.argmin(np.abs(fit.taus - 0.75)))]
    assert place_subject(fit, y, age, curve, 10.0).subject_centile == pytest.approx(75.0)
    assert place_subject(fit, y, age, 100.0, 10.0).beyond == "above"
    assert place_subject(fit, y, age, -100.0, 10.0).beyond == "below"


def test_curves_never_cross():
    rng = np.random.default_rng(2)
    age = rng.uniform(6, 16, 24)
    y = rng.normal(0, 0.2 + 0.3 * (age - 6), 24)  # spread growing with age, few subjects: raw fits cross
    fit = fit_reference_centiles(y, age, design="quadratic")
    chart = place_subject(fit, y, age, 0.0, 20.0)  # extrapolated, where crossing is likeliest
    assert (np.diff(chart.curves, axis=1) >= 0).all()
    assert (np.diff(fit.quantiles(np.linspace(0, 25, 50)), axis=1) >= 0).all()
    assert "outside the reference ages" in chart.note


def test_missing_ages_fall_back_to_the_reference_distribution_and_say_so():
    age, y = _reference(shape="linear")
    reference = np.arange(y.size) > 0
    partial = age.copy()
    partial[1:11] = np.nan
    chart = centile_chart(y, reference, 0, ages=partial)
    assert chart.uses_age and "10 reference subjects without an age left out" in chart.note
    for ages, said in ((None, "no reference ages"), (np.full(y.size, np.nan), "no reference ages"),
                       (np.where(np.arange(y.size) < 15, age, np.nan), "only 14 reference subjects with an age")):
        chart = centile_chart(y, reference, 0, ages=ages)
        assert not chart.uses_age and chart.age_grid is None and said in chart.note
        expected = np.quantile(y[reference], np.asarray(CHART_CENTILES) / 100, method="inverted_cdf")
        np.testing.assert_allclose(chart.curves[0], expected)
    unknown = age.copy()
    unknown[0] = np.nan
    chart = centile_chart(y, reference, 0, ages=unknown)
    assert not chart.uses_age and "subject's age is unknown" in chart.note


def test_too_few_reference_subjects_is_a_clear_error():
    age, y = _reference(n=40)
    reference = np.arange(40) < MIN_REFERENCE - 1
    with pytest.raises(ValueError, match=f"at least {MIN_REFERENCE} reference subjects with a finite score; "
                                         f"received {MIN_REFERENCE - 1}"):
        centile_chart(y, reference, 30, ages=age)
    with pytest.raises(ValueError, match="design must be 'auto' or one of"):
        fit_reference_centiles(y, age, design="spline")


# --- top ROIs, and the story of a subject of a run --------------------------------------------------------------


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return open_run(write_synthetic_study(tmp_path_factory.mktemp("subject") / "study", 160, seed=2))


def test_top_rois_rank_by_the_runs_reference_percentiles(run):
    subject = run.cohort_ids("down_syndrome")[0]
    rois = top_rois(run.roi_scores, subject, run.reference_ids, run.roi_percentiles, n=5)
    assert len(rois) == 5 and list(rois.columns) == ["roi", "value", "percentile", "reference_z"]
    np.testing.assert_allclose(rois["value"], run.roi_scores.loc[subject, rois["roi"]])
    np.testing.assert_allclose(rois["percentile"], run.roi_percentiles.loc[subject, rois["roi"]])
    assert rois["percentile"].is_monotonic_decreasing
    assert rois["percentile"].iloc[0] == run.roi_percentiles.loc[subject].max()
    recomputed = top_rois(run.roi_scores, subject, run.reference_ids, n=5)
    pd.testing.assert_frame_equal(recomputed, rois)


def test_adjusted_percentiles_are_scipys_percentile_of_score(run):
    subject = run.cohort_ids("autism")[1]
    table = run.roi_adjusted
    rois = top_rois(table, subject, run.reference_ids, n=len(table.columns))
    for roi, value in zip(rois["roi"], rois["percentile"], strict=True):
        reference = table.loc[run.reference_ids, roi]
        assert value == pytest.approx(percentileofscore(reference, table.loc[subject, roi], kind="weak"))
    ties = rois.groupby("percentile", sort=False)["reference_z"].apply(lambda z: z.is_monotonic_decreasing)
    assert ties.all()
    by_value = top_rois(table, subject, run.reference_ids, n=3, by="value")
    assert by_value["roi"].tolist() == table.loc[subject].sort_values(ascending=False).index[:3].tolist()
    with pytest.raises(ValueError, match="by must be one of"):
        top_rois(table, subject, run.reference_ids, by="p")


def test_the_story_reads_the_runs_numbers(run):
    subject = run.cohort_ids("down_syndrome")[0]
    story = subject_story(run, subject)
    assert story.detector == "msma_gmm" and story.roi_scores == "adjusted" and story.cohort == "down_syndrome"
    assert story.detector_name == "MSMA GMM"
    # the profile lies in the codebook's space: its nearest unit is the subject's BMU
    distances = np.linalg.norm(run.som.weights - story.profile.subject, axis=-1)
    bmu = tuple(run.subjects.loc[subject, ["bmu_row", "bmu_col"]])
    assert np.unravel_index(distances.argmin(), distances.shape) == bmu == story.profile.bmu
    held_out = run.subjects.index.isin(run.reference_ids)
    np.testing.assert_allclose(story.chart.reference_scores, run.detector_scores["msma_gmm"][held_out])
    assert story.chart.subject_score == run.detector_scores.loc[subject, "msma_gmm"]
    assert story.profile.n_reference == len(run.reference_ids)
    assert story.rois["value"].is_monotonic_decreasing  # adjusted z: one scale for every ROI
    raw = subject_story(run, subject, scores="raw", n_rois=3)
    np.testing.assert_allclose(raw.rois["percentile"], run.roi_percentiles.loc[subject, raw.rois["roi"]])


def test_the_story_refuses_unknown_ids_tables_and_detectors(run):
    with pytest.raises(KeyError, match="'nobody' is not in run"):
        subject_story(run, "nobody")
    subject = run.subjects.index[0]
    with pytest.raises(ValueError, match=r"scores must be one of \['adjusted', 'raw'\]"):
        subject_story(run, subject, scores="z")
    with pytest.raises(KeyError, match="detector 'msma_svm' is not in run"):
        subject_story(run, subject, detector="msma_svm")


def test_the_default_detector_and_its_name():
    assert default_detector(["lowrank_knn", "msma_knn", "msma_gmm"]) == "msma_gmm"
    assert default_detector(["gaussian_gmm", "lowrank_flow"]) == "lowrank_flow"
    assert default_detector(["custom"]) == "custom"
    assert detector_label("msma_knn") == ("MSMA KNN", "distance, log-norm SD")
    assert detector_label("custom") == ("custom", "score")
