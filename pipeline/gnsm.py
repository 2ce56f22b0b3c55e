"""The GNSM stage: when the manifest has a ``gnsm:`` block, GNSM (dissertation ch. 4) learns the subjects' table of
the block's columns, with the logarithm of each subject's MSMA score norms as continuous columns
(``with_score_norms``), and every subject's GNSM score norms become the norm set ``gnsm`` that the MSMA
detectors score like the others.

The network is trained on the reference cohort's ``train`` subjects and stopped early on its ``val`` subjects (the
refresh's split), with the tabular profile that matches the refresh's (``fast`` -> ``fast``, else ``default``); it
is reused from ``<output_dir>/models/`` when its key (:func:`pipeline.keys.gnsm_key`: the block, the profile, the
encoded training rows and their subjects) matches, so a changed block, changed norms or other subjects train anew.
Missing values are imputed from the train subjects (:func:`analysis.study.gnsm_columns.impute`).
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.study.gnsm_block import GNSMSpec
from analysis.study.gnsm_columns import impute
from analysis.tabular.encoding import EncodedTable, fit_encoder
from analysis.tabular.schema import TabularError, TabularSchema, level_text
from models.checkpoint import CheckpointError, load_gnsm_model, save_gnsm_model
from models.training import TrainingCheckpoint
from pipeline import keys
from pipeline.context import RefreshContext, RefreshError
from pipeline.score_model import norm_columns
from pipeline.tabular import FitOptions, TabularProfile, clean_rows, get_profile, norms_of, train_network

ID_COLUMN = "subject_id"


@dataclass
class GNSMOutputs:
    norms: np.ndarray
    """(subjects, L) every subject's GNSM score norms, in the run's subject order."""
    checkpoint: Path
    """The network (and its encoder and schema), in ``<output_dir>/models/``."""
    record: dict
    """``run.json`` section ``gnsm``."""


def tabular_profile(ctx: RefreshContext) -> TabularProfile:
    """The tabular profile of a refresh profile: ``fast`` for ``fast``, ``default`` otherwise."""
    name = "fast" if ctx.profile.name == "fast" else "default"
    return get_profile(FitOptions(profile=name, seed=ctx.seed, progress=ctx.progress))


def gnsm_stage(ctx: RefreshContext, msma_norms: np.ndarray) -> GNSMOutputs | None:
    """Fit (or reuse) GNSM on the subjects' table and score every subject; None without a ``gnsm:`` block."""
    spec = ctx.study.manifest.gnsm
    if spec is None:
        return None
    with ctx.stage("gnsm"):
        table, imputed = subject_table(ctx, spec, msma_norms)
        schema = _schema(spec, table, msma_norms.shape[1])
        source = f"{ctx.study.manifest.subjects.table} (gnsm columns)"
        try:
            encoder = fit_encoder(table.loc[ctx.split.rows(ctx.split.train)], schema, source)
            encoded = encoder.transform(table, source)
        except TabularError as exc:
            raise RefreshError(f"gnsm: {exc}") from exc
        profile = tabular_profile(ctx)
        train, val = encoded.subset(ctx.split.rows(ctx.split.train)), encoded.subset(ctx.split.rows(ctx.split.val))
        settings = {"block": spec.as_dict(), "profile": profile.name, "net": profile.net.as_dict(),
                    "train": profile.train.as_dict(), "scales": profile.scales.as_dict(), "read_out": profile.read_out,
                    "encoder": encoder.as_dict()}
        key = keys.gnsm_key(settings, _rows_digest(train, val), ctx.split.train, ctx.split.val)
        checkpoint = ctx.store.models_dir / f"gnsm-{key}.pt"
        net, training = _train_or_reuse(ctx, (train, val), profile, checkpoint,
                                        {"key": key, "encoder": encoder.as_dict(), "schema": schema.as_dict()})
        norms = norms_of(net, encoded, profile.read_out)
    record = {
        "columns": dict(spec.columns),
        "with_score_norms": spec.with_score_norms,
        "categorical": list(encoded.categorical_names),
        "continuous": list(encoded.continuous_names),
        "levels": {k: list(v) for k, v in encoder.levels.items()},
        "imputed": imputed,
        "fit_on": {"train": len(ctx.split.train), "val": len(ctx.split.val)},
        "profile": profile.name,
        "n_scales": int(norms.shape[1]),
        "read_out": profile.read_out,
        "key": key,
        "checkpoint": checkpoint.name,
        **training,
    }
    return GNSMOutputs(norms, checkpoint, record)


def subject_table(ctx: RefreshContext, spec: GNSMSpec, msma_norms: np.ndarray) -> tuple[pd.DataFrame, dict]:
    """The table GNSM learns, one row per subject in the run's order: the id, the block's columns with missing
    values imputed from the train subjects, and (``with_score_norms``) the log score norms; and how many values of
    each column were imputed."""
    columns = ctx.study.gnsm_table.loc[ctx.split.ids, list(spec.columns)]
    filled, imputed = impute(columns, dict(spec.columns), ctx.split.train)
    table = pd.concat([pd.DataFrame({ID_COLUMN: ctx.split.ids}, index=filled.index), filled], axis=1)
    if spec.with_score_norms:
        # The detectors read the norms on a log scale too: across subjects they spread over orders of magnitude.
        logs = pd.DataFrame(np.log(msma_norms), index=filled.index, columns=norm_columns(msma_norms.shape[1]))
        table = pd.concat([table, logs], axis=1)
    return table.reset_index(drop=True), {k: v for k, v in imputed.items() if v}


def _schema(spec: GNSMSpec, table: pd.DataFrame, n_scales: int) -> TabularSchema:
    """Every level a subject holds is declared, so a level the train subjects lack is encoded (and scored as
    unseen by the network) instead of refused."""
    columns: dict[str, list | None] = {
        name: sorted({level_text(v) for v in table[name]}) if kind == "categorical" else None
        for name, kind in spec.columns.items()
    }
    if spec.with_score_norms:
        columns.update(dict.fromkeys(norm_columns(n_scales)))
    return TabularSchema.from_columns(columns, id_column=ID_COLUMN)


def _rows_digest(train: EncodedTable, val: EncodedTable) -> str:
    """SHA-256 of the network's training and validation inputs, as encoded."""
    digest = hashlib.sha256()
    for rows in (train, val):
        digest.update(clean_rows(rows).numpy().tobytes())
        digest.update(json.dumps(list(rows.ids)).encode())
    return digest.hexdigest()


def _train_or_reuse(ctx: RefreshContext, data: tuple[EncodedTable, EncodedTable], profile: TabularProfile,
                    checkpoint: Path, metadata: dict):
    """The network saved at ``checkpoint`` when it loads, else a new one trained and saved there; and the
    ``run.json`` fields of its training."""
    if checkpoint.is_file():
        try:
            net, info = load_gnsm_model(checkpoint)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; training a new GNSM network", stacklevel=2)
        else:
            return net, {**info["metadata"]["training"], "reused": True}
    start = time.perf_counter()
    state = TrainingCheckpoint(checkpoint.with_suffix(".training.pt"), {"gnsm_key": metadata["key"]})
    result = train_network(*data, profile, state, ctx.progress)
    training = {"steps": result.steps, "stopped": result.stopped, "best_val_loss": result.best_val_loss,
                "seconds": round(time.perf_counter() - start, 2), "resumed_from_step": result.resumed_from_step,
                "network": profile.net.as_dict(), "train_config": profile.train.as_dict()}
    save_gnsm_model(checkpoint, result.model, metadata={**metadata, "training": training})
    checkpoint.with_suffix(".training.pt").unlink(missing_ok=True)
    return result.model, {**training, "reused": False}
