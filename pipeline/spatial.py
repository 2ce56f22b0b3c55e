"""Spatial-MSMA stages: patch norms -> conditional flow (trained or reused) -> heatmaps (stack + NIfTI) -> ROI
scores and their reference percentiles; then the lesion evaluation when the manifest names lesion masks."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.exploration.roi_stats import percentile_of_reference, percentile_reference, roi_scores
from analysis.runs import layout
from analysis.runs.store import write_table
from models.checkpoint import CheckpointError, load_spatial_model, save_spatial_model
from models.score_model.network import count_parameters
from models.spatial.flow import SpatialFlowConfig, train_spatial_flow
from models.spatial.heatmap import HEATMAP_MAPPING, compute_heatmaps, write_heatmaps
from models.spatial.patch_norms import patch_norms
from models.spatial.torch_model import SpatialMSMA
from pipeline import keys
from pipeline.context import RefreshContext
from pipeline.score_model import ScoreModel, link_or_copy

PATCH_NORMS_FILE = ".patch_norms.npy"
"""Scratch memory map of the patch norms in the staging folder; deleted before the run is published."""


@dataclass
class SpatialInputs:
    """What the Spatial-MSMA flows and the lesion baselines are computed from."""

    config: SpatialFlowConfig
    images: np.ndarray
    """(subjects, D, H, W) normalised volumes."""
    voxel_scores: np.ndarray
    """(subjects, L, brain voxels) memory map of sigma_i * s(x, sigma_i)."""
    patch_norms: np.ndarray
    """(subjects, brain voxels, L) memory map of the patch score norms."""
    key: str
    """:func:`pipeline.keys.spatial_key` of the score model."""


@dataclass
class SpatialOutputs:
    record: dict
    """The run record's ``spatial`` section."""
    roi_table: pd.DataFrame
    """(subjects, ROIs) ROI scores indexed by subject id."""
    reference_ids: list[str]
    """The reference subjects of the ROI percentiles."""
    inputs: SpatialInputs
    flow: SpatialMSMA
    """The trained conditional flow."""
    heatmaps: np.ndarray
    """(subjects, brain voxels) heatmap values inside the brain mask."""

    def release(self, staging: Path) -> None:
        """Drop the references to the scratch memory maps (so they close) and delete the patch norms before the run is
        published."""
        self.inputs = self.heatmaps = self.flow = None
        (staging / PATCH_NORMS_FILE).unlink()


def spatial_stages(ctx: RefreshContext, images: np.ndarray, score: ScoreModel) -> SpatialOutputs:
    """Patch norms, the flow, the heatmaps and the ROI scores, written into the staging folder. The outputs keep
    the inputs, the flow and the heatmaps for the lesion evaluation; :meth:`SpatialOutputs.release` frees them."""
    study, split, staging = ctx.study, ctx.split, ctx.staging
    mask = study.brain_mask
    config = dataclasses.replace(ctx.profile.spatial, patch_size=study.manifest.model.patch_size, seed=ctx.seed)
    with ctx.stage("patch_norms"):
        voxel_scores = np.load(staging / layout.VOXEL_SCORES.name, mmap_mode="r")
        norms = np.lib.format.open_memmap(
            staging / PATCH_NORMS_FILE, mode="w+", dtype=np.float32,
            shape=(len(split.ids), int(mask.sum()), voxel_scores.shape[1]),
        )
        patch_norms(voxel_scores, mask, config.patch_size, progress=ctx.progress, out=norms)
    inputs = SpatialInputs(config, images, voxel_scores, norms,
                           keys.spatial_key(score.key, score.data_digest, [float(v) for v in score.sigmas]))
    with ctx.stage("spatial_flow"):
        flow, flow_record = flow_or_reuse(ctx, inputs, config)
        link_or_copy(Path(flow_record["path"]), staging / layout.SPATIAL_FLOW.name)
    with ctx.stage("heatmaps"):
        heatmaps = compute_heatmaps(flow, images, norms, range(len(split.ids)), progress=ctx.progress)
        scores, reference_ids = _write_heatmaps_and_rois(ctx, heatmaps)
    record = _spatial_record(config, flow_record, scores, reference_ids, held_out=set(reference_ids).isdisjoint(
        split.train))
    return SpatialOutputs(record, scores, reference_ids, inputs, flow, heatmaps)


def _write_heatmaps_and_rois(ctx: RefreshContext, heatmaps: np.ndarray) -> tuple[pd.DataFrame, list[str]]:
    """The heatmap stack and NIfTI files, the ROI scores and their percentiles among the reference subjects the
    flow did not learn from."""
    study, split, staging = ctx.study, ctx.split, ctx.staging
    ids, mask = split.ids, study.brain_mask
    files = write_heatmaps(staging, heatmaps, mask, study.grid, ids, progress=ctx.progress)
    scores = roi_scores(heatmaps, study.atlas_labels[mask], study.label_names, ids)
    cohorts = study.subjects.loc[ids, "cohort"].tolist()
    reference_ids = percentile_reference(ids, cohorts, split.train, study.manifest.reference_cohort)
    percentiles = percentile_of_reference(scores, reference_ids)
    frame = ctx.subject_table()
    frame["heatmap_file"] = [f"{layout.HEATMAP_IMAGES.name}{name}" for name in files]
    write_table(staging / layout.HEATMAP_FILES.name, frame)
    for file, table in ((layout.ROI_SCORES, scores), (layout.ROI_PERCENTILES, percentiles)):
        write_table(staging / file.name, pd.concat([ctx.subject_table(), table.reset_index(drop=True)], axis=1))
    return scores, reference_ids


def _spatial_record(config: SpatialFlowConfig, flow_record: dict, scores: pd.DataFrame, reference_ids: list[str],
                    held_out: bool) -> dict:
    return {
        "config": config.as_dict(),
        "flow": {k: v for k, v in flow_record.items() if k != "path"},
        "heatmaps": {
            "stack": layout.HEATMAP_STACK.name,
            "files": layout.HEATMAP_FILES.name,
            "shape": "(subjects in score_norms order, D, H, W), float32, NaN outside the brain mask",
            "meaning": "negative log-likelihood of the voxel's patch score norms under the conditional flow, "
            + ("minus the reference training subjects' mean NLL at the voxel, over their standard deviation"
               if config.calibrate else "in nats"),
            "voxel_mapping": HEATMAP_MAPPING,
        },
        "roi_scores": {
            "table": layout.ROI_SCORES.name,
            "percentiles": layout.ROI_PERCENTILES.name,
            "rois": list(scores.columns),
            "reference_subjects": len(reference_ids),
            "reference": "reference-cohort subjects outside the training split (val and test)" if held_out
            else "reference cohort",
        },
    }


def flow_or_reuse(ctx: RefreshContext, inputs: SpatialInputs, config: SpatialFlowConfig):
    """The flow trained with ``config`` on ``inputs``, from ``<output_dir>/models/`` when one was trained on the
    same passes with the same settings, else a new one (saved there). Returns the flow and its record."""
    split, mask = ctx.split, ctx.study.brain_mask
    key = keys.flow_key(inputs.key, config.as_dict(), split.train, split.val)
    name = "spatial_flow" if config.conditional else "unconditional_flow"
    path = ctx.store.models_dir / f"{name}-{key}.pt"
    if path.is_file():
        try:
            model, info = load_spatial_model(path)
        except CheckpointError as exc:
            warnings.warn(f"{exc}; training a new Spatial-MSMA flow", stacklevel=2)
        else:
            return model, {**info["metadata"], "key": key, "reused": True, "path": str(path)}
    result = train_spatial_flow(config, inputs.images, inputs.patch_norms, mask, split.rows(split.train),
                                split.rows(split.val), progress=ctx.progress)
    metadata = {
        "steps": result.steps,
        "best_step": result.best_step,
        "stopped": result.stopped,
        "best_val_nll": result.best_val_nll,
        "train_seconds": round(result.seconds, 2),
        "history": result.history,
        "parameters": count_parameters(result.model),
    }
    save_spatial_model(path, result.model, metadata=metadata)
    return result.model, {**metadata, "key": key, "reused": False, "path": str(path)}
