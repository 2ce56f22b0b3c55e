"""Covariate balance of a selection against the rest of its cohort, so a confound is seen before a region is believed.

A selection whose members are older, smaller-headed or scanned elsewhere than the rest of the cohort will differ in
many regions for that reason alone. Each covariate is shown side by side: numeric ones by mean and SD with a
two-sided Mann-Whitney U test (the test of the region step), categorical ones by level counts with Fisher's exact
test for two levels and a chi-square test of independence for more.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from scipy.stats import chi2_contingency, fisher_exact, mannwhitneyu

BALANCE_ALPHA = 0.05
"""Uncorrected p below which a covariate is flagged as unbalanced (a warning, not a finding)."""


def _numeric(values: pd.Series) -> dict:
    known = pd.to_numeric(values, errors="coerce").dropna()
    return {
        "n_known": int(len(known)),
        "mean": float(known.mean()) if len(known) else None,
        "sd": float(known.std(ddof=1)) if len(known) > 1 else None,
    }


def covariate_balance(covariates: pd.DataFrame, kinds: Mapping[str, str], inside: Sequence,
                      rest: Sequence) -> list[dict]:
    """Each covariate for the selection's members (``inside``) against the rest of the cohort (``rest``).

    Parameters
    ----------
    covariates : DataFrame (subjects x covariates), indexed by subject id
    kinds : covariate -> "numeric" | "categorical", in display order
    inside, rest : subject ids

    Returns
    -------
    list of dict
        One per covariate: ``name``, ``kind``, ``selection`` and ``rest`` (numeric: n_known, mean, sd; categorical:
        counts per level), ``test`` (the test's name), ``p`` (None when a group has no known value, or a
        categorical covariate shows a single level) and ``unbalanced`` (p < :data:`BALANCE_ALPHA`).
    """
    rows = []
    for name, kind in kinds.items():
        a, b = covariates.loc[list(inside), name], covariates.loc[list(rest), name]
        if kind == "numeric":
            entry = {"selection": _numeric(a), "rest": _numeric(b), "test": "Mann-Whitney U"}
            x, y = (pd.to_numeric(v, errors="coerce").dropna() for v in (a, b))
            p = float(mannwhitneyu(x, y, alternative="two-sided").pvalue) if len(x) and len(y) else None
        else:
            levels = sorted({str(v) for v in pd.concat([a, b]).dropna()})
            table = np.array([[int((v.dropna().astype(str) == level).sum()) for level in levels] for v in (a, b)])
            entry = {"selection": dict(zip(levels, table[0].tolist(), strict=True)),
                     "rest": dict(zip(levels, table[1].tolist(), strict=True))}
            p = None
            if len(levels) == 2:
                entry["test"] = "Fisher exact"
                if table.sum(axis=1).min() > 0:
                    p = float(fisher_exact(table).pvalue)
            else:
                entry["test"] = "chi-square"
                if len(levels) > 2 and table.sum(axis=1).min() > 0:
                    p = float(chi2_contingency(table).pvalue)
        rows.append({"name": name, "kind": kind, **entry, "p": p,
                     "unbalanced": bool(p is not None and p < BALANCE_ALPHA)})
    return rows


def describe_balance(row: dict) -> str:
    """One covariate's balance as a line of text, e.g. ``icv_ml: 1398 +/- 96 vs 1452 +/- 101 (Mann-Whitney U
    p 0.041)`` or ``sex: F 15 / M 1 vs F 3 / M 9 (Fisher exact p 0.00027)``."""
    def numeric(part):
        if part["mean"] is None:
            return "unknown"
        return f"{part['mean']:.4g}" + (f" +/- {part['sd']:.3g}" if part["sd"] is not None else "")

    def counts(part):
        return " / ".join(f"{level} {n}" for level, n in part.items()) or "unknown"

    show = numeric if row["kind"] == "numeric" else counts
    test = f"{row['test']} p {row['p']:.2g}" if row["p"] is not None else f"{row['test']}: not testable"
    return f"{row['name']}: {show(row['selection'])} vs {show(row['rest'])} ({test})"
