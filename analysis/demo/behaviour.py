"""The demo's behaviour table: 35 CBCL/Vineland/DAS-like scores for the clinical cohorts.

Most scores are noise; in the Down-syndrome-like subgroup a few planted scores track the severity of one region
group's planted effect (:data:`PLANTED_BEHAVIOUR`), so the explorer's ROI-behaviour correlations have something to
find.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from analysis.demo.config import DemoConfig
from analysis.demo.plan import CLINICAL_COHORTS, SubjectPlan

PLANTED_BEHAVIOUR = (
    ("das_recall_of_designs", "cerebellum", -1),
    ("vineland_socialization", "hippocampus", -1),
    ("cbcl_withdrawn_depressed", "temporal", +1),
)
"""(score, region group, direction): the score moves with that group's regional effect in the subgroup."""

BEHAVIOUR_SCORES = {
    "cbcl": (
        "anxious_depressed",
        "withdrawn_depressed",
        "somatic_complaints",
        "social_problems",
        "thought_problems",
        "attention_problems",
        "rule_breaking",
        "aggressive_behavior",
        "internalizing",
        "externalizing",
        "total_problems",
        "affective_problems",
        "anxiety_problems",
    ),
    "vineland": (
        "communication",
        "receptive",
        "expressive",
        "written",
        "daily_living",
        "personal",
        "domestic",
        "community",
        "socialization",
        "interpersonal",
        "play_leisure",
        "coping",
        "composite",
    ),
    "das": (
        "gca",
        "verbal",
        "nonverbal_reasoning",
        "spatial",
        "recall_of_designs",
        "word_definitions",
        "pattern_construction",
        "matrices",
        "recall_of_objects",
    ),
}
# CBCL and DAS report T-scores (mean 50, sd 10); Vineland reports standard scores (mean 100, sd 15).
_SCORE_SCALE = {"cbcl": (50.0, 10.0), "das": (50.0, 10.0), "vineland": (100.0, 15.0)}
SCORE_COLUMNS = tuple(f"{family}_{name}" for family, names in BEHAVIOUR_SCORES.items() for name in names)


def behaviour_table(plans: list[SubjectPlan], config: DemoConfig) -> pd.DataFrame:
    """35 behaviour scores for the clinical cohorts; the planted scores follow the subgroup's region severities."""
    rng = np.random.default_rng([config.seed, 3])
    eff = config.effects
    clinical = [p for p in plans if p.cohort in CLINICAL_COHORTS]
    noise = rng.standard_normal((len(clinical), len(SCORE_COLUMNS)))
    z = pd.DataFrame(noise, columns=SCORE_COLUMNS)
    is_ds = np.array([p.cohort == "down_syndrome" for p in clinical])
    loading = eff.behaviour_loading
    for score, group, direction in PLANTED_BEHAVIOUR:
        severity = np.array([p.phenotype.severity.get(group, 0.0) for p in clinical])[is_ds]
        standard = (severity - severity.mean()) / max(severity.std(), 1e-12)
        column = z[score].to_numpy().copy()
        column[is_ds] = direction * loading * standard + np.sqrt(1.0 - loading**2) * column[is_ds]
        z[score] = column
    table = pd.DataFrame({"subject_id": [p.subject_id for p in clinical]})
    for column in SCORE_COLUMNS:
        mean, sd = _SCORE_SCALE[column.split("_", 1)[0]]
        values = np.round(mean + sd * z[column].to_numpy())
        values[rng.random(len(values)) < eff.behaviour_missing_fraction] = np.nan
        table[column] = values
    return table
