"""ROI statistics of a cohort prototype: checked against brute force, scipy and statsmodels."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from statsmodels.stats.multitest import multipletests

from analysis.exploration.roi_stats import atypical_rois, prototype_vs_rest, reference_percentile


def _scores(seed: int = 0) -> tuple[pd.DataFrame, list, list, list]:
    rng = np.random.default_rng(seed)
    ids = [f"s{i:03d}" for i in range(140)]
    table = pd.DataFrame(rng.normal(size=(140, 6)), index=ids, columns=[f"roi{j}" for j in range(6)])
    reference, prototype, rest = ids[:100], ids[100:116], ids[116:]
    table.loc[prototype, ["roi1", "roi4"]] += 4.0  # the prototype's regions
    table.loc[rest, "roi4"] += 2.5  # the whole cohort is atypical in roi4
    table.loc[ids[100:], "roi2"] += 0.2  # slightly shifted, below the reference 90th percentile
    return table, reference, prototype, rest


def test_atypical_rois_use_the_reference_90th_percentile():
    table, reference, prototype, rest = _scores()
    p90 = reference_percentile(table, reference)
    np.testing.assert_allclose(p90.to_numpy(), np.percentile(table.loc[reference].to_numpy(), 90, axis=0))
    kept = atypical_rois(table, reference, prototype + rest)
    means = table.loc[prototype + rest].mean()
    assert kept == [roi for roi in table.columns if means[roi] > p90[roi]]
    assert "roi4" in kept and "roi1" in kept and "roi0" not in kept and "roi2" not in kept


def test_mann_whitney_u_effect_size_and_corrections_match_independent_references():
    table, reference, prototype, rest = _scores(1)
    table.loc[rest[:3], "roi0"] = table.loc[prototype[0], "roi0"]  # ties
    result = prototype_vs_rest(table, prototype, rest, reference_ids=reference).set_index("roi")
    for roi in table.columns:
        a, b = table.loc[prototype, roi].to_numpy(), table.loc[rest, roi].to_numpy()
        brute_u = (a[:, None] > b[None, :]).sum() + 0.5 * (a[:, None] == b[None, :]).sum()
        assert result.loc[roi, "u"] == pytest.approx(brute_u)
        assert result.loc[roi, "rank_biserial"] == pytest.approx(2 * brute_u / (a.size * b.size) - 1)
    p = result.loc[list(table.columns), "p_raw"].to_numpy()
    np.testing.assert_allclose(
        result.loc[list(table.columns), "p_bonferroni"], multipletests(p, method="bonferroni")[1], rtol=1e-12
    )
    bh = multipletests(p, method="fdr_bh")[1]
    np.testing.assert_allclose(result.loc[list(table.columns), "p_bh"], bh, rtol=1e-12)
    assert result.index[0] == "roi1" and result.loc["roi1", "p_bonferroni"] < 1e-4
    assert result.loc["roi1", "rank_biserial"] > 0.9 and abs(result.loc["roi3", "rank_biserial"]) < 0.5


def test_missing_scores_are_dropped_per_roi_and_empty_groups_rejected():
    table, reference, prototype, rest = _scores(2)
    table.loc[prototype[:4], "roi3"] = np.nan
    result = prototype_vs_rest(table, prototype, rest, rois=["roi3", "roi1"]).set_index("roi")
    assert result.loc["roi3", "n_prototype"] == 12 and result.loc["roi1", "n_prototype"] == 16
    with pytest.raises(ValueError, match="both groups"):
        prototype_vs_rest(table, [], rest)


def test_percentile_reference_leaves_out_training_subjects_unless_all_trained():
    from analysis.exploration.roi_stats import percentile_reference

    ids, cohorts = ["a", "b", "c", "d"], ["ref", "ref", "x", "ref"]
    assert percentile_reference(ids, cohorts, ["a"], "ref") == ["b", "d"]
    assert percentile_reference(ids, cohorts, ["a", "b", "d"], "ref") == ["a", "b", "d"]


def test_roi_columns_name_repeated_labels_by_index_and_skip_absent_ones():
    from analysis.exploration.roi_stats import roi_columns

    names = pd.DataFrame({"index": [1, 2, 3, 4], "name": ["A", "B", "B", "C"]})
    assert roi_columns(names, [0, 1, 2, 3]) == {"A": 1, "B (2)": 2, "B (3)": 3}


@pytest.mark.parametrize("n_prototype", [5, 12], ids=["small group: exact where no ties", "asymptotic"])
def test_prototype_vs_rest_equals_scipy_column_by_column_with_ties_and_missing_values(n_prototype):
    from scipy.stats import mannwhitneyu

    from analysis.exploration.roi_stats import prototype_vs_rest

    rng = np.random.default_rng(3)
    n = n_prototype + 14
    scores = pd.DataFrame(rng.normal(size=(n, 6)), index=[f"s{i}" for i in range(n)], columns=list("ABCDEF"))
    scores["B"] = np.round(scores["B"])  # ties: scipy switches to the asymptotic test
    scores.iloc[2, 2] = np.nan  # missing values: each column keeps its own complete cases
    scores.iloc[n - 1, 3] = np.nan
    scores.iloc[:n_prototype, 4] += 1.0
    prototype, rest = list(scores.index[:n_prototype]), list(scores.index[n_prototype:])
    table = prototype_vs_rest(scores, prototype, rest).set_index("roi")
    for roi in scores.columns:
        a, b = scores.loc[prototype, roi].dropna(), scores.loc[rest, roi].dropna()
        expected = mannwhitneyu(a, b, alternative="two-sided")
        assert table.loc[roi, "p_raw"] == pytest.approx(expected.pvalue, rel=1e-12)
        assert table.loc[roi, "u"] == expected.statistic
        assert table.loc[roi, "n_prototype"] == len(a) and table.loc[roi, "median_rest"] == pytest.approx(b.median())
        assert table.loc[roi, "rank_biserial"] == pytest.approx(2 * expected.statistic / (len(a) * len(b)) - 1)


@pytest.mark.parametrize("percentile", [0, 37.5, 90, 100])
def test_column_nanpercentile_equals_numpys(percentile):
    from analysis.exploration.roi_stats import column_nanpercentile

    rng = np.random.default_rng(5)
    values = rng.normal(size=(23, 7))
    values[rng.random(values.shape) < 0.3] = np.nan
    values[:, 2] = np.nan  # a column without values
    values[1:, 4] = np.nan  # one value
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = np.nanpercentile(values, percentile, axis=0)
    np.testing.assert_allclose(column_nanpercentile(values, percentile), expected, rtol=1e-12, equal_nan=True)
