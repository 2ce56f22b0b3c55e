"""Exploration stages: the run's SOM on the score norms (dissertation ch. 6.2) and the hypothesis chain of ch. 6.3
for every non-reference cohort, with their recovery of a known answer when the study has one."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from analysis.exploration.balance import covariate_balance
from analysis.exploration.cohort_analysis import (
    HYPOTHESIS_Q,
    ChainSettings,
    analyse_cohorts,
    hypothesis_tables,
    planted_recovery,
    split_cohort,
)
from analysis.exploration.power import detectable_effect
from analysis.exploration.prototypes import CHAIN_DEFINITION, add_subgroups, chain_selections
from analysis.exploration.recovery import prototype_recovery
from analysis.exploration.som import SelfOrganizingMap, fit_cohort_map
from pipeline.context import RefreshContext
from pipeline.spatial import SpatialOutputs


@dataclass
class Exploration:
    som_record: dict
    """``run.json`` section ``som``."""
    som_table: pd.DataFrame
    """Per subject: its best-matching unit."""
    som: SelfOrganizingMap
    hypotheses: dict
    """``run.json`` section ``hypotheses``."""
    roi_tests: pd.DataFrame
    correlations: pd.DataFrame


def power_record(n_selected: int, n_rest: int, n_tests: int) -> dict | None:
    """What the chain's Bonferroni test can see for the prototype against the rest (None without a test)."""
    if not (n_selected and n_rest and n_tests):
        return None
    effect = detectable_effect(n_selected, n_rest, n_tests, correction="bonferroni")
    return {"n_selected": n_selected, "n_rest": n_rest, "n_tests": n_tests, "correction": "bonferroni",
            "power": effect.power, "rank_biserial": effect.rank_biserial, "shift_sd": effect.shift_sd,
            "sentence": effect.sentence}


def exploration_stages(ctx: RefreshContext, norms: np.ndarray, spatial: SpatialOutputs,
                       adjusted: pd.DataFrame | None = None) -> Exploration:
    """The SOM and the chain; the chain reads the covariate-adjusted ROI scores when the study has covariates
    (``adjusted``), the raw ones otherwise."""
    study, ids = ctx.study, ctx.split.ids
    rois = spatial.roi_table if adjusted is None else adjusted
    with ctx.stage("som"), threadpool_limits(1):
        labels = study.subjects.loc[ids, "cohort"].to_numpy()
        record, table, som = fit_cohort_map(norms, ids, labels, study.manifest.reference_cohort)
        add_subgroups(record, som, labels, ids, study.manifest.reference_cohort)
        selections = chain_selections(record["prototypes"])
        # The figure the report compares with is the maximal prototype's; the chain's own prototype beside it.
        recovery = prototype_recovery(record["prototypes"], ctx.truth)
        if recovery is not None:
            recovery["subgroup"] = prototype_recovery(selections, ctx.truth)
            recovery["subgroup"]["definition"] = CHAIN_DEFINITION
            record["recovery"] = recovery
    with ctx.stage("hypotheses"), threadpool_limits(1):
        analyses = analyse_cohorts(
            study.subjects["cohort"], selections, rois, spatial.reference_ids,
            study.behaviour, study.manifest.reference_cohort, random_state=ctx.seed,
        )
        if recovery is not None and recovery["cohort"] in analyses:
            analysis = analyses[recovery["cohort"]]
            recovery.update(planted_recovery(analysis, ctx.truth.regions, ctx.truth.behaviour_pairs, HYPOTHESIS_Q))
            # The same region step read with BH instead of Bonferroni (the explorer's other correction).
            tests = analysis.roi_tests
            with_bh = dataclasses.replace(analysis, significant_rois=tests.loc[
                tests["p_bh"] < ChainSettings().alpha, "roi"].tolist() if len(tests) else [])
            recovery["regions_bh"] = planted_recovery(with_bh, ctx.truth.regions, [], HYPOTHESIS_Q)["regions"]
        hypotheses, roi_tests, correlations = hypothesis_tables(analyses, HYPOTHESIS_Q)
        cohorts = study.subjects["cohort"]
        kinds = {c.name: c.kind for c in study.covariates}
        for cohort, entry in hypotheses.items():
            entry["roi_scores"] = "raw" if adjusted is None else "adjusted"
            inside, rest = split_cohort(cohorts.index[cohorts == cohort], selections[cohort]["members"])
            entry["balance"] = covariate_balance(study.covariate_table, kinds, inside, rest)
            entry["power"] = power_record(len(inside), len(rest), entry["kept_rois"])
    return Exploration(record, table, som, hypotheses, roi_tests, correlations)
