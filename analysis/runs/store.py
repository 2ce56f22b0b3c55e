"""The artifact store: versioned runs under a study's ``output_dir``, published atomically.

Layout::

    <output_dir>/
      latest                    one line: the id of the published run (replaced atomically)
      <run_id>/                 a complete run: run.json, Parquet tables, arrays, checkpoints
      .staging-<run_id>/        a run being written; never read, removed by the next refresh
      .lock                     held by the refresh writing here (one at a time)
      models/                   trained checkpoints shared between runs, keyed by config and data

A refresh writes everything into ``.staging-<run_id>/``, renames it to ``<run_id>/`` (atomic on one file system)
and only then replaces ``latest``. A refresh killed at any point therefore leaves the previous run published and
intact; readers follow ``latest`` and never see a partial run.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import time
from pathlib import Path

import pandas as pd

from analysis.study.volumes import atomic_write_bytes

LATEST = "latest"
MODELS_DIR = "models"
STAGING_PREFIX = ".staging-"
RUN_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{8}$")


class RunNotFound(FileNotFoundError):
    """No published run where one was expected."""


class StoreBusy(RuntimeError):
    """Another refresh holds the store's lock."""


def new_run_id(fingerprint: str, now: float | None = None) -> str:
    """``YYYYmmddTHHMMSSZ-<8 hex>``: UTC time of the refresh and a hash of the manifest and configuration."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{hashlib.sha256(fingerprint.encode()).hexdigest()[:8]}"


def write_json(path: str | os.PathLike, payload: dict) -> None:
    """Atomically write ``payload`` as indented JSON (NaN is written as null)."""
    text = json.dumps(_plain(payload), indent=2, allow_nan=False) + "\n"
    atomic_write_bytes(path, text.encode())


def _plain(value):
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item):
        return _plain(value.item())
    return value


def write_table(path: str | os.PathLike, table: pd.DataFrame) -> None:
    """Atomically write ``table`` as Parquet (the index is kept when it is named)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    table.to_parquet(tmp, index=table.index.name is not None)
    os.replace(tmp, path)


class RunStore:
    """Versioned runs of one study, in ``root`` (the manifest's ``output_dir``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    @property
    def models_dir(self) -> Path:
        return self.root / MODELS_DIR

    @contextlib.contextmanager
    def lock(self):
        """Hold the store's lock (``<root>/.lock``) for one refresh; raises :class:`StoreBusy` if another
        process holds it. The operating system releases it when the process dies, so a killed refresh never
        leaves the store locked."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StoreBusy(f"{self.root}: another refresh is writing runs here; wait for it to finish") from exc
            try:
                yield self
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def start(self, run_id: str) -> Path:
        """Create and return the staging folder of a new run, after removing stale ones of killed refreshes."""
        if not RUN_ID.match(run_id):
            raise ValueError(f"run id {run_id!r} is not of the form YYYYmmddTHHMMSSZ-xxxxxxxx")
        self.root.mkdir(parents=True, exist_ok=True)
        for stale in self.root.glob(STAGING_PREFIX + "*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = self.root / (STAGING_PREFIX + run_id)
        staging.mkdir()
        return staging

    def publish(self, staging: Path) -> Path:
        """Move a finished staging folder into place and point ``latest`` at it; returns the run folder."""
        run_id = staging.name.removeprefix(STAGING_PREFIX)
        if not (staging / "run.json").is_file():
            raise FileNotFoundError(f"{staging}: incomplete run (no run.json); not published")
        final = self.root / run_id
        if final.exists():
            raise FileExistsError(f"{final}: a run with this id exists already")
        os.replace(staging, final)
        atomic_write_bytes(self.root / LATEST, (run_id + "\n").encode())
        return final

    def latest_id(self) -> str | None:
        pointer = self.root / LATEST
        if not pointer.is_file():
            return None
        run_id = pointer.read_text().strip()
        if not RUN_ID.match(run_id):
            raise RunNotFound(f"{pointer}: expected a run id of the form YYYYmmddTHHMMSSZ-xxxxxxxx, found {run_id!r}")
        return run_id

    def latest(self) -> Path:
        """The published run's folder; :class:`RunNotFound` if there is none yet."""
        run_id = self.latest_id()
        if run_id is None or not (self.root / run_id / "run.json").is_file():
            raise RunNotFound(f"{self.root}: no published run yet (run `msma refresh` first)")
        return self.root / run_id

    def run_ids(self) -> list[str]:
        """Ids of the complete runs, oldest first."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and RUN_ID.match(p.name))

    def prune(self, keep: int) -> list[str]:
        """Delete all but the newest ``keep`` runs (never the published one); returns the ids removed."""
        current = self.latest_id()
        removable = [r for r in self.run_ids() if r != current]
        doomed = removable[: max(0, len(removable) - max(keep - 1, 0))]
        for run_id in doomed:
            shutil.rmtree(self.root / run_id, ignore_errors=True)
        return doomed


def read_run(run_dir: str | os.PathLike) -> dict:
    """The ``run.json`` of a run folder."""
    return json.loads((Path(run_dir) / "run.json").read_text())
