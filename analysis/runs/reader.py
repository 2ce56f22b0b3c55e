"""Opening a published run for reading: the explorer and every later command read runs only through here.

:func:`open_run` reads a study's manifest (its template, atlas, subjects and behaviour tables; subject images are
never opened) and one published run of it: ``run.json``, the Parquet tables read once, the SOM arrays, and the
heatmap stack ``heatmaps.npy`` memory-mapped so a study of thousands of subjects costs no memory until a view
reads a slice of it. The result is a :class:`PublishedRun`, read-only by convention: the explorer shares one
between all its requests.

A run that is missing a file, or whose files disagree with each other or with the study grid, raises
:class:`RunUnreadable` naming the file and what was expected.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.exploration.roi_stats import percentile_reference, roi_columns
from analysis.runs import layout
from analysis.runs.store import RUN_ID, RunNotFound, RunStore
from analysis.study.manifest import Manifest, load_manifest
from analysis.study.study import Study
from analysis.study.validation import validate_study
from analysis.study.volumes import VolumeError, load_volume

__all__ = ["PublishedRun", "RunNotFound", "RunUnreadable", "SomMap", "open_run"]

ID_COLUMNS = ["subject_id", "cohort", "split", "role"]
"""The leading columns of every per-subject table of a run, in the run's subject order."""

RUN_FILES = {
    "record": layout.RECORD.name,
    "score_norms": layout.SCORE_NORMS.name,
    "som": layout.SOM_TABLE.name,
    "som_weights": layout.SOM_WEIGHTS.name,
    "som_u_matrix": layout.SOM_U_MATRIX.name,
    "heatmaps": layout.HEATMAP_STACK.name,
    "roi_scores": layout.ROI_SCORES.name,
    "roi_percentiles": layout.ROI_PERCENTILES.name,
    "roi_tests": layout.ROI_TESTS.name,
    "correlations": layout.CORRELATIONS.name,
    "detector_scores": layout.DETECTOR_SCORES.name,
}
"""What the explorer reads from a run folder: the files :mod:`analysis.runs.layout` marks ``explorer``."""


class RunUnreadable(ValueError):
    """A published run folder cannot be used; the message names the file and what was expected."""

    def __init__(self, file: str | os.PathLike, expected: str, found: str):
        self.file = str(file)
        self.expected = expected
        self.found = found
        super().__init__(f"{file}: not a readable msma run: expected {expected}; found {found}")


@dataclass(frozen=True)
class SomMap:
    """The run's Self-Organizing Map: lattice, U-matrix and every cohort's maximal prototype."""

    n_rows: int
    n_cols: int
    topology: str
    u_matrix: np.ndarray
    """(n_rows, n_cols): minisom's distance map (summed distance to lattice neighbours / its maximum)."""
    weights: np.ndarray
    """(n_rows, n_cols, L) codebook vectors in the reference-standardised log-norm space."""
    prototypes: dict[str, dict]
    """cohort -> {"unit": [row, col], "size", "cohort_size", "members": [subject ids]}."""


@dataclass(frozen=True, eq=False)
class PublishedRun:
    """One published run of a study, with the study's own tables, ready for the explorer.

    Every per-subject table is indexed by subject id in the run's subject order, which is also the order of the
    first axis of :attr:`heatmaps`.
    """

    run_dir: Path
    record: dict
    """``run.json``."""
    study: Study
    """The study as described by its manifest now (template grid, mask, atlas, subjects, behaviour)."""
    template: np.ndarray
    """(D, H, W) float32: the study template, the greyscale under every heatmap."""
    subjects: pd.DataFrame
    """Columns cohort, split, role, sex, age, bmu_row, bmu_col."""
    score_norms: pd.DataFrame
    """(subjects, L) multiscale score norms."""
    som: SomMap
    heatmaps: np.ndarray
    """(subjects, D, H, W) float32 memory map of the Spatial-MSMA heatmaps, NaN outside the brain."""
    roi_scores: pd.DataFrame
    """(subjects, ROIs) mean heatmap value per atlas region."""
    roi_percentiles: pd.DataFrame
    """(subjects, ROIs) percentage of reference subjects scoring at or below."""
    roi_tests: pd.DataFrame
    """The refresh's prototype-vs-rest tests of every cohort (column ``cohort``)."""
    correlations: pd.DataFrame
    """The refresh's behaviour correlations of every cohort (column ``cohort``)."""
    detector_scores: pd.DataFrame
    roi_labels: dict[str, int]
    """ROI column -> atlas label index."""
    roi_adjusted: pd.DataFrame | None = None
    """(subjects, ROIs) deviations from the normative model's prediction for each subject's covariates (z); None
    when the study declares no covariates."""
    gnsm_norms: pd.DataFrame | None = None
    """(subjects, L) GNSM score norms of each subject's row of the manifest's ``gnsm:`` columns; None when the run
    had no ``gnsm:`` block."""

    @property
    def roi_tables(self) -> dict[str, pd.DataFrame]:
        """The ROI score tables the chain can run on: "adjusted" (when the run has it) and "raw"."""
        tables = {} if self.roi_adjusted is None else {"adjusted": self.roi_adjusted}
        return {**tables, "raw": self.roi_scores}

    @property
    def default_roi_scores(self) -> str:
        """"adjusted" when the study declares covariates, as the refresh's chain ran; else "raw"."""
        return next(iter(self.roi_tables))

    @property
    def run_id(self) -> str:
        return self.run_dir.name

    @property
    def created(self) -> datetime:
        """When the refresh started (UTC), from the run id."""
        return datetime.strptime(self.run_id.split("-")[0], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)

    @property
    def study_name(self) -> str:
        return self.study.manifest.study_name

    @property
    def reference_cohort(self) -> str:
        return self.study.manifest.reference_cohort

    @property
    def behaviour(self) -> pd.DataFrame | None:
        """Behaviour scores (subjects x scores) from the manifest's behaviour table; None without one."""
        return self.study.behaviour

    @cached_property
    def cohorts(self) -> list[str]:
        """The run's cohorts: the reference cohort first, then the others by name."""
        others = sorted(set(self.subjects["cohort"]) - {self.reference_cohort})
        return [self.reference_cohort, *others]

    @cached_property
    def reference_ids(self) -> list[str]:
        """The reference subjects that set the ROI percentiles and the 90th-percentile filter (as the refresh)."""
        s = self.subjects
        return percentile_reference(list(s.index), list(s["cohort"]), list(s.index[s["role"] == "train"]),
                                    self.reference_cohort)

    @cached_property
    def row_of(self) -> dict[str, int]:
        """Subject id -> row of the per-subject arrays."""
        return {sid: k for k, sid in enumerate(self.subjects.index)}

    def cohort_ids(self, cohort: str) -> list[str]:
        """The ids of one cohort's subjects, in run order."""
        return self.subjects.index[self.subjects["cohort"] == cohort].tolist()

    @property
    def heatmap_unit(self) -> str:
        """The unit of the heatmaps and of the ROI scores (their regional means)."""
        meaning = str(((self.record.get("spatial") or {}).get("heatmaps") or {}).get("meaning", ""))
        return "reference SD" if "standard deviation" in meaning else "NLL, nats"


def open_run(manifest: Manifest | str | os.PathLike, run_id: str | None = None) -> PublishedRun:
    """Open the latest (or the named) published run of a study.

    Raises
    ------
    ManifestError
        The manifest or a table it names is unusable.
    RunNotFound
        The study has no published run yet, or no run ``run_id``.
    RunUnreadable
        The run folder lacks a file or its files disagree.
    """
    if not isinstance(manifest, Manifest):
        manifest = load_manifest(manifest)
    store = RunStore(manifest.output_dir)
    if run_id is None:
        run_dir = store.latest()
    else:
        if not RUN_ID.match(run_id):
            raise RunNotFound(f"run id {run_id!r}: expected the form YYYYmmddTHHMMSSZ-xxxxxxxx")
        run_dir = store.root / run_id
        if not (run_dir / layout.RECORD.name).is_file():
            known = ", ".join(store.run_ids()) or "none"
            raise RunNotFound(f"{store.root}: no published run {run_id} (runs here: {known})")
    study = validate_study(manifest, progress=False, subject_volumes=False)
    return _read(run_dir, study)


def open_sibling(run: PublishedRun, run_id: str) -> PublishedRun:
    """Another published run of ``run``'s study, read with the study as already validated (the explorer's run
    picker). Raises :class:`RunNotFound` for an id that is not a complete run of the same store."""
    if not RUN_ID.match(str(run_id)):
        raise RunNotFound(f"run id {run_id!r}: expected the form YYYYmmddTHHMMSSZ-xxxxxxxx")
    run_dir = run.run_dir.parent / run_id
    if not (run_dir / layout.RECORD.name).is_file():
        raise RunNotFound(f"{run.run_dir.parent}: no published run {run_id}")
    return _read(run_dir, run.study)


def _read(run_dir: Path, study: Study) -> PublishedRun:
    files = {key: run_dir / name for key, name in RUN_FILES.items()}
    for key, path in files.items():
        if not path.is_file():
            raise RunUnreadable(path, f"the run's {key.replace('_', ' ')} file", "no such file (rerun msma refresh)")
    try:
        record = json.loads(files["record"].read_text())
    except (OSError, ValueError) as exc:
        raise RunUnreadable(files["record"], "a JSON run record", f"{type(exc).__name__}: {exc}") from None
    if not isinstance(record, dict) or not isinstance(record.get("som"), dict):
        raise RunUnreadable(files["record"], "a run record with a 'som' section", "none")

    norms = _table(files["score_norms"])
    ids = norms["subject_id"].astype(str).tolist()
    index = pd.Index(ids, name="subject_id")
    if index.has_duplicates:
        raise RunUnreadable(files["score_norms"], "each subject id once", "repeated ids")
    tables = {key: _subject_table(files[key], ids) for key in ("som", "roi_scores", "roi_percentiles",
                                                               "detector_scores")}
    som_table = tables["som"]
    known = study.subjects.reindex(index)
    subjects = norms[ID_COLUMNS[1:]].set_axis(index)
    subjects = subjects.assign(
        sex=known["sex"].to_numpy(), age=known["age"].to_numpy(dtype=float),
        bmu_row=som_table["bmu_row"].to_numpy(dtype=int), bmu_col=som_table["bmu_col"].to_numpy(dtype=int),
    )
    som = _som(files, record["som"], subjects)
    heatmaps = _array(files["heatmaps"], mmap=True)
    if heatmaps.shape != (len(ids), *study.grid.shape) or heatmaps.dtype != np.float32:
        raise RunUnreadable(
            files["heatmaps"], f"float32 of shape {(len(ids), *study.grid.shape)} (subjects, template grid)",
            f"{heatmaps.dtype} of shape {heatmaps.shape}: the study grid changed since the refresh; rerun it",
        )
    roi_scores = tables["roi_scores"].drop(columns=ID_COLUMNS).set_axis(index)
    labels = roi_columns(study.label_names, np.unique(study.atlas_labels[study.brain_mask]))
    unknown = [c for c in roi_scores.columns if c not in labels]
    if unknown:
        raise RunUnreadable(files["roi_scores"], f"ROI columns named after {study.manifest.atlas.labels.name}",
                            f"{len(unknown)} others, e.g. {unknown[:3]}: the atlas changed since the refresh")
    try:
        template = load_volume(study.manifest.template.image, study.grid)
    except VolumeError as exc:
        raise RunUnreadable(study.manifest.template.image, exc.expected, exc.found) from None
    adjusted = _named_table(run_dir, record, "normative", layout.ROI_ADJUSTED.name, ids,
                            "the run's covariate-adjusted ROI scores (run.json names a normative model)")
    if adjusted is not None and list(adjusted.columns) != list(roi_scores.columns):
        raise RunUnreadable(run_dir / layout.ROI_ADJUSTED.name, f"the ROI columns of {layout.ROI_SCORES.name}",
                            "other columns")
    gnsm_norms = _named_table(run_dir, record, "gnsm", layout.GNSM_NORMS.name, ids,
                              "the run's GNSM score norms (run.json has a gnsm section)")
    return PublishedRun(
        run_dir=run_dir,
        record=record,
        study=study,
        template=template,
        subjects=subjects,
        score_norms=norms.drop(columns=ID_COLUMNS).set_axis(index),
        som=som,
        heatmaps=heatmaps,
        roi_scores=roi_scores.astype(float),
        roi_percentiles=tables["roi_percentiles"].drop(columns=ID_COLUMNS).set_axis(index).astype(float),
        roi_tests=_table(files["roi_tests"], empty_ok=True),
        correlations=_table(files["correlations"], empty_ok=True),
        detector_scores=tables["detector_scores"].drop(columns=ID_COLUMNS).set_axis(index),
        roi_labels={c: labels[c] for c in roi_scores.columns},
        roi_adjusted=adjusted,
        gnsm_norms=gnsm_norms,
    )


def _named_table(run_dir: Path, record: dict, section: str, name: str, ids: list[str],
                 expected: str) -> pd.DataFrame | None:
    """The per-subject float table ``name`` (indexed by subject id, id columns dropped) that ``run.json`` section
    ``section`` says the run has; None when the record has no such section."""
    if not isinstance(record.get(section), dict):
        return None
    path = run_dir / name
    if not path.is_file():
        raise RunUnreadable(path, expected, "no such file (rerun msma refresh)")
    index = pd.Index(ids, name="subject_id")
    return _subject_table(path, ids).drop(columns=ID_COLUMNS).set_axis(index).astype(float)


def _table(path: Path, empty_ok: bool = False) -> pd.DataFrame:
    try:
        table = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types for a corrupt file
        raise RunUnreadable(path, "a Parquet table", f"{type(exc).__name__}: {exc}") from None
    if table.empty and not empty_ok:
        raise RunUnreadable(path, "a table with rows", "none")
    return table


def _subject_table(path: Path, ids: list[str]) -> pd.DataFrame:
    table = _table(path)
    if "subject_id" not in table or table["subject_id"].astype(str).tolist() != ids:
        raise RunUnreadable(path, "one row per subject, in the order of score_norms.parquet", "another order")
    return table


def _array(path: Path, mmap: bool = False) -> np.ndarray:
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise RunUnreadable(path, "a NumPy array", f"{type(exc).__name__}: {exc}") from None


def _som(files: dict[str, Path], record: dict, subjects: pd.DataFrame) -> SomMap:
    try:
        n_rows, n_cols = (int(v) for v in record["grid"])
        topology = str(record["topology"])
        prototypes = dict(record["prototypes"])
    except (KeyError, TypeError, ValueError) as exc:
        raise RunUnreadable(files["record"], "som.grid, som.topology and som.prototypes", repr(exc)) from None
    u_matrix, weights = _array(files["som_u_matrix"]), _array(files["som_weights"])
    if u_matrix.shape != (n_rows, n_cols) or weights.shape[:2] != (n_rows, n_cols):
        raise RunUnreadable(files["som_u_matrix"], f"arrays of the {n_rows} x {n_cols} grid of run.json",
                            f"U-matrix {u_matrix.shape}, weights {weights.shape}")
    rows, cols = subjects["bmu_row"], subjects["bmu_col"]
    outside = (rows < 0) | (rows >= n_rows) | (cols < 0) | (cols >= n_cols)
    if outside.any():
        raise RunUnreadable(files["som"], f"BMUs on the {n_rows} x {n_cols} grid", f"{int(outside.sum())} off it")
    for cohort, prototype in prototypes.items():
        unit = prototype.get("unit")
        if not (isinstance(unit, list) and len(unit) == 2 and 0 <= unit[0] < n_rows and 0 <= unit[1] < n_cols):
            raise RunUnreadable(files["record"], f"{cohort}'s prototype unit on the {n_rows} x {n_cols} grid",
                                repr(unit))
        subgroup = prototype.get("subgroup") or {}
        units = subgroup.get("units", [])
        if not all(isinstance(u, list) and len(u) == 2 and 0 <= u[0] < n_rows and 0 <= u[1] < n_cols for u in units):
            raise RunUnreadable(files["record"], f"{cohort}'s subgroup units on the {n_rows} x {n_cols} grid",
                                repr(units))
        if not set(prototype.get("members", [])) | set(subgroup.get("members", [])) <= set(subjects.index):
            raise RunUnreadable(files["record"], f"members of {cohort}'s prototype among the run's subjects",
                                "unknown ids")
    return SomMap(n_rows, n_cols, topology, u_matrix, weights, prototypes)

