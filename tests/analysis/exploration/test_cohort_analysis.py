"""The ch. 6.3 chain on ROI scores: atypical ROIs, prototype vs rest, behaviour correlations, planted recovery."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import mannwhitneyu, spearmanr

from analysis.exploration.cohort_analysis import ChainSettings, analyse_cohort, planted_recovery


def _study(seed=0):
    """40 reference subjects, a cohort of 30 (12 in its prototype) with ROIs A and B raised in the prototype in
    proportion to a severity that one behaviour score follows; ROIs C-F are noise."""
    rng = np.random.default_rng(seed)
    rois = ["A", "B", "C", "D", "E", "F"]
    reference = [f"r{i}" for i in range(40)]
    cohort = [f"c{i}" for i in range(30)]
    prototype = cohort[:12]
    scores = pd.DataFrame(rng.standard_normal((70, 6)), index=reference + cohort, columns=rois)
    severity = pd.Series(0.0, index=cohort)
    severity[prototype] = rng.uniform(2.0, 4.0, 12)
    scores.loc[cohort, "A"] += severity
    scores.loc[cohort, "B"] += severity
    scores.loc[cohort, "C"] += 1.6  # raised in the whole cohort, not in the prototype
    behaviour = pd.DataFrame(rng.standard_normal((30, 3)), index=cohort, columns=["s1", "s2", "s3"])
    behaviour["s1"] -= 1.5 * severity
    return scores, reference, cohort, prototype, behaviour


def test_chain_keeps_tests_and_correlates_the_planted_rois():
    scores, reference, cohort, prototype, behaviour = _study()
    result = analyse_cohort("x", scores, reference, cohort, prototype, behaviour, ChainSettings(n_permutations=2000))
    threshold = scores.loc[reference].quantile(0.9)
    expected_kept = [r for r in scores.columns if scores.loc[cohort, r].mean() > threshold[r]]
    assert result.kept_rois == expected_kept and {"A", "B", "C"} <= set(expected_kept)
    rest = [i for i in cohort if i not in prototype]
    for _, row in result.roi_tests.iterrows():
        p = mannwhitneyu(scores.loc[prototype, row["roi"]], scores.loc[rest, row["roi"]]).pvalue
        assert row["p_raw"] == pytest.approx(p, rel=1e-12)
    assert set(result.significant_rois) == {"A", "B"}
    table = result.correlations.table
    assert len(table) == 2 * 3
    a_s1 = table[(table["roi"] == "A") & (table["behaviour"] == "s1")].iloc[0]
    assert a_s1["rho"] == pytest.approx(spearmanr(scores.loc[cohort, "A"], behaviour["s1"]).statistic, abs=1e-12)
    assert a_s1["p_bh"] < 0.01

    recovery = planted_recovery(
        result,
        {"group": ["A", "B"], "other": ["D"]},
        [{"score": "s1", "region_group": "group", "regions": ["A", "B"], "direction": -1},
         {"score": "s2", "region_group": "other", "regions": ["D"], "direction": 1}],
    )
    assert recovery["regions"]["recall"] == 2 / 3 and recovery["regions"]["false_discovery_proportion"] == 0.0
    behaviour_found = recovery["behaviour"]
    assert [f["score"] for f in behaviour_found["found"]] == ["s1"] and behaviour_found["recall"] == 0.5
    assert behaviour_found["false_discoveries"] == behaviour_found["significant_pairs"] - 2


def test_a_wrong_sign_is_not_a_recovered_pair_and_no_prototype_means_no_tests():
    scores, reference, cohort, prototype, behaviour = _study(1)
    result = analyse_cohort("x", scores, reference, cohort, prototype, behaviour, ChainSettings(n_permutations=500))
    recovery = planted_recovery(result, {"g": ["A"]}, [{"score": "s1", "region_group": "g", "regions": ["A"],
                                                        "direction": 1}])
    assert recovery["behaviour"]["found"] == []
    empty = analyse_cohort("x", scores, reference, cohort, [], behaviour)
    assert empty.significant_rois == [] and empty.correlations is None and empty.roi_tests.empty


def test_region_step_tests_the_selections_cohort_members_and_switches_correction():
    from analysis.exploration.cohort_analysis import region_step

    scores, reference, cohort, prototype, behaviour = _study()
    # A selection that also holds reference subjects: only the cohort's members in it are tested.
    selection = prototype[:10] + reference[:5]
    bonferroni = region_step(scores, reference, cohort, selection)
    bh = region_step(scores, reference, cohort, selection, correction="bh", alpha=0.05)
    rest = [i for i in cohort if i not in set(prototype[:10])]
    row = bonferroni.tests.set_index("roi").loc["A"]
    assert row["n_prototype"] == 10 and row["n_rest"] == len(rest) == 20
    assert row["p_raw"] == pytest.approx(mannwhitneyu(scores.loc[prototype[:10], "A"], scores.loc[rest, "A"]).pvalue)
    assert bonferroni.significant_rois == bonferroni.tests.loc[bonferroni.tests["p_bonferroni"] < 0.05, "roi"].tolist()
    assert bh.significant_rois == bh.tests.loc[bh.tests["p_bh"] < 0.05, "roi"].tolist()
    assert set(bonferroni.significant_rois) <= set(bh.significant_rois)
    with pytest.raises(ValueError, match="correction"):
        region_step(scores, reference, cohort, selection, correction="holm")


def test_analyse_cohort_is_the_region_step_and_the_behaviour_step_of_its_prototype():
    from analysis.exploration.cohort_analysis import behaviour_table, region_step

    scores, reference, cohort, prototype, behaviour = _study(2)
    chain = analyse_cohort("x", scores, reference, cohort, prototype, behaviour, ChainSettings(n_permutations=300))
    regions = region_step(scores, reference, cohort, prototype)
    pd.testing.assert_frame_equal(chain.roi_tests, regions.tests)
    correlations = behaviour_table(scores, behaviour, cohort, regions.significant_rois, n_permutations=300).result()
    pd.testing.assert_frame_equal(chain.correlations.table, correlations.table)
    assert behaviour_table(scores, None, cohort, regions.significant_rois) is None
    assert behaviour_table(scores, behaviour, cohort, []) is None


def test_selection_summary_counts_sex_and_age_against_the_rest_of_the_cohort():
    from scipy.stats import fisher_exact

    from analysis.exploration.cohort_analysis import selection_summary

    ids = [f"c{i}" for i in range(10)] + ["r0", "r1"]
    subjects = pd.DataFrame(
        {"cohort": ["x"] * 10 + ["ref"] * 2, "sex": list("FFFFMFMMMM") + ["F", None],
         "age": [9.0, 10, 11, 9, 10, np.nan, 12, 12, 11, 10, 9, 9]},
        index=pd.Index(ids, name="subject_id"),
    )
    summary = selection_summary(subjects, ["c0", "c1", "c2", "c3", "c4", "r0"], "x")
    assert summary["selected"] == 6 and summary["selected_per_cohort"] == {"x": 5, "ref": 1}
    assert (summary["selection"]["n"], summary["rest"]["n"]) == (5, 5)
    assert summary["selection"]["female"] == 4 and summary["selection"]["male"] == 1
    assert summary["rest"]["female"] == 1 and summary["rest"]["male"] == 4
    assert summary["sex_fisher_p"] == pytest.approx(fisher_exact([[4, 1], [1, 4]]).pvalue)
    assert summary["selection"]["age_mean"] == pytest.approx(9.8)
    assert summary["rest"]["age_known"] == 4 and summary["rest"]["age_mean"] == pytest.approx(11.25)
    assert summary["warnings"] == []
    small = selection_summary(subjects, ["c0", "c1"], "x")
    assert len(small["warnings"]) == 1 and "too small to test" in small["warnings"][0]
