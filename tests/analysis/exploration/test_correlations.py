"""Permutation Spearman correlations: checked against scipy.stats (spearmanr, permutation_test) and statsmodels."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from statsmodels.stats.multitest import multipletests

from analysis.exploration.correlations import benjamini_hochberg, spearman_permutation


def _data(n: int = 28, n_rois: int = 6, n_scores: int = 5, seed: int = 0, missing: float = 0.1):
    rng = np.random.default_rng(seed)
    rois = pd.DataFrame(rng.normal(size=(n, n_rois)), columns=[f"roi{j}" for j in range(n_rois)])
    scores = rng.normal(size=(n, n_scores))
    scores[:, 0] += 1.5 * rois["roi0"].to_numpy()  # one real association
    scores[rng.random(scores.shape) < missing] = np.nan
    behaviour = pd.DataFrame(scores, columns=[f"score{k}" for k in range(n_scores)])
    return rois, behaviour


def test_rho_equals_scipy_spearmanr_on_each_pairs_complete_cases():
    rois, behaviour = _data()
    rois.iloc[3, 2] = np.nan
    result = spearman_permutation(rois, behaviour, n_permutations=10, min_complete=5)
    for row in result.table.itertuples():
        keep = rois[row.roi].notna() & behaviour[row.behaviour].notna()
        expected = stats.spearmanr(rois.loc[keep, row.roi], behaviour.loc[keep, row.behaviour]).statistic
        assert row.n == keep.sum()
        assert row.rho == pytest.approx(expected, abs=1e-12)


def test_p_values_match_scipy_permutation_test_within_monte_carlo_error():
    rois, behaviour = _data(n=20, n_rois=3, n_scores=2, seed=1, missing=0.0)
    n_permutations = 4000
    result = spearman_permutation(rois, behaviour, n_permutations=n_permutations, random_state=2)
    for row in result.table.itertuples():
        reference = stats.permutation_test(
            (rois[row.roi].to_numpy(), behaviour[row.behaviour].to_numpy()),
            lambda a, b: stats.spearmanr(a, b).statistic,
            permutation_type="pairings",
            n_resamples=n_permutations,
            alternative="two-sided",
            random_state=3,
        ).pvalue
        tolerance = 4 * np.sqrt(max(reference, 0.01) * (1 - reference) / n_permutations) + 2 / n_permutations
        assert abs(row.p_perm - reference) < tolerance


def test_bh_matches_statsmodels_with_nans_masked():
    rng = np.random.default_rng(4)
    p = rng.random(200) ** 3
    p[[3, 50, 77]] = np.nan
    expected = np.full_like(p, np.nan)
    keep = ~np.isnan(p)
    expected[keep] = multipletests(p[keep], method="fdr_bh")[1]
    np.testing.assert_allclose(benjamini_hochberg(p), expected, rtol=1e-12, equal_nan=True)


def test_untestable_pairs_are_reported_not_dropped():
    rois, behaviour = _data(n=12, n_rois=2, n_scores=2, missing=0.0)
    behaviour.iloc[:8, 1] = np.nan
    result = spearman_permutation(rois, behaviour, n_permutations=50, min_complete=6)
    assert len(result.table) == 4
    untestable = result.table[~result.table.testable]
    assert set(untestable.behaviour) == {"score1"} and (untestable.n == 4).all()
    assert untestable[["rho", "p_perm", "p_bh", "p_maxt"]].isna().all().all()


def test_maxt_is_familywise_and_the_floor_is_reported():
    rois, behaviour = _data(n=30, n_rois=8, n_scores=6, missing=0.05)
    result = spearman_permutation(rois, behaviour, n_permutations=999)
    table = result.table[result.table.testable]
    assert result.p_floor == pytest.approx(1 / 1000)
    assert (table.p_maxt >= table.p_perm - 1e-12).all()
    assert (table.p_perm >= result.p_floor - 1e-15).all()
    real = table[(table.roi == "roi0") & (table.behaviour == "score0")].iloc[0]
    assert real.p_perm == pytest.approx(result.p_floor) and real.p_maxt < 0.05 and real.p_bh < 0.05
    single = spearman_permutation(rois[["roi1"]], behaviour[["score2"]], n_permutations=999)
    row = single.table.iloc[0]
    assert row.p_maxt == pytest.approx(row.p_perm)


def test_results_are_reproducible_and_depend_on_the_seed():
    rois, behaviour = _data()
    a = spearman_permutation(rois, behaviour, n_permutations=200, random_state=5).table
    b = spearman_permutation(rois, behaviour, n_permutations=200, random_state=5).table
    c = spearman_permutation(rois, behaviour, n_permutations=200, random_state=6).table
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a.p_perm.dropna(), c.p_perm.dropna())


def test_partial_spearman_equals_pearson_of_rank_residuals_from_statsmodels():
    import statsmodels.api as sm

    rois, behaviour = _data(n=40, n_rois=3, n_scores=2, seed=7, missing=0.1)
    rng = np.random.default_rng(8)
    covariates = pd.DataFrame({"age": rng.uniform(8, 12, 40), "sex": rng.integers(0, 2, 40).astype(float)})
    covariates.iloc[5, 0] = np.nan
    result = spearman_permutation(rois, behaviour, n_permutations=20, min_complete=5, covariates=covariates)
    for row in result.table.itertuples():
        keep = rois[row.roi].notna() & behaviour[row.behaviour].notna() & covariates.notna().all(axis=1)
        design = sm.add_constant(covariates[keep].to_numpy())
        rx = sm.OLS(stats.rankdata(rois.loc[keep, row.roi]), design).fit().resid
        ry = sm.OLS(stats.rankdata(behaviour.loc[keep, row.behaviour]), design).fit().resid
        assert row.n == keep.sum()
        assert row.rho == pytest.approx(stats.pearsonr(rx, ry).statistic, abs=1e-10)


def _per_pair_reference(rois, behaviour, n_permutations, random_state, min_complete):
    """The permutation test by its definition, one pair at a time: the pair's complete cases, permuted by the
    argsort of the shared keys restricted to them, rho from scipy.stats.spearmanr (no shared sort, no blocks)."""
    keys = np.random.default_rng(random_state).random((n_permutations, len(rois)))
    p, nulls = {}, {}
    for roi in rois.columns:
        for score in behaviour.columns:
            keep = (rois[roi].notna() & behaviour[score].notna()).to_numpy()
            if keep.sum() < min_complete:
                continue
            a, b = rois[roi].to_numpy()[keep], behaviour[score].to_numpy()[keep]
            order = np.argsort(keys[:, keep], axis=1)
            observed = abs(stats.spearmanr(a, b).statistic)
            null = np.abs([stats.spearmanr(a, b[o]).statistic for o in order])
            null = np.nan_to_num(null)  # a constant column has no defined rho: 0, as the fast path reports it
            p[(roi, score)] = (1 + np.sum(null >= np.nan_to_num(observed) - 1e-9)) / (n_permutations + 1)
            nulls[(roi, score)] = null
    max_null = np.max(np.stack(list(nulls.values())), axis=0)
    return p, max_null


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
def test_p_values_equal_the_per_pair_definition_with_ties_missing_values_and_a_constant_score():
    rng = np.random.default_rng(7)
    n = 24
    rois = pd.DataFrame(np.round(rng.normal(size=(n, 4)), 0), columns=[f"roi{j}" for j in range(4)])  # many ties
    scores = np.round(rng.normal(size=(n, 4)) * 2) / 2
    scores[:, 1] += rois["roi1"].to_numpy()
    scores[rng.random(scores.shape) < 0.15] = np.nan
    scores[:, 3] = 2.0  # constant: rho 0 and p 1
    rois.iloc[[2, 9], 0] = np.nan
    behaviour = pd.DataFrame(scores, columns=[f"score{k}" for k in range(4)])
    result = spearman_permutation(rois, behaviour, n_permutations=300, min_complete=5, random_state=11)
    reference, max_null = _per_pair_reference(rois, behaviour, 300, 11, 5)
    table = result.table.set_index(["roi", "behaviour"])
    assert len(reference) == int(table["testable"].sum()) == 16
    for pair, p in reference.items():
        assert table.loc[pair, "p_perm"] == pytest.approx(p, abs=1e-12), pair
        expected_maxt = (1 + np.sum(max_null >= abs(table.loc[pair, "rho"]) - 1e-6)) / 301
        assert table.loc[pair, "p_maxt"] == pytest.approx(expected_maxt, abs=1e-12), pair
    assert (table.xs("score3", level="behaviour")["p_perm"] == 1.0).all()
    assert (table.xs("score3", level="behaviour")["rho"] == 0.0).all()


def test_a_subset_of_the_rois_read_from_the_table_equals_permuting_the_subset_alone():
    from analysis.exploration.correlations import permutation_table

    rois, behaviour = _data(n=30, n_rois=7, n_scores=5, seed=5, missing=0.12)
    rois.iloc[4, 3] = np.nan
    table = permutation_table(rois, behaviour, n_permutations=800, min_complete=5, random_state=9)
    subset = ["roi5", "roi0", "roi3"]
    read = table.result(subset).table
    fresh = spearman_permutation(rois[subset], behaviour, n_permutations=800, min_complete=5, random_state=9).table
    pd.testing.assert_frame_equal(read, fresh)
    assert read["roi"].tolist()[:5] == ["roi5"] * 5  # the subset's order, then every behaviour score
    everything = table.result().table
    assert not np.allclose(everything.set_index(["roi", "behaviour"]).loc[read.set_index(["roi", "behaviour"]).index,
                                                                          "p_bh"], read["p_bh"])  # BH over the subset
