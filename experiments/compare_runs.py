"""Whether two published runs hold the same numbers: every table, array and NIfTI heatmap, and every ``run.json``
section but provenance and timings.

Usage: .venv/bin/python experiments/compare_runs.py RUN_DIR RUN_DIR

Used to check that a change of code layout reproduces a release's run: compare a fresh clone's ``make demo`` run
with the run of the release before. Parquet tables are compared with ``pandas.testing.assert_frame_equal``, arrays
exactly (NaN equal to NaN), NIfTI heatmaps byte for byte. In ``run.json`` the run's id, creation time, package
versions, manifest path, timings, the score passes' key (it hashes the checkpoint file) and what each training
reused or how long it took are left out, and the flows' training histories are compared by value whatever their
format. The last line is a JSON object: the differences found and the files compared.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

PROVENANCE = {"run_id", "created_utc", "versions", "timings_s", "score_passes"}
"""Sections that differ between any two runs."""
VOLATILE = {"reused", "train_seconds", "path", "key", "resumed_from_step"}
"""Keys, at any depth, that record how a run was made rather than what it holds."""


def _history_values(history) -> list:
    """A training history as rows of (step, train loss, validation loss), from either history format."""
    if isinstance(history, dict):
        return [list(row) for row in zip(history["step"], history["train_loss"], history["val_loss"], strict=True)]
    return [[row["step"], row.get("train_nll"), row.get("val_nll")] for row in history]


def _differences(a, b, path: str) -> list[str]:
    if isinstance(a, dict) and isinstance(b, dict):
        found = []
        for key in sorted(set(a) | set(b)):
            if key in VOLATILE or (path == "/manifest" and key == "path"):
                continue
            if key not in a or key not in b:
                found.append(f"{path}/{key}: only in {'first' if key in a else 'second'}")
            elif key == "history":
                if _history_values(a[key]) != _history_values(b[key]):
                    found.append(f"{path}/{key}")
            else:
                found += _differences(a[key], b[key], f"{path}/{key}")
        return found
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [d for k, (x, y) in enumerate(zip(a, b, strict=True)) for d in _differences(x, y, f"{path}[{k}]")]
    return [] if a == b else [path]


def _file_differs(first: Path, second: Path) -> bool:
    if first.suffix == ".parquet":
        try:
            pd.testing.assert_frame_equal(pd.read_parquet(first), pd.read_parquet(second))
        except AssertionError:
            return True
        return False
    if first.suffix == ".npy":
        x, y = np.load(first, mmap_mode="r"), np.load(second, mmap_mode="r")
        return x.shape != y.shape or not np.array_equal(np.asarray(x), np.asarray(y), equal_nan=True)
    if first.name.endswith(".nii.gz"):
        return first.read_bytes() != second.read_bytes()
    return False  # checkpoints: their weights show in every number above; their bytes hold the file's history


def main(first: str, second: str) -> None:
    a, b = Path(first), Path(second)
    files_a = {p.relative_to(a) for p in a.rglob("*") if p.is_file()}
    files_b = {p.relative_to(b) for p in b.rglob("*") if p.is_file()}
    differences = [f"{name}: only in one run" for name in sorted(map(str, files_a ^ files_b))]
    common = sorted(files_a & files_b)
    differences += [str(name) for name in common if _file_differs(a / name, b / name)]
    record_a, record_b = (json.loads((run / "run.json").read_text()) for run in (a, b))
    for section in sorted((set(record_a) | set(record_b)) - PROVENANCE):
        differences += _differences(record_a.get(section), record_b.get(section), f"run.json/{section}")
    for difference in differences:
        print(f"differs: {difference}")
    print(json.dumps({"first": a.name, "second": b.name, "files_compared": len(common), "differences": differences}))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: compare_runs.py RUN_DIR RUN_DIR")
    main(*sys.argv[1:])
