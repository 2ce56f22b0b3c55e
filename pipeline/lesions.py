"""The lesion stage: every method's maps of the subjects with lesion masks, through the same protocol (ch. 5.4).

The methods (:data:`analysis.methods.LESION_METHODS`) are Spatial-MSMA's two voxel mappings and the simple baselines
of :mod:`models.spatial.heatmap`, among them an unconditional flow trained like Spatial-MSMA's but without position
or image context.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from analysis.lesions import LESION_PROTOCOL, evaluate_study_lesions
from analysis.methods import LESION_METHODS, descriptions
from analysis.runs import layout
from analysis.runs.store import write_table
from models.spatial.heatmap import baseline_maps, compute_heatmaps
from pipeline.context import RefreshContext
from pipeline.spatial import SpatialOutputs, flow_or_reuse


def lesion_stage(ctx: RefreshContext, spatial: SpatialOutputs) -> dict:
    """Writes the lesion maps and the per-subject table into the staging folder; returns the run record's
    ``spatial.lesions`` section."""
    study, split, inputs = ctx.study, ctx.split, spatial.inputs
    unconditional_config = dataclasses.replace(inputs.config, conditional=False, standardisation="global",
                                               calibrate=False)
    unconditional, unconditional_record = flow_or_reuse(ctx, inputs, unconditional_config)
    lesions = study.lesions
    rows = split.rows(list(lesions.index))
    maps = {
        "spatial_msma": spatial.heatmaps[rows],
        "spatial_msma_min": compute_heatmaps(spatial.flow, inputs.images, inputs.patch_norms, rows, mapping="min"),
        **baseline_maps(rows, inputs.images, study.brain_mask, split.rows(split.train), inputs.voxel_scores,
                        inputs.patch_norms, unconditional, inputs.config.patch_size),
    }
    np.save(ctx.staging / layout.LESION_MAPS.name, np.stack([maps[m.key] for m in LESION_METHODS], axis=1))
    evaluation = evaluate_study_lesions(study, maps, LESION_PROTOCOL, n_jobs=min(2, os.cpu_count() or 1),
                                        progress=ctx.progress)
    write_table(ctx.staging / layout.LESION_EVALUATION.name, evaluation.per_subject)
    return {
        "methods": descriptions(LESION_METHODS),
        "maps": {
            "file": layout.LESION_MAPS.name,
            "order": [m.key for m in LESION_METHODS],
            "shape": "(subjects in 'subjects' order, methods in 'order', brain voxels)",
        },
        "subjects": list(lesions.index),
        "protocol": LESION_PROTOCOL.describe(),
        "failed": evaluation.failed.to_dict("records"),
        "per_subject": layout.LESION_EVALUATION.name,
        "summary": evaluation.summary.to_dict(orient="records"),
        "unconditional_flow": {k: v for k, v in unconditional_record.items() if k != "path"},
    }
