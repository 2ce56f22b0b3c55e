"""The hypothesis chain of dissertation ch. 6.3 for one cohort, on ROI anomaly scores.

1. The cohort's maximal SOM prototype splits it into prototype members and the rest (:mod:`analysis.exploration.som`).
2. Keep the ROIs whose mean score over the cohort exceeds the reference cohort's 90th percentile
   (:func:`analysis.exploration.roi_stats.atypical_rois`).
3. Mann-Whitney U, prototype members against the rest, on each kept ROI; significant = Bonferroni-corrected
   p below ``alpha`` (:func:`analysis.exploration.roi_stats.prototype_vs_rest`).
4. Spearman correlations of the significant ROIs with every behaviour score over the cohort's members,
   permutation p-values, Benjamini-Hochberg across all pairs and a max-statistic family-wise p
   (:func:`analysis.exploration.correlations.permutation_table`).

:func:`region_step` (steps 2-3) and :func:`behaviour_table` (step 4) take any selection of subjects in place of the
prototype, so the explorer reruns the refresh's own chain live; :func:`analyse_cohort` is the refresh's composition
of the two for the maximal prototype.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from scipy.stats import fisher_exact, mannwhitneyu

from analysis.exploration.correlations import CorrelationResult, PermutationTable, permutation_table
from analysis.exploration.roi_stats import atypical_rois, prototype_vs_rest

CORRECTIONS = {"bonferroni": "p_bonferroni", "bh": "p_bh"}
"""Corrections of the region step and the column of :func:`~analysis.exploration.roi_stats.prototype_vs_rest` each
reads."""

MIN_GROUP = 3
"""Fewer members than this in the selection or in the rest of the cohort: too small to test."""


@dataclass
class RegionStep:
    """Steps 2-3 of the chain for one grouping of a cohort: the selection's members against its other members."""

    kept_rois: list[str]
    """ROIs whose cohort mean exceeds the reference 90th percentile."""
    tests: pd.DataFrame
    """One row per kept ROI: :func:`~analysis.exploration.roi_stats.prototype_vs_rest` (empty without kept ROIs or a
    group)."""
    significant_rois: list[str]
    """Kept ROIs whose corrected p is below ``alpha``, most significant first."""
    correction: str
    alpha: float


@dataclass
class CohortAnalysis:
    cohort: str
    kept_rois: list[str]
    """ROIs whose cohort mean exceeds the reference 90th percentile."""
    roi_tests: pd.DataFrame
    """One row per kept ROI: :func:`~analysis.exploration.roi_stats.prototype_vs_rest` (empty without kept ROIs)."""
    significant_rois: list[str]
    """Kept ROIs with Bonferroni-corrected p < alpha, most significant first."""
    correlations: CorrelationResult | None
    """Significant ROIs x behaviour scores over the cohort's members; None without both."""


def split_cohort(cohort_ids: Sequence, selection_ids: Sequence) -> tuple[list, list]:
    """The cohort's members inside the selection and the others, both in cohort order."""
    chosen = set(selection_ids)
    cohort_ids = list(cohort_ids)
    return [i for i in cohort_ids if i in chosen], [i for i in cohort_ids if i not in chosen]


def region_step(
    roi_scores: pd.DataFrame,
    reference_ids: Sequence,
    cohort_ids: Sequence,
    selection_ids: Sequence,
    *,
    alpha: float = 0.05,
    correction: str = "bonferroni",
) -> RegionStep:
    """Keep the cohort's atypical ROIs, then test the selection's members of the cohort against its other members.

    Parameters
    ----------
    roi_scores : DataFrame (subjects x ROIs), indexed by subject id
        Higher = more anomalous.
    reference_ids, cohort_ids, selection_ids : sequences of subject ids
        The reference subjects that set each ROI's 90th percentile, the cohort's members, and the selected subjects
        (any cohort; only the cohort's members among them are tested).
    correction : {"bonferroni", "bh"}
        Which corrected p-value decides significance (the dissertation uses Bonferroni).
    """
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {sorted(CORRECTIONS)}; received {correction!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1); received {alpha!r}")
    inside, rest = split_cohort(cohort_ids, selection_ids)
    kept = atypical_rois(roi_scores, reference_ids, list(cohort_ids))
    if kept and inside and rest:
        tests = prototype_vs_rest(roi_scores, inside, rest, rois=kept, reference_ids=reference_ids)
        significant = tests.loc[tests[CORRECTIONS[correction]] < alpha, "roi"].tolist()
    else:
        tests, significant = pd.DataFrame(columns=["roi", "p_raw", "p_bonferroni", "p_bh"]), []
    return RegionStep(kept, tests, significant, correction, alpha)


def behaviour_table(
    roi_scores: pd.DataFrame,
    behaviour: pd.DataFrame | None,
    cohort_ids: Sequence,
    rois: Sequence[str],
    *,
    n_permutations: int = 10_000,
    min_complete: int = 10,
    random_state: int = 0,
) -> PermutationTable | None:
    """Step 4: the permutation counts of ``rois`` x every behaviour score over the cohort's members that have a
    behaviour row, from which the correlations of all or any subset of the ROIs are read
    (:meth:`~analysis.exploration.correlations.PermutationTable.result`); None without ROIs, behaviour or
    ``min_complete`` such members."""
    if behaviour is None or not len(rois):
        return None
    members = [i for i in cohort_ids if i in behaviour.index]
    if len(members) < min_complete:
        return None
    return permutation_table(
        roi_scores.loc[members, list(rois)],
        behaviour.loc[members],
        n_permutations=n_permutations,
        min_complete=min_complete,
        random_state=random_state,
    )


@dataclass(frozen=True)
class ChainSettings:
    """The refresh's settings of the chain."""

    alpha: float = 0.05
    """Bonferroni-corrected p below which a kept ROI is significant (step 3)."""
    n_permutations: int = 10_000
    """Permutations of the behaviour correlations (step 4)."""
    min_complete: int = 10
    """Fewest cohort members with behaviour scores, and complete cases per pair, for a correlation."""
    random_state: int = 0
    """Seed of the permutations."""


def analyse_cohort(
    cohort: str,
    roi_scores: pd.DataFrame,
    reference_ids: Sequence,
    cohort_ids: Sequence,
    prototype_ids: Sequence,
    behaviour: pd.DataFrame | None = None,
    settings: ChainSettings = ChainSettings(),
) -> CohortAnalysis:
    """Run the chain for one cohort and its maximal prototype (Bonferroni, as in the dissertation):
    :func:`region_step` with the prototype's members as the selection, then :func:`behaviour_table` of its
    significant ROIs.

    Parameters
    ----------
    roi_scores, reference_ids, cohort_ids
        As for :func:`region_step`.
    prototype_ids : sequence of subject ids
        The cohort's members in its maximal prototype.
    behaviour : DataFrame (subjects x scores), indexed by subject id, optional
    settings : ChainSettings
        Significance level, permutations, complete cases and seed.
    """
    regions = region_step(roi_scores, reference_ids, cohort_ids, prototype_ids, alpha=settings.alpha)
    table = behaviour_table(
        roi_scores, behaviour, cohort_ids, regions.significant_rois, n_permutations=settings.n_permutations,
        min_complete=settings.min_complete, random_state=settings.random_state,
    )
    correlations = None if table is None else table.result()
    return CohortAnalysis(cohort, regions.kept_rois, regions.tests, regions.significant_rois, correlations)


HYPOTHESIS_Q = 0.1
"""FDR level at which a behaviour correlation counts as found (dissertation ch. 6.3)."""


def analyse_cohorts(
    cohorts: pd.Series,
    prototypes: dict[str, dict],
    roi_scores: pd.DataFrame,
    reference_ids: Sequence,
    behaviour: pd.DataFrame | None,
    reference_cohort: str,
    *,
    random_state: int = 0,
) -> dict[str, CohortAnalysis]:
    """:func:`analyse_cohort` for every cohort but the reference one, each with its maximal prototype.

    Parameters
    ----------
    cohorts : Series of cohort names indexed by subject id
    prototypes : cohort -> {"members": [subject ids], ...} (a run record's ``som.prototypes``)
    """
    return {
        cohort: analyse_cohort(
            cohort, roi_scores, reference_ids, list(cohorts.index[cohorts == cohort]), prototype["members"],
            behaviour, ChainSettings(random_state=random_state),
        )
        for cohort, prototype in prototypes.items()
        if cohort != reference_cohort
    }


def hypothesis_tables(analyses: dict[str, CohortAnalysis], q: float = HYPOTHESIS_Q):
    """What a run stores of the chains: the record's ``hypotheses`` section, and the ROI tests and correlations
    of every cohort as two tables with a ``cohort`` column (``roi_tests.parquet``, ``correlations.parquet``)."""
    record, tests, tables = {}, [], []
    for cohort, result in analyses.items():
        tests.append(result.roi_tests.assign(cohort=cohort))
        entry = {"kept_rois": len(result.kept_rois), "significant_rois": result.significant_rois, "correlations": None}
        if result.correlations is not None:
            table = result.correlations.table
            tables.append(table.assign(cohort=cohort))
            entry["correlations"] = {
                "pairs": int(len(table)),
                "testable": int(table["testable"].sum()),
                "n_permutations": result.correlations.n_permutations,
                "p_floor": result.correlations.p_floor,
                "q": q,
                "bh_significant": int((table["p_bh"] < q).sum()),
            }
        record[cohort] = entry
    roi_tests = pd.concat(tests, ignore_index=True) if tests else pd.DataFrame()
    correlations = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    return record, roi_tests, correlations


def selection_summary(subjects: pd.DataFrame, selection_ids: Sequence, cohort: str) -> dict:
    """Who is in a selection: its size, its members of ``cohort`` against the cohort's other members by sex and
    age (the dissertation's "12 of the 16 are female"), and warnings when a group is too small to test.

    Parameters
    ----------
    subjects : DataFrame indexed by subject id, with columns cohort, sex ("F", "M" or missing), age (years)
    """
    cohort_ids = subjects.index[subjects["cohort"] == cohort]
    inside, rest = split_cohort(cohort_ids, selection_ids)
    selected = subjects.index.isin(list(selection_ids))
    groups = {"selection": inside, "rest": rest}
    summary = {
        "cohort": cohort,
        "selected": int(selected.sum()),
        "selected_per_cohort": {str(k): int(v) for k, v in subjects.loc[selected, "cohort"].value_counts().items()},
    }
    for name, ids in groups.items():
        part = subjects.loc[ids]
        ages = part["age"].dropna().astype(float)
        summary[name] = {
            "n": len(ids),
            "female": int((part["sex"] == "F").sum()),
            "male": int((part["sex"] == "M").sum()),
            "age_mean": float(ages.mean()) if len(ages) else None,
            "age_sd": float(ages.std(ddof=1)) if len(ages) > 1 else None,
            "age_known": int(len(ages)),
        }
    a, b = summary["selection"], summary["rest"]
    table = [[a["female"], a["male"]], [b["female"], b["male"]]]
    summary["sex_fisher_p"] = float(fisher_exact(table).pvalue) if min(map(sum, table)) > 0 else None
    ages_in = subjects.loc[inside, "age"].dropna().astype(float)
    ages_rest = subjects.loc[rest, "age"].dropna().astype(float)
    summary["age_mannwhitney_p"] = (
        float(mannwhitneyu(ages_in, ages_rest).pvalue) if len(ages_in) and len(ages_rest) else None
    )
    summary["warnings"] = [
        f"{label} holds {n} member{'s' if n != 1 else ''} of {cohort}: too small to test (fewer than {MIN_GROUP})"
        for label, n in (("the selection", len(inside)), ("the rest of the cohort", len(rest)))
        if n < MIN_GROUP
    ]
    return summary


def planted_recovery(analysis: CohortAnalysis, planted_regions: dict[str, list[str]],
                     planted_pairs: list[dict], q: float = 0.1) -> dict:
    """How well one cohort's analysis finds what the demo planted: regions among the significant ROIs, and
    behaviour pairs among the BH-significant correlations (q < ``q``) with the planted sign."""
    planted = {r for regions in planted_regions.values() for r in regions}
    found = [r for r in analysis.significant_rois if r in planted]
    false = [r for r in analysis.significant_rois if r not in planted]
    regions = {
        "planted": len(planted),
        "significant": len(analysis.significant_rois),
        "recall": len(found) / len(planted) if planted else None,
        "false_discovery_proportion": len(false) / len(analysis.significant_rois) if analysis.significant_rois
        else None,
        "false_discoveries": false,
    }
    behaviour = {"planted_pairs": len(planted_pairs), "found": [], "false_discoveries": 0, "significant_pairs": 0}
    if analysis.correlations is not None:
        table = analysis.correlations.table
        hits = table[table["testable"] & (table["p_bh"] < q)]
        behaviour["significant_pairs"] = int(len(hits))
        matched = pd.Series(False, index=hits.index)
        for pair in planted_pairs:
            regions_of_pair = set(pair["regions"])
            sign = 1 if float(pair["direction"]) > 0 else -1  # the score's change with the regional severity
            rows = hits[(hits["behaviour"] == pair["score"]) & hits["roi"].isin(regions_of_pair)
                        & (sign * hits["rho"] > 0)]
            matched[rows.index] = True
            if len(rows):
                behaviour["found"].append(
                    {"score": pair["score"], "region_group": pair["region_group"], "rois": rows["roi"].tolist()}
                )
        behaviour["false_discoveries"] = int((~matched).sum())
    behaviour["recall"] = len(behaviour["found"]) / len(planted_pairs) if planted_pairs else None
    return {"regions": regions, "behaviour": behaviour}
