"""Sweeps started from the browser: each runs in a worker process (so the explorer stays responsive and a cancel
really stops the work), reports how many grids it has fitted, and writes the same ``sweep_<cohort>.parquet`` into
the run as ``msma sweep``. One sweep per run and cohort at a time; a second is refused with a message.

The worker is a fresh interpreter (the ``spawn`` start method: the explorer's server threads are never forked), and
imports only :mod:`analysis`.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

FINISHED, FAILED, CANCELLED, RUNNING = "finished", "failed", "cancelled", "running"


def _work(spec: dict, done, stop, outcome) -> None:
    """The worker: sweep into the run as ``spec`` says (run_dir, reference, cohort, rows, cols, topology),
    counting grids in ``done``, stopping when ``stop`` is set; the result (or the error) goes into the ``outcome``
    queue."""
    from analysis.exploration.sweep import SweepCancelled, SweepGrids
    from analysis.runs.sweeps import sweep_run

    def progress(finished: int, total: int) -> None:
        done.value = finished

    try:
        grids = SweepGrids(rows=spec["rows"], cols=spec["cols"], topology=spec["topology"])
        table, out = sweep_run(spec["run_dir"], spec["reference"], spec["cohort"], grids, progress=progress,
                               should_stop=stop.is_set)
    except SweepCancelled:
        outcome.put((CANCELLED, "cancelled; the run's sweep table was left as it was"))
    except Exception as exc:  # reported in the page, never raised into the server
        outcome.put((FAILED, f"{type(exc).__name__}: {exc}"))
    else:
        outcome.put((FINISHED, f"{len(table)} grids written to {Path(out).name}"))


@dataclass
class SweepJob:
    run_dir: Path
    cohort: str
    total: int
    process: mp.Process
    done: object
    stop: object
    outcome: object
    started: float = field(default_factory=time.monotonic)
    state: str = RUNNING
    message: str = ""

    def poll(self) -> None:
        if self.state != RUNNING:
            return
        try:
            self.state, self.message = self.outcome.get_nowait()
        except Exception:  # queue.Empty: still running, or died without a word
            if not self.process.is_alive():
                self.process.join(timeout=1)
                if self.state == RUNNING:
                    self.state, self.message = FAILED, f"the sweep's worker stopped (exit code {self.process.exitcode})"
            return
        self.process.join(timeout=0.05)  # it exits right after its word; never hold a request waiting for it

    def status(self) -> dict:
        self.poll()
        return {"state": self.state, "done": int(self.done.value), "total": self.total, "message": self.message,
                "cohort": self.cohort, "seconds": round(time.monotonic() - self.started, 1)}


class SweepJobs:
    """The sweeps this explorer has started, by job id."""

    KEPT = 32

    def __init__(self):
        self._jobs: dict[str, SweepJob] = {}
        self._lock = threading.Lock()
        self._context = mp.get_context("spawn")

    def start(self, run_dir: Path, reference: str, cohort: str, rows: list[int], cols: list[int],
              topology: str) -> tuple[str | None, str]:
        """Start a sweep; returns (job id, message), or (None, why) when one of the same run and cohort runs."""
        with self._lock:
            for job in self._jobs.values():
                job.poll()
                if job.state == RUNNING and job.run_dir == Path(run_dir) and job.cohort == cohort:
                    return None, (f"a sweep of {cohort} is already running ({job.status()['done']} of {job.total} "
                                  f"grids); wait for it or cancel it")
            done, stop, outcome = self._context.Value("i", 0), self._context.Event(), self._context.Queue()
            # not a daemon: the sweep starts its own worker processes, which a daemon may not
            process = self._context.Process(
                target=_work, args=({"run_dir": str(run_dir), "reference": reference, "cohort": cohort,
                                     "rows": list(rows), "cols": list(cols), "topology": topology},
                                    done, stop, outcome),
                daemon=False, name=f"msma-sweep-{cohort}")
            process.start()
            job_id = uuid.uuid4().hex
            self._jobs[job_id] = SweepJob(Path(run_dir), cohort, len(rows) * len(cols), process, done, stop, outcome)
            finished = [k for k, j in self._jobs.items() if j.state != RUNNING]
            for k in finished[: max(0, len(self._jobs) - self.KEPT)]:
                del self._jobs[k]
        return job_id, f"sweeping {len(rows) * len(cols)} grids of {cohort}"

    def status(self, job_id) -> dict | None:
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        return None if job is None else job.status()

    def cancel(self, job_id) -> bool:
        """Ask the sweep to stop (it stops between grids); True if it was running."""
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        if job is None or job.status()["state"] != RUNNING:
            return False
        job.stop.set()
        return True

    def shutdown(self) -> None:
        """Stop every running sweep (tests, server exit)."""
        for job in list(self._jobs.values()):
            job.stop.set()
            job.process.join(timeout=5)
            if job.process.is_alive():
                job.process.terminate()


@dataclass
class ExportJob:
    """One browser export: a thread rendering the selection's figures into a zip held in memory until sent."""

    key: tuple
    name: str
    thread: threading.Thread | None = None
    done: int = 0
    total: int = 0
    figure: str = ""
    state: str = RUNNING
    message: str = ""
    data: bytes | None = None
    started: float = field(default_factory=time.monotonic)

    def status(self) -> dict:
        return {"state": self.state, "done": self.done, "total": self.total, "figure": self.figure,
                "message": self.message, "name": self.name, "seconds": round(time.monotonic() - self.started, 1)}


class ExportJobs:
    """Exports started from the browser, by job id: each renders in a thread (Kaleido drives Chromium in its own
    processes), reports figure by figure, and keeps its zip until the page fetches it. One export of the same
    selection and settings at a time."""

    KEPT = 8

    def __init__(self):
        self._jobs: dict[str, ExportJob] = {}
        self._lock = threading.Lock()

    def start(self, ex, cohort: str, units: list, settings, grid=None) -> tuple[str | None, str]:
        """Export the selection (on ``grid``'s map, a checked (rows, cols, topology); None: the run's map)."""
        from app.export import export_zip, zip_name
        from app.views import SOM_INPUTS

        key = (ex.run.run_id, cohort, tuple(map(tuple, units)), grid, settings)
        with self._lock:
            if any(j.key == key and j.state == RUNNING for j in self._jobs.values()):
                return None, "this selection is being exported already; its zip comes when it is done"
            job_id = uuid.uuid4().hex
            job = ExportJob(key, zip_name(ex, cohort, grid))
            self._jobs[job_id] = job
            for old in [k for k, j in self._jobs.items() if j.state != RUNNING][: max(0, len(self._jobs) - self.KEPT)]:
                del self._jobs[old]

        def progress(done: int, total: int, figure: str) -> None:
            job.done, job.total, job.figure = done, total, figure

        def work() -> None:
            try:
                job.data = export_zip(ex, cohort, units, settings, on_figure=progress, grid=grid)
            except Exception as exc:  # reported in the page, never raised into the server
                job.state, job.message = FAILED, f"{type(exc).__name__}: {exc}"
            else:
                job.state, job.message = FINISHED, f"{job.total} figures as PNG, SVG and PDF, with their numbers"

        job.thread = threading.Thread(target=work, name=f"msma-export-{cohort}", daemon=True)
        job.thread.start()
        where = "" if grid is None else f" on the {grid[0]} × {grid[1]} {grid[2]} map"
        if grid is not None and grid.norms != "msma":
            where += f" of {SOM_INPUTS[grid.norms]}"
        return job_id, f"exporting the {cohort} selection{where}"

    def status(self, job_id) -> dict | None:
        job = self._jobs.get(job_id) if isinstance(job_id, str) else None
        return None if job is None else job.status()

    def take(self, job_id) -> tuple[str, bytes] | None:
        """The finished zip (name, bytes), handed over once."""
        with self._lock:
            job = self._jobs.get(job_id) if isinstance(job_id, str) else None
            if job is None or job.state != FINISHED or job.data is None:
                return None
            data, job.data = job.data, None
        return job.name, data
