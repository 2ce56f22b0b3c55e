"""``msma refresh``: manifest -> one new published run. This module is the spine: it lists the stages in order;
each stage group lives in its own module of this package (docs/architecture.md draws the whole picture).

1. validate the study (every file the manifest names) and split the reference cohort;
2. read and normalise the subject volumes (:mod:`pipeline.score_model`);
3. fit the Gaussian prior and train the score model on the reference ``train`` split, ``val`` for early
   stopping, or reuse the checkpoint whose key (:mod:`pipeline.keys`) matches; an interrupted training resumes;
4. score every subject once per scale, or take the passes over from the published run when the same network scored
   the same volumes; the no-network baseline norms; GNSM's norms of the subject columns the manifest's ``gnsm:``
   block names, with the score norms (:mod:`pipeline.gnsm`);
5. Spatial-MSMA: patch norms, the conditional flow, heatmaps, ROI scores (:mod:`pipeline.spatial`), and the lesion
   evaluation when the manifest names lesion masks (:mod:`pipeline.lesions`);
6. the MSMA detectors and their metrics (:mod:`pipeline.detection`);
7. the SOM and the hypothesis chain of every cohort (:mod:`pipeline.exploration`);
8. write the tables and ``run.json`` (:mod:`pipeline.record`) into a staging folder and publish it atomically
   (:mod:`analysis.runs.store`); a refresh that fails leaves the last good run published.

A study with a known answer (the demo) passes it as ``truth``; the refresh never reads demo files itself.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from analysis.exploration.recovery import PlantedTruth
from analysis.runs import layout
from analysis.runs.store import RunStore, new_run_id, write_json
from analysis.study.manifest import Manifest
from analysis.study.study import Study
from analysis.study.validation import validate_study
from models.profiles import Profile, get_profile
from pipeline.context import RefreshContext, RefreshError, Split, StageTimer, resolve_device
from pipeline.detection import detection_stages
from pipeline.exploration import exploration_stages
from pipeline.gnsm import gnsm_stage
from pipeline.lesions import lesion_stage
from pipeline.normative import normative_stage
from pipeline.record import run_record, run_warnings, write_tables
from pipeline.score_model import fit_score_model, read_volumes, score_subjects
from pipeline.spatial import spatial_stages

__all__ = ["RefreshError", "RefreshResult", "refresh"]


@dataclass
class RefreshResult:
    run_dir: Path
    run: dict


def refresh(
    manifest: Manifest,
    *,
    profile: str | Profile = "default",
    device: str = "cpu",
    progress: bool = True,
    keep_runs: int = 3,
    on_stage: Callable[[str], None] | None = None,
    study: Study | None = None,
    truth: PlantedTruth | None = None,
) -> RefreshResult:
    """Run the whole refresh of a loaded manifest; returns the published run.

    ``study`` is the manifest's already validated study, if the caller has one (validation is then skipped);
    ``truth`` is the study's known answer, if it has one (:func:`analysis.demo.truth.planted_truth` for the demo).
    One refresh at a time per ``output_dir``: a second one fails at once with
    :class:`~analysis.runs.store.StoreBusy`.
    """
    profile = get_profile(profile) if isinstance(profile, str) else profile
    device = resolve_device(device)  # before validation: a missing GPU fails at once
    store = RunStore(manifest.output_dir)
    with store.lock():
        timer = StageTimer(progress, on_stage)
        with timer.stage("validate"):
            if study is None or study.manifest is not manifest:
                study = validate_study(manifest, progress=progress)
        ctx = RefreshContext(study=study, split=Split.of(study), profile=profile, device=device, progress=progress,
                             store=store, timer=timer, truth=truth)
        result = _stages(ctx)
        store.prune(keep_runs)
        return result


def _stages(ctx: RefreshContext) -> RefreshResult:
    with ctx.stage("read_volumes"):
        images = read_volumes(ctx)
    score = fit_score_model(ctx, images)
    run_id = new_run_id(f"{ctx.study.manifest.sha256}:{score.key}:{ctx.profile.name}:{time.time_ns()}")
    ctx.staging = ctx.store.start(run_id)
    try:
        norm_sets, passes = score_subjects(ctx, images, score)
        gnsm = gnsm_stage(ctx, norm_sets["msma"])
        if gnsm is not None:
            norm_sets["gnsm"] = gnsm.norms
        spatial = spatial_stages(ctx, images, score)
        if ctx.study.lesions is not None:
            with ctx.stage("lesions"):
                spatial.record["lesions"] = lesion_stage(ctx, spatial)
        spatial.release(ctx.staging)
        detection = detection_stages(ctx, norm_sets)
        normative = normative_stage(ctx, spatial)
        exploration = exploration_stages(ctx, norm_sets["msma"], spatial, normative.adjusted)
        with ctx.stage("write"):
            write_tables(ctx, norm_sets, detection, exploration, score, gnsm)
        run = {
            **run_record(ctx, run_id, score, detection),
            "score_passes": passes,
            "gnsm": gnsm.record if gnsm is not None else None,
            "spatial": spatial.record,
            "normative": normative.record,
            "som": exploration.som_record,
            "hypotheses": exploration.hypotheses,
            "warnings": run_warnings(ctx, spatial.record) + normative.warnings,
        }
        write_json(ctx.staging / layout.RECORD.name, run)  # last: a run folder without run.json is never complete
        run_dir = ctx.store.publish(ctx.staging)
    except BaseException:
        shutil.rmtree(ctx.staging, ignore_errors=True)
        raise
    return RefreshResult(run_dir=run_dir, run=run)
