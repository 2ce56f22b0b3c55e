"""Covariate balance of a selection against the rest of its cohort."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import chi2_contingency, fisher_exact, mannwhitneyu

from analysis.exploration.balance import covariate_balance, describe_balance

KINDS = {"icv": "numeric", "sex": "categorical", "site": "categorical"}


def _table():
    rng = np.random.default_rng(0)
    ids = [f"s{k}" for k in range(30)]
    cov = pd.DataFrame({
        "icv": np.r_[rng.normal(1300, 50, 12), rng.normal(1450, 50, 18)],
        "sex": ["F"] * 11 + ["M"] + ["F"] * 4 + ["M"] * 14,
        "site": rng.choice(["A", "B", "C"], 30),
    }, index=ids)
    return cov, ids[:12], ids[12:]


def test_balance_matches_scipy():
    cov, inside, rest = _table()
    rows = {r["name"]: r for r in covariate_balance(cov, KINDS, inside, rest)}
    assert rows["icv"]["p"] == pytest.approx(mannwhitneyu(cov.loc[inside, "icv"], cov.loc[rest, "icv"]).pvalue)
    assert rows["icv"]["selection"]["mean"] == pytest.approx(cov.loc[inside, "icv"].mean())
    assert rows["icv"]["rest"]["sd"] == pytest.approx(cov.loc[rest, "icv"].std(ddof=1))
    assert rows["icv"]["unbalanced"]
    assert rows["sex"]["selection"] == {"F": 11, "M": 1} and rows["sex"]["rest"] == {"F": 4, "M": 14}
    assert rows["sex"]["p"] == pytest.approx(fisher_exact([[11, 1], [4, 14]]).pvalue)
    site = [[int((cov.loc[g, "site"] == lv).sum()) for lv in "ABC"] for g in (inside, rest)]
    assert rows["site"]["test"] == "chi-square"
    assert rows["site"]["p"] == pytest.approx(chi2_contingency(np.array(site)).pvalue)


def test_untestable_and_missing_values():
    cov, inside, rest = _table()
    cov.loc[inside, "icv"] = np.nan
    cov["sex"] = "F"
    rows = {r["name"]: r for r in covariate_balance(cov, KINDS, inside, rest)}
    assert rows["icv"]["p"] is None and rows["icv"]["selection"] == {"n_known": 0, "mean": None, "sd": None}
    assert rows["sex"]["p"] is None and not rows["sex"]["unbalanced"]
    assert describe_balance(rows["icv"]).startswith("icv: unknown vs ")
    assert "not testable" in describe_balance(rows["sex"])


def test_describe_reads_as_a_line():
    cov, inside, rest = _table()
    rows = {r["name"]: r for r in covariate_balance(cov, KINDS, inside, rest)}
    assert describe_balance(rows["sex"]).startswith("sex: F 11 / M 1 vs F 4 / M 14 (Fisher exact p ")
    assert " +/- " in describe_balance(rows["icv"])
