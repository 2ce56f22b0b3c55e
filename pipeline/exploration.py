"""Exploration stages: the run's SOM on the score norms (dissertation ch. 6.2) and the hypothesis chain of ch. 6.3
for every non-reference cohort, with their recovery of a known answer when the study has one."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from analysis.exploration.cohort_analysis import HYPOTHESIS_Q, analyse_cohorts, hypothesis_tables, planted_recovery
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


def exploration_stages(ctx: RefreshContext, norms: np.ndarray, spatial: SpatialOutputs) -> Exploration:
    study, ids = ctx.study, ctx.split.ids
    with ctx.stage("som"), threadpool_limits(1):
        record, table, som = fit_cohort_map(norms, ids, study.subjects.loc[ids, "cohort"].to_numpy(),
                                            study.manifest.reference_cohort)
        recovery = prototype_recovery(record["prototypes"], ctx.truth)
        if recovery is not None:
            record["recovery"] = recovery
    with ctx.stage("hypotheses"), threadpool_limits(1):
        analyses = analyse_cohorts(
            study.subjects["cohort"], record["prototypes"], spatial.roi_table, spatial.reference_ids,
            study.behaviour, study.manifest.reference_cohort, random_state=ctx.seed,
        )
        if recovery is not None and recovery["cohort"] in analyses:
            recovery.update(planted_recovery(analyses[recovery["cohort"]], ctx.truth.regions,
                                             ctx.truth.behaviour_pairs, HYPOTHESIS_Q))
        hypotheses, roi_tests, correlations = hypothesis_tables(analyses, HYPOTHESIS_Q)
    return Exploration(record, table, som, hypotheses, roi_tests, correlations)
