"""The normative model of ROI scores, checked against statsmodels' OLS."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from statsmodels.stats.outliers_influence import OLSInfluence

from analysis.exploration.normative import Encoding, NormativeError, NormativeModel, held_out_errors

KINDS = {"icv": "numeric", "age": "numeric", "sex": "categorical", "site": "categorical"}


def _study(n_fit=60, n_other=25, seed=0, quadratic=0.0):
    """Covariates and three ROI scores that follow icv, sex and site linearly (plus ``quadratic`` * age^2)."""
    rng = np.random.default_rng(seed)
    n = n_fit + n_other
    ids = [f"s{k:03d}" for k in range(n)]
    cov = pd.DataFrame({
        "icv": rng.normal(1400, 120, n),
        "age": rng.uniform(6, 14, n),
        "sex": rng.choice(["F", "M"], n),
        "site": rng.choice(["A", "B", "C"], n, p=[0.5, 0.3, 0.2]),
    }, index=ids)
    base = (0.01 * (cov["icv"] - 1400) + 0.5 * (cov["sex"] == "M") + 0.8 * (cov["site"] == "B")
            + quadratic * (cov["age"] - 10) ** 2).to_numpy()
    scores = pd.DataFrame({f"roi{j}": (j + 1) * base + rng.normal(0, 1, n) for j in range(3)}, index=ids)
    return cov, scores, ids[:n_fit], ids[n_fit:]


def _statsmodels_design(cov, model):
    """The same design as the model's encoding, built by hand (standardised numeric, baseline-coded levels)."""
    enc = model.encoding_
    columns = {"intercept": np.ones(len(cov))}
    for name, kind in KINDS.items():
        if kind == "numeric":
            columns[name] = (cov[name] - enc.centre[name]) / enc.scale[name]
        else:
            for level in enc.levels[name][1:]:
                columns[f"{name}[{level}]"] = (cov[name] == level).astype(float)
    return pd.DataFrame(columns, index=cov.index)


def test_coefficients_and_deviations_match_statsmodels():
    cov, scores, fit, other = _study()
    model = NormativeModel(KINDS, design="linear").fit(scores, cov, fit)
    x = _statsmodels_design(cov, model)
    z = model.deviations(scores, cov)
    for roi in scores.columns:
        ols = sm.OLS(scores.loc[fit, roi], x.loc[fit]).fit()
        np.testing.assert_allclose(model.coefficients_.loc[roi, list(x.columns)], ols.params, rtol=1e-8, atol=1e-10)
        np.testing.assert_allclose(model.sigma_[roi], np.sqrt(ols.scale), rtol=1e-10)
        # Fit subjects: externally studentised residuals (each seen from the model fitted without it) ...
        np.testing.assert_allclose(z.loc[fit, roi], OLSInfluence(ols).resid_studentized_external, rtol=1e-8)
        # ... which is that model's predictive z for the subject, as for any subject outside the fit set.
        first, others = fit[0], fit[1:]
        loo = sm.OLS(scores.loc[others, roi], x.loc[others]).fit().get_prediction(x.loc[[first]])
        expected_first = (scores.loc[first, roi] - loo.predicted_mean[0]) / loo.se_obs[0]
        assert z.loc[first, roi] == pytest.approx(expected_first, rel=1e-8)
        # Others: residual over the predictive SD of a new observation.
        prediction = ols.get_prediction(x.loc[other])
        expected = (scores.loc[other, roi] - prediction.predicted_mean) / prediction.se_obs
        np.testing.assert_allclose(z.loc[other, roi], expected, rtol=1e-8)
        np.testing.assert_allclose(model.predict(cov.loc[other])[roi], prediction.predicted_mean, rtol=1e-8)


def test_adjustment_removes_the_covariate_effect_and_keeps_a_regional_one():
    cov, scores, fit, other = _study(n_fit=120, n_other=60, seed=1)
    scores.loc[other[:30], "roi0"] += 3.0  # a regional effect in half of the other subjects
    model = NormativeModel(KINDS).fit(scores, cov, fit)
    z = model.deviations(scores, cov)
    raw_r = np.corrcoef(scores.loc[other, "roi2"], cov.loc[other, "icv"])[0, 1]
    adjusted_r = np.corrcoef(z.loc[other, "roi2"], cov.loc[other, "icv"])[0, 1]
    assert abs(raw_r) > 0.5 and abs(adjusted_r) < 0.25
    assert z.loc[other[:30], "roi0"].mean() - z.loc[other[30:], "roi0"].mean() > 2.0
    # Typical subjects' deviations read as standard normal.
    assert abs(z.loc[other[30:], "roi2"].std() - 1.0) < 0.3
    assert model.held_out_["r2"]["linear"] > 0.5


def test_richer_design_only_when_held_out_fit_says_so():
    cov, scores, fit, _ = _study(n_fit=150, seed=2)
    assert NormativeModel(KINDS).fit(scores, cov, fit).encoding_.design == "linear"
    cov, scores, fit, _ = _study(n_fit=150, seed=2, quadratic=0.4)
    model = NormativeModel(KINDS).fit(scores, cov, fit)
    assert model.encoding_.design == "quadratic"
    assert model.held_out_["error"]["quadratic"] < model.held_out_["error"]["linear"]
    assert "age^2" in model.coefficient_table().columns


def test_held_out_errors_against_a_hand_written_cross_validation():
    rng = np.random.default_rng(3)
    x = np.column_stack([np.ones(30), rng.normal(size=30)])
    y = (x @ np.array([[1.0, 2.0], [0.5, -1.0]]) + rng.normal(size=(30, 2)))
    folds = np.random.default_rng(0).permutation(30) % 5
    expected = []
    for f in range(5):
        test = folds == f
        beta = np.linalg.lstsq(x[~test], y[~test], rcond=None)[0]
        expected.append(((y[test] - x[test] @ beta) / y.std(axis=0, ddof=1)) ** 2)
    got = held_out_errors({"linear": x}, y, n_folds=5, random_state=0)["linear"]
    assert got == pytest.approx(np.concatenate(expected).mean())


def test_missing_covariates_are_imputed_and_counted():
    cov, scores, fit, other = _study()
    cov.loc[fit[:3], "icv"] = np.nan
    cov.loc[other[:2], "sex"] = None
    model = NormativeModel(KINDS, design="linear").fit(scores, cov, fit)
    assert model.record()["imputed"]["icv"] == 3
    z = model.deviations(scores, cov)
    assert np.isfinite(z.to_numpy()).all()
    # A subject without sex is predicted at the baseline level.
    baseline = model.encoding_.levels["sex"][0]
    filled = cov.loc[[other[0]]].assign(sex=baseline)
    np.testing.assert_allclose(model.predict(cov.loc[[other[0]]]), model.predict(filled))


def test_errors_name_the_covariate():
    cov, scores, fit, other = _study()
    model = NormativeModel(KINDS).fit(scores, cov, fit)
    unseen = cov.assign(site=cov["site"].where(cov.index.isin(fit), "Z"))
    with pytest.raises(NormativeError, match="site.*absent from the reference"):
        model.encoding_.matrix(unseen)
    # A subject whose level the fit subjects lack gets no deviation; the others are unaffected.
    z = model.deviations(scores, unseen)
    assert z.loc[other].isna().all().all() and np.isfinite(z.loc[fit].to_numpy()).all()
    with pytest.raises(NormativeError, match="covariate age: expected at least two different values"):
        NormativeModel(KINDS).fit(scores, cov.assign(age=10.0), fit)
    with pytest.raises(NormativeError, match="covariate sex: expected at least two levels"):
        NormativeModel(KINDS).fit(scores, cov.assign(sex="F"), fit)
    with pytest.raises(NormativeError, match="the linear design needs .* 5 fit subjects beyond its parameters"):
        NormativeModel(KINDS, design="linear").fit(scores, cov, fit[:8])
    assert NormativeModel(KINDS).fit(scores, cov, fit[:8]).encoding_.design == "mean"
    with pytest.raises(NormativeError, match="at least 6 reference subjects to fit 1 parameters"):
        NormativeModel(KINDS).fit(scores, cov, fit[:5])
    with pytest.raises(NormativeError, match="not fitted"):
        NormativeModel(KINDS).deviations(scores, cov)
    with pytest.raises(NormativeError, match="kind must be one of"):
        Encoding.learn(cov, {"age": "ordinal"})


def test_record_names_the_model():
    cov, scores, fit, _ = _study()
    record = NormativeModel(KINDS).fit(scores, cov, fit).record()
    assert record["fit_subjects"] == len(fit)
    assert record["terms"][0] == "intercept" and record["parameters"] == len(record["terms"])
    assert [c["name"] for c in record["covariates"]] == list(KINDS)
    assert set(record["held_out"]["error"]) >= {"mean", "linear"}


def test_covariates_that_predict_nothing_leave_the_ranks_as_they_were():
    """Scores unrelated to the covariates: the held-out fit keeps the intercept alone, and every ROI's deviations
    are its raw scores standardised (so every rank-based test of the chain gives the same answer)."""
    rng = np.random.default_rng(4)
    cov, _, fit, other = _study(n_fit=80, n_other=30, seed=4)
    scores = pd.DataFrame(rng.normal(size=(len(cov), 4)), index=cov.index, columns=[f"roi{j}" for j in range(4)])
    model = NormativeModel(KINDS).fit(scores, cov, fit)
    assert model.encoding_.design == "mean" and model.record()["terms"] == ["intercept"]
    assert model.held_out_["error"]["linear"] > model.held_out_["error"]["mean"]
    z = model.deviations(scores, cov)
    for roi in scores.columns:  # subjects outside the fit set (the cohorts the chain tests) keep their order
        assert z.loc[other, roi].rank().equals(scores.loc[other, roi].rank())
        # A reference subject: against the mean and SD of the other fit subjects, as a new subject would be.
        rest = scores.loc[fit[1:], roi]
        assert z.loc[fit[0], roi] == pytest.approx(
            (scores.loc[fit[0], roi] - rest.mean()) / rest.std(ddof=1) / np.sqrt(1 + 1 / len(rest)))
        np.testing.assert_allclose(z.loc[other, roi], (scores.loc[other, roi] - scores.loc[fit, roi].mean())
                                   / scores.loc[fit, roi].std(ddof=1) / np.sqrt(1 + 1 / len(fit)))


def test_auto_never_picks_a_design_it_cannot_fit():
    """Ten fit subjects and four site levels: the linear design has 7 parameters, fewer than 5 residual degrees of
    freedom, so it is not a candidate even when the sites explain everything."""
    cov, scores, fit, other = _study(n_fit=10, n_other=5, seed=5)
    cov["site"] = ["A", "B", "C", "D"] * 3 + ["A", "B", "C"]
    scores = scores.add(10.0 * (cov["site"] == "B").to_numpy()[:, None])
    model = NormativeModel(KINDS).fit(scores, cov, fit)
    assert model.encoding_.design == "mean" and "linear" not in model.held_out_["error"]
