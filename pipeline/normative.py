"""The normative stage: each ROI score as its deviation from what the reference cohort predicts for the subject's
covariates (:mod:`analysis.exploration.normative`), with the fitted model recorded beside the adjusted table."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from analysis.exploration.normative import NormativeError, NormativeModel
from analysis.runs import layout
from analysis.runs.store import write_table
from pipeline.context import RefreshContext
from pipeline.spatial import SpatialOutputs


@dataclass
class Normative:
    record: dict | None
    """``run.json`` section ``normative`` (None when the model could not be fitted)."""
    adjusted: pd.DataFrame | None
    """(subjects, ROIs) z-scores against the normative prediction, indexed by subject id."""
    warnings: list[str]


def normative_stage(ctx: RefreshContext, spatial: SpatialOutputs) -> Normative:
    """Fit the normative model on the reference subjects that set the percentiles (those the score models did not
    learn from) and write ``roi_adjusted.parquet`` and ``normative_model.parquet``.

    Without covariates there is nothing to adjust for; when the model cannot be fitted (too few reference subjects
    outside the training split for its parameters), the ROI scores stay raw and the run says why."""
    study = ctx.study
    if not study.covariates:
        return Normative(None, None, [])
    kinds = {c.name: c.kind for c in study.covariates}
    scores = spatial.roi_table
    covariates = study.covariate_table.loc[list(scores.index)]
    with ctx.stage("normative"):
        try:
            model = NormativeModel(kinds, random_state=ctx.seed).fit(scores, covariates, spatial.reference_ids)
            adjusted = model.deviations(scores, covariates)
        except NormativeError as exc:
            return Normative(None, None, [
                f"{study.manifest.subjects.table}: subjects.covariates ({', '.join(kinds)}): the normative model "
                f"cannot be fitted ({exc}); the chain ran on raw ROI scores"])
        write_table(ctx.staging / layout.ROI_ADJUSTED.name,
                    pd.concat([ctx.subject_table(), adjusted.reset_index(drop=True)], axis=1))
        write_table(ctx.staging / layout.NORMATIVE_MODEL.name, model.coefficient_table())
    record = {
        **model.record(),
        "table": layout.ROI_ADJUSTED.name,
        "coefficients": layout.NORMATIVE_MODEL.name,
        "fit_on": "the reference subjects that set the ROI percentiles (outside the training split)",
        "meaning": "z = (ROI score - prediction) / predictive SD; higher = more anomalous than the reference "
                   "predicts for the subject's covariates",
    }
    return Normative(record, adjusted, _fit_warnings(record))


def _fit_warnings(record: dict) -> list[str]:
    """A note when the covariates predict held-out reference subjects no better than each ROI's mean."""
    if record["design"] != "mean":
        return []
    names = ", ".join(c["name"] for c in record["covariates"])
    r2 = record["held_out"]["r2"].get("linear")
    return [f"the covariates ({names}) do not predict the ROI scores of held-out reference subjects (held-out R^2 of "
            f"the linear model {r2:.3f}): the adjusted scores are the raw ones standardised per ROI, and the chain's "
            f"results are those of the raw scores"]
