"""The hypothesis chain of dissertation ch. 6.3 for one cohort, on ROI anomaly scores.

1. The cohort's maximal SOM prototype splits it into prototype members and the rest (:mod:`analysis.som`).
2. Keep the ROIs whose mean score over the cohort exceeds the reference cohort's 90th percentile
   (:func:`analysis.roi_stats.atypical_rois`).
3. Mann-Whitney U, prototype members against the rest, on each kept ROI; significant = Bonferroni-corrected
   p below ``alpha`` (:func:`analysis.roi_stats.prototype_vs_rest`).
4. Spearman correlations of the significant ROIs with every behaviour score over the cohort's members,
   permutation p-values, Benjamini-Hochberg across all pairs and a max-statistic family-wise p
   (:func:`analysis.correlations.spearman_permutation`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from analysis.correlations import CorrelationResult, spearman_permutation
from analysis.roi_stats import atypical_rois, prototype_vs_rest


@dataclass
class CohortAnalysis:
    cohort: str
    kept_rois: list[str]
    """ROIs whose cohort mean exceeds the reference 90th percentile."""
    roi_tests: pd.DataFrame
    """One row per kept ROI: :func:`~analysis.roi_stats.prototype_vs_rest` (empty without kept ROIs)."""
    significant_rois: list[str]
    """Kept ROIs with Bonferroni-corrected p < alpha, most significant first."""
    correlations: CorrelationResult | None
    """Significant ROIs x behaviour scores over the cohort's members; None without both."""


def analyse_cohort(
    cohort: str,
    roi_scores: pd.DataFrame,
    reference_ids: Sequence,
    cohort_ids: Sequence,
    prototype_ids: Sequence,
    behaviour: pd.DataFrame | None = None,
    *,
    alpha: float = 0.05,
    n_permutations: int = 10_000,
    min_complete: int = 10,
    random_state: int = 0,
) -> CohortAnalysis:
    """Run the chain for one cohort.

    Parameters
    ----------
    roi_scores : DataFrame (subjects x ROIs), indexed by subject id
        Higher = more anomalous.
    reference_ids, cohort_ids, prototype_ids : sequences of subject ids
        The reference subjects that set each ROI's 90th percentile, the cohort's members, and the members in its
        maximal prototype.
    behaviour : DataFrame (subjects x scores), indexed by subject id, optional
    """
    cohort_ids = list(cohort_ids)
    members = set(cohort_ids)
    prototype = [i for i in prototype_ids if i in members]
    in_prototype = set(prototype)
    rest = [i for i in cohort_ids if i not in in_prototype]
    kept = atypical_rois(roi_scores, reference_ids, cohort_ids)
    if kept and prototype and rest:
        tests = prototype_vs_rest(roi_scores, prototype, rest, rois=kept, reference_ids=reference_ids)
        significant = tests.loc[tests["p_bonferroni"] < alpha, "roi"].tolist()
    else:
        tests, significant = pd.DataFrame(columns=["roi", "p_raw", "p_bonferroni", "p_bh"]), []
    correlations = None
    if behaviour is not None and significant:
        members = [i for i in cohort_ids if i in behaviour.index]
        if len(members) >= min_complete:
            correlations = spearman_permutation(
                roi_scores.loc[members, significant],
                behaviour.loc[members],
                n_permutations=n_permutations,
                min_complete=min_complete,
                random_state=random_state,
            )
    return CohortAnalysis(cohort, kept, tests, significant, correlations)


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
