"""What every stage of the refresh shares: the study, its split, the settings, the store and the stage timer."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from analysis.exploration.recovery import PlantedTruth
from analysis.runs.store import RunStore
from analysis.study.study import Study
from models.profiles import Profile

MIN_TRAIN_SUBJECTS = 5
"""Fewest reference training subjects a refresh accepts: the detectors need a few rows (5-fold cross-validation
of the GMM, a held-out fifth for the flow, 5 neighbours for KNN)."""


class RefreshError(RuntimeError):
    """A refresh that cannot proceed, with a message naming what is missing."""


@dataclass(frozen=True)
class Split:
    """The subjects of a refresh in the run's order, and the reference cohort's train, validation and test ids."""

    ids: list[str]
    train: list[str]
    val: list[str]
    test: list[str]

    @classmethod
    def of(cls, study: Study) -> Split:
        """The reference ``train``, ``val`` and ``test`` ids; without val subjects, every tenth training subject
        validates."""
        s, ref = study.subjects, study.manifest.reference_cohort
        in_ref = s["cohort"] == ref
        train = list(s.index[in_ref & (s["split"] == "train")])
        val = list(s.index[in_ref & (s["split"] == "val")])
        test = list(s.index[in_ref & (s["split"] == "test")])
        if not val:
            val, train = train[::10], [i for k, i in enumerate(train) if k % 10]
        if len(train) < MIN_TRAIN_SUBJECTS:
            raise RefreshError(
                f"{study.manifest.subjects.table}: the reference cohort {ref!r} needs at least {MIN_TRAIN_SUBJECTS} "
                f"subjects in split 'train' (besides those in 'val') for the score model and its detectors; found "
                f"{len(train)}"
            )
        return cls(list(study.subjects.index), train, val, test)

    def rows(self, ids: list[str]) -> list[int]:
        """Positions of ``ids`` in the run's subject order."""
        position = {sid: k for k, sid in enumerate(self.ids)}
        return [position[i] for i in ids]


@dataclass
class StageTimer:
    """Seconds spent in each stage (``run.json`` section ``timings_s``), announced as they start."""

    progress: bool
    on_stage: Callable[[str], None] | None = None
    timings: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str):
        if self.on_stage is not None:
            self.on_stage(name)
        if self.progress:
            print(f"[refresh] {name} ...", flush=True)
        start = time.perf_counter()
        try:
            yield
        finally:
            self.timings[name] = round(time.perf_counter() - start, 3)


@dataclass
class RefreshContext:
    """One refresh: read by every stage, written by none except :attr:`staging` (set when the run folder opens)."""

    study: Study
    split: Split
    profile: Profile
    device: str
    progress: bool
    store: RunStore
    timer: StageTimer
    truth: PlantedTruth | None = None
    """The study's known answer, when it has one (the demo): see :mod:`analysis.exploration.recovery`."""
    staging: Path | None = None

    @property
    def seed(self) -> int:
        return self.study.manifest.model.seed

    @property
    def n_scales(self) -> int:
        return self.study.manifest.model.n_scales

    def stage(self, name: str):
        return self.timer.stage(name)

    def subject_table(self) -> pd.DataFrame:
        """The leading columns of every per-subject table of the run: id, cohort, split and role (train, val, or
        score for subjects the models never learned from)."""
        s = self.study.subjects.loc[self.split.ids]
        used, validation = set(self.split.train), set(self.split.val)
        return pd.DataFrame(
            {
                "subject_id": self.split.ids,
                "cohort": s["cohort"].to_numpy(),
                "split": s["split"].to_numpy(),
                "role": ["train" if i in used else "val" if i in validation else "score" for i in self.split.ids],
            }
        )


def resolve_device(device: str) -> str:
    """``cpu``, ``cuda[:k]``, or ``auto`` (cuda when available) -> the device the networks run on."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RefreshError(f"--device {device}: CUDA is not available on this machine (use --device cpu)")
    if device != "cpu" and not device.startswith("cuda"):
        raise RefreshError(f"--device: expected cpu, cuda or auto, got {device!r}")
    return device
