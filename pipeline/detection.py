"""Detection stages: the MSMA detectors (GMM, KNN, norm-space flow) on each set of score norms, and their metrics
for every cohort against the held-out reference ``test`` subjects (dissertation table 3.8)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from analysis.detection.detectors import GaussianMixtureDetector, KNNDetector
from analysis.detection.metrics import detection_metrics
from analysis.exploration.recovery import with_planted_groups
from models.norm_flow.flow import FlowDetector
from pipeline.context import RefreshContext


@dataclass
class Detection:
    scores: dict[str, np.ndarray]
    """``<norms>_<detector>`` -> (subjects,) anomaly scores."""
    info: dict[str, dict]
    """Norm set -> each detector's fitted settings (``run.json`` section ``detectors``)."""
    groups: dict[str, list[str]]
    """Evaluation group -> subject ids."""
    metrics: pd.DataFrame
    """One row per (norms, detector, group): :func:`analysis.detection.metrics.detection_metrics`."""


def detection_stages(ctx: RefreshContext, norm_sets: dict[str, np.ndarray]) -> Detection:
    with ctx.stage("detectors"), threadpool_limits(1):
        # Small problems (hundreds of rows x L): one thread each is fastest, and idle OpenMP threads spinning
        # beside training jobs made these fits 100x slower on a busy machine.
        scores, info = _fit_detectors(ctx, norm_sets)
    with ctx.stage("metrics"):
        groups = evaluation_groups(ctx)
        metrics = _detection_table(ctx, scores, groups)
    return Detection(scores, info, groups, metrics)


def _fit_detectors(ctx: RefreshContext, norm_sets: dict[str, np.ndarray]):
    train_rows, seed = ctx.split.rows(ctx.split.train), ctx.seed
    scores: dict[str, np.ndarray] = {}
    info: dict[str, dict] = {}
    for name, norms in norm_sets.items():
        train = norms[train_rows]
        gmm = GaussianMixtureDetector(random_state=seed).fit(train)
        knn = KNNDetector(n_neighbors=min(5, len(train) - 1)).fit(train)
        flow = FlowDetector(max_epochs=ctx.profile.flow_epochs, random_state=seed).fit(train)
        knn_scores = knn.score_samples(norms)
        knn_scores[train_rows] = knn.score_training_samples()
        scores[f"{name}_gmm"] = gmm.score_samples(norms)
        scores[f"{name}_knn"] = knn_scores
        scores[f"{name}_flow"] = flow.score_samples(norms)
        info[name] = {
            "gmm": {"n_components": int(gmm.n_components_), "cv_log_likelihood": gmm.cv_log_likelihood_},
            "knn": {"n_neighbors": int(knn.n_neighbors)},
            "flow": {"n_blocks": int(flow.n_blocks)},
        }
    return scores, info


def evaluation_groups(ctx: RefreshContext) -> dict[str, list[str]]:
    """Subjects to evaluate against the reference test split: each other cohort, plus a planted subgroup (and the
    rest of its cohort) when the study has a known answer."""
    s, ref = ctx.study.subjects, ctx.study.manifest.reference_cohort
    groups = {c: list(s.index[s["cohort"] == c]) for c in sorted(set(s["cohort"])) if c != ref}
    return with_planted_groups(groups, ctx.truth)


def _detection_table(ctx: RefreshContext, scores: dict[str, np.ndarray], groups: dict[str, list[str]]
                     ) -> pd.DataFrame:
    test_rows = ctx.split.rows(ctx.split.test)
    rows = []
    for column, values in scores.items():
        norms, detector = column.split("_", 1)
        for group, members in groups.items():
            if not members or not test_rows:
                continue
            m = detection_metrics(values[test_rows], values[ctx.split.rows(members)])
            rows.append({"norms": norms, "detector": detector, "group": group, **m})
    return pd.DataFrame(rows)
