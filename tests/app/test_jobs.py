"""Sweeps started from the explorer: a worker process writes the same table as ``msma sweep``, reports its
progress, refuses a second sweep of the cohort while one runs, and stops when cancelled without touching the
run's table."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from analysis.demo.synthetic_run import write_synthetic_study
from analysis.exploration.sweep import SweepGrids, grid_stability_sweep
from analysis.runs import layout
from analysis.runs.reader import open_run
from app.jobs import SweepJobs


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return open_run(write_synthetic_study(tmp_path_factory.mktemp("jobs") / "study", 160, seed=4))


def _wait(jobs, job_id, timeout_s: float = 120) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        status = jobs.status(job_id)
        if status["state"] != "running":
            return status
        time.sleep(0.2)
    raise AssertionError(f"the sweep did not end in {timeout_s} s: {jobs.status(job_id)}")


def test_a_sweep_job_writes_msma_sweeps_table_and_reports_progress(run):
    jobs = SweepJobs()
    job_id, message = jobs.start(run.run_dir, run.reference_cohort, "down_syndrome", [4, 5], [5, 6], "rectangular")
    assert job_id is not None and "4 grids" in message
    again, why = jobs.start(run.run_dir, run.reference_cohort, "down_syndrome", [4], [5], "rectangular")
    assert again is None and "already running" in why
    status = _wait(jobs, job_id)
    assert status["state"] == "finished", status
    assert status["done"] == status["total"] == 4
    written = pd.read_parquet(run.run_dir / layout.sweep_file("down_syndrome"))
    norms = run.score_norms.to_numpy(dtype=float)
    labels = run.subjects["cohort"].to_numpy()
    expected = grid_stability_sweep(norms, labels, "down_syndrome", reference=labels == run.reference_cohort,
                                    grids=SweepGrids(rows=[4, 5], cols=[5, 6]), n_jobs=1, progress=False)
    ids = run.subjects.index.to_numpy()
    assert written["members"].map(list).tolist() == [[str(ids[i]) for i in m] for m in expected["members"]]
    assert written["size"].tolist() == expected["size"].tolist()
    assert (written["topology"] == "rectangular").all()


def test_a_cancelled_sweep_leaves_the_runs_table_as_it_was(run):
    path = run.run_dir / layout.sweep_file("autism")
    assert not path.exists()
    jobs = SweepJobs()
    job_id, _ = jobs.start(run.run_dir, run.reference_cohort, "autism", list(range(3, 16)), list(range(3, 16)),
                           "rectangular")
    while jobs.status(job_id)["done"] < 1 and jobs.status(job_id)["state"] == "running":
        time.sleep(0.05)
    assert jobs.cancel(job_id) is True
    status = _wait(jobs, job_id, 60)
    assert status["state"] == "cancelled" and status["done"] < status["total"]
    assert not path.exists()
    assert jobs.cancel(job_id) is False
