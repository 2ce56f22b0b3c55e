"""The run format: every file of a published run and every section of its ``run.json``, as typed records.

The refresh (``pipeline/``) writes runs with these names and the explorer's reader (:mod:`analysis.runs.reader`)
opens them with the same names, so the two cannot drift apart. The README's table of outputs is generated from
:data:`RUN_FILES` and :data:`RUN_SECTIONS` (``tests/msma/test_docs.py`` fails when it is stale); docs/architecture.md
describes the format in prose.

A run folder ``<output_dir>/<run_id>/`` holds the files of :data:`RUN_FILES`; beside the runs, the store keeps
``latest`` (the published run's id) and ``models/`` (checkpoints shared between runs, see :mod:`analysis.runs.store`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class RunFile:
    """One file (or folder) of a run.

    Attributes
    ----------
    name : str
        Its name inside the run folder; ``<cohort>`` in it stands for a cohort name (see :func:`sweep_file`).
    what : str
        What it holds, for a reader of the run (the README's outputs table).
    explorer : bool
        Whether the explorer needs it (:func:`analysis.runs.reader.open_run` refuses a run without it).
    """

    name: str
    what: str
    explorer: bool = False


RECORD = RunFile("run.json", "provenance and results: settings, versions, seeds, timings, every metric, the SOM's "
                 "prototypes and the hypothesis counts (sections: docs/architecture.md)", explorer=True)
SCORE_NORMS = RunFile("score_norms.parquet", "per subject: id, cohort, split, role and the multiscale score norms",
                      explorer=True)
LOWRANK_NORMS = RunFile("lowrank_norms.parquet", "the same norms from the low-rank Gaussian's score alone (baseline)")
GAUSSIAN_NORMS = RunFile("gaussian_norms.parquet", "the same norms from a per-voxel Gaussian's score (baseline)")
GNSM_NORMS = RunFile("gnsm_norms.parquet", "GNSM's score norms of each subject's row of the manifest's gnsm: "
                    "columns (and log score norms), one per GNSM noise scale (with a gnsm: block)")
VOXEL_SCORES = RunFile("voxel_scores.npy", "sigma_i * s(x, sigma_i) per subject, scale and brain voxel (float16), "
                       "the input of Spatial-MSMA")
DETECTOR_SCORES = RunFile("detector_scores.parquet", "per subject: every MSMA detector's anomaly score",
                          explorer=True)
DETECTION_METRICS = RunFile("detection_metrics.parquet", "every detector's metrics for each cohort against the "
                            "held-out reference test subjects")
HEATMAP_STACK = RunFile("heatmaps.npy", "Spatial-MSMA heatmaps (subjects, D, H, W), memory-mapped by the explorer",
                        explorer=True)
HEATMAP_IMAGES = RunFile("heatmaps/", "one NIfTI heatmap per subject in template space, for FSLeyes or ITK-SNAP")
HEATMAP_FILES = RunFile("heatmaps.parquet", "per subject: the file name of its NIfTI heatmap")
ROI_SCORES = RunFile("roi_scores.parquet", "per subject and atlas region: the mean heatmap value", explorer=True)
ROI_PERCENTILES = RunFile("roi_percentiles.parquet", "per subject and atlas region: its percentile in the reference "
                          "cohort", explorer=True)
ROI_ADJUSTED = RunFile("roi_adjusted.parquet", "per subject and atlas region: the deviation (z) from what the "
                       "normative model predicts for the subject's covariates (with covariates declared)")
NORMATIVE_MODEL = RunFile("normative_model.parquet", "per atlas region: the normative model's coefficients and "
                          "residual SD")
SOM_TABLE = RunFile("som.parquet", "per subject: its best-matching SOM unit", explorer=True)
SOM_WEIGHTS = RunFile("som_weights.npy", "the SOM's unit weights (rows, cols, scales)", explorer=True)
SOM_U_MATRIX = RunFile("som_u_matrix.npy", "the SOM's U-matrix (rows, cols)", explorer=True)
ROI_TESTS = RunFile("roi_tests.parquet", "every cohort's maximal prototype against the rest of the cohort, per kept "
                    "region (ch. 6.3)", explorer=True)
CORRELATIONS = RunFile("correlations.parquet", "every cohort's significant regions against each behaviour score "
                       "(ch. 6.3)", explorer=True)
LESION_MAPS = RunFile("lesion_maps.npy", "every lesion method's maps of the subjects with lesion masks (subjects, "
                      "methods, brain voxels)")
LESION_EVALUATION = RunFile("lesion_evaluation.parquet", "per lesion subject and method: the lesion metrics of "
                            "dissertation table 5.1")
SCORE_MODEL = RunFile("score_model.pt", "the score network's checkpoint (state dict and config; "
                      "torch.load(..., weights_only=True))")
SPATIAL_FLOW = RunFile("spatial_flow.pt", "the Spatial-MSMA flow's checkpoint")
GNSM_MODEL = RunFile("gnsm_model.pt", "the GNSM network of the gnsm: block, with its table encoder and schema "
                    "(with a gnsm: block)")
SWEEP = RunFile("sweep_<cohort>.parquet",
                "the grid-stability table of a cohort's maximal prototype, from msma sweep or the explorer's Grid "
                "sweep room")

RUN_FILES: tuple[RunFile, ...] = (
    RECORD, SCORE_NORMS, LOWRANK_NORMS, GAUSSIAN_NORMS, GNSM_NORMS, VOXEL_SCORES, DETECTOR_SCORES, DETECTION_METRICS,
    HEATMAP_STACK, HEATMAP_IMAGES, HEATMAP_FILES, ROI_SCORES, ROI_PERCENTILES, ROI_ADJUSTED,
    NORMATIVE_MODEL, SOM_TABLE, SOM_WEIGHTS, SOM_U_MATRIX,
    ROI_TESTS, CORRELATIONS, LESION_MAPS, LESION_EVALUATION, SCORE_MODEL, SPATIAL_FLOW, GNSM_MODEL, SWEEP,
)
"""Every file a run may hold, in the order the README lists them."""

NORM_SET_FILES = {"msma": SCORE_NORMS, "lowrank": LOWRANK_NORMS, "gaussian": GAUSSIAN_NORMS, "gnsm": GNSM_NORMS}
"""The table of each set of score norms (``run.json`` section ``norm_sets``)."""


def sweep_file(cohort: str) -> str:
    """The file name of ``cohort``'s sweep table: characters outside ``[A-Za-z0-9_-]`` become ``_``."""
    return SWEEP.name.replace("<cohort>", re.sub(r"[^A-Za-z0-9_-]", "_", cohort))


@dataclass(frozen=True)
class RunSection:
    """One top-level section of ``run.json``: its key and what it records."""

    key: str
    what: str


RUN_SECTIONS: tuple[RunSection, ...] = (
    RunSection("run_id", "the run's id: UTC time of the refresh and a hash of manifest and settings"),
    RunSection("created_utc", "when the refresh started"),
    RunSection("study", "the manifest's study name"),
    RunSection("manifest", "the manifest's path and SHA-256"),
    RunSection("profile", "the model profile (default, gpu-2mm, fast)"),
    RunSection("device", "where the networks ran"),
    RunSection("seed", "the manifest's seed"),
    RunSection("versions", "msma-explorer, Python and the numerical packages"),
    RunSection("subjects", "subjects per cohort and per evaluation group"),
    RunSection("grid", "the template grid's shape and voxel size (mm)"),
    RunSection("brain_voxels", "voxels inside the brain mask"),
    RunSection("normalisation", "how subject intensities were normalised"),
    RunSection("score_model", "the score network: settings, checkpoint key, training data SHA-256, training history"),
    RunSection("schedule", "the noise schedule and its sigmas"),
    RunSection("gaussian", "the low-rank Gaussian prior's rank and validation likelihoods"),
    RunSection("norm_sets", "what each set of score norms was computed with"),
    RunSection("detectors", "the MSMA detectors' fitted settings"),
    RunSection("tables", "the detection tables' file names"),
    RunSection("arrays", "the arrays' file names, shapes and meaning"),
    RunSection("metrics", "every detection metric (also in detection_metrics.parquet)"),
    RunSection("timings_s", "seconds spent in each stage of the refresh"),
    RunSection("score_passes", "the fingerprint of the scoring passes and the run they were reused from"),
    RunSection("gnsm", "GNSM on the manifest's gnsm: columns: columns, levels, imputed values, key, training steps, "
               "why it stopped, seconds (null without a gnsm: block)"),
    RunSection("spatial", "Spatial-MSMA: flow settings and history, heatmaps, ROI scores, the lesion evaluation"),
    RunSection("normative", "the normative model of the ROI scores: covariates, design, fit subjects, held-out fit "
               "(null without covariates)"),
    RunSection("som", "the SOM: grid, errors, every cohort's maximal prototype (and, for the demo, its recovery)"),
    RunSection("hypotheses", "the ch. 6.3 chain's counts for every cohort, and which ROI scores (raw or "
               "adjusted) it ran on"),
    RunSection("warnings", "what the researcher should know about this run"),
)
"""The sections of ``run.json``, in the order the refresh writes them."""
