"""Server time of the explorer's callbacks, time to the first page, and the server's memory.

Usage: .venv/bin/python bench/app_latency.py [--manifest data_manifest.yaml] [--subjects 2000] [--repeats 15]

Two runs are measured: the study's latest run (the demo after ``make demo``) and a generated run of ``--subjects``
synthetic subjects on the same grid (:mod:`analysis.demo.synthetic_run`: synthetic tables, a memory-mapped heatmap
stack, the demo's cohort proportions, a subgroup raised in 40 regions so the live chain is as heavy as in ch. 6.3: 40
ROIs x 35 behaviour scores at the refresh's 10,000 permutations). For each:

- ``permutation_table_ms``: the behaviour correlations of every ROI the cohort's selections can make significant
  (its kept ROIs), computed once per cohort and permutation count; each selection then reads its ROIs from it;
- ``callbacks_ms``: p50 and p95 of each callback, called as the plain functions the app wires (app.callbacks), over
  selections that cycle through the opening cohort's prototype and random groups of 1-6 SOM units holding some of its
  members; ``selection_change_ms`` sums the callbacks one selection change runs (selection, SOM map, region step,
  correlations, slices), ``crosshair_ms`` those of a click on a slice;
- ``http_ms``: the same callbacks as POSTs to ``/_dash-update-component`` of a ``msma serve`` process on loopback
  (waitress), and ``http_noop_ms``, the round trip of a callback that returns nothing, the reference the others are
  read against (``http_over_noop``);
- ``first_page_s``: from starting ``msma serve`` to the page, its layout (every first figure) and its callbacks
  answering;
- ``rss_mb`` / ``peak_rss_mb``: that server's resident memory after the requests (VmRSS, VmHWM).

The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

from analysis.demo.synthetic_run import write_synthetic_study
from analysis.runs.reader import open_run
from analysis.study.manifest import load_manifest
from app import callbacks, create_app, default_cohort, ids, views
from app.callbacks import SliceControls
from app.layout import DEFAULT_THRESHOLD
from app.views import Explorer

REPO = Path(__file__).resolve().parents[1]


def _selections(ex: Explorer, cohort: str, n: int, rng: random.Random) -> list[dict]:
    """The prototype first, then random groups of 1-6 units that hold some of the cohort's members."""
    members = ex.run.subjects[ex.run.subjects["cohort"] == cohort]
    units = sorted({(int(r), int(c)) for r, c in zip(members["bmu_row"], members["bmu_col"], strict=True)})
    out = [{"cohort": cohort, "units": views.prototype_units(ex, cohort)}]
    while len(out) < n:
        k = rng.randint(1, min(6, len(units)))
        out.append({"cohort": cohort, "units": [list(u) for u in rng.sample(units, k)]})
    return out


def _percentiles(values: list[float]) -> dict:
    return {"p50": round(float(np.percentile(values, 50)), 1), "p95": round(float(np.percentile(values, 95)), 1)}


def time_functions(ex: Explorer, cohort: str, repeats: int, seed: int = 0) -> tuple[dict, list[dict]]:
    """Each callback of a selection change and of a crosshair click, as plain functions (ms)."""
    permutations = ex.refresh_permutations()
    times: dict[str, list[float]] = {k: [] for k in ("selection", "som", "regions", "correlations", "slices",
                                                     "crosshair", "crosshair_slices")}
    changes, clicks = [], []
    selections = _selections(ex, cohort, repeats + 1, random.Random(seed))
    for k, selection in enumerate(selections):
        crosshair = {"voxel": views.start_voxel(ex, cohort), "roi": None, "plane": "axial", "moved": []}
        marks = [time.perf_counter()]
        points = {"points": [{"customdata": u} for u in selection["units"]]}
        chosen = callbacks.choose_selection(ex, ids.SOM_GRAPH, cohort, points, selection)
        marks.append(time.perf_counter())
        callbacks.draw_som(ex, chosen, "u_matrix")
        marks.append(time.perf_counter())
        _, _, regions, _ = callbacks.update_regions(ex, chosen, "bonferroni", "0.05", "10", ex.run.default_roi_scores,
                                                    crosshair)
        marks.append(time.perf_counter())
        callbacks.update_correlations(ex, regions, "0.1", permutations, "full")
        marks.append(time.perf_counter())
        callbacks.draw_slices(ex, ids.SELECTION, chosen, crosshair,
                              SliceControls(DEFAULT_THRESHOLD, 0.85, False, "auto", 3))
        marks.append(time.perf_counter())
        g = ex.geometry
        click = {"axial": {"points": [{"x": float(g.coordinates(0)[k % g.shape[0]]),
                                       "y": float(g.coordinates(1)[k % g.shape[1]])}]}}
        moved = callbacks.move_crosshair(ex, ids.SLICE_GRAPHS["axial"], click, None, None, crosshair, chosen)
        marks.append(time.perf_counter())
        callbacks.draw_slices(ex, ids.CROSSHAIR, chosen, moved,
                              SliceControls(DEFAULT_THRESHOLD, 0.85, False, "auto", 3))
        marks.append(time.perf_counter())
        if k == 0:
            continue  # warm-up: first reads of the memory map, thread pool start
        steps = np.diff(marks) * 1e3
        for name, value in zip(times, steps, strict=True):
            times[name].append(value)
        changes.append(float(steps[:5].sum()))
        clicks.append(float(steps[5:].sum()))
    result = {name: _percentiles(values) for name, values in times.items()}
    return {"callbacks_ms": result, "selection_change_ms": _percentiles(changes),
            "crosshair_ms": _percentiles(clicks)}, selections[1:]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float = 5.0) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


class DashClient:
    """POSTs callback requests to a running explorer, shaped as the Dash renderer shapes them."""

    def __init__(self, base: str):
        self.base = base
        self.callbacks = {c["output"]: c for c in json.loads(_get(base + "_dash-dependencies"))}

    def call(self, output_prefix: str, values: dict, changed: str) -> tuple[float, dict]:
        key = next(k for k in self.callbacks if k.lstrip(".").startswith(output_prefix))
        spec = self.callbacks[key]
        parts = key.strip(".").split("...")
        outputs = [dict(zip(("id", "property"), p.split(".", 1), strict=True)) for p in parts]
        body = {
            "output": key,
            "outputs": outputs if len(outputs) > 1 else outputs[0],
            "inputs": [{**i, "value": values.get(f"{i['id']}.{i['property']}")} for i in spec["inputs"]],
            "state": [{**s, "value": values.get(f"{s['id']}.{s['property']}")} for s in spec["state"]],
            "changedPropIds": [changed],
        }
        request = urllib.request.Request(self.base + "_dash-update-component", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"})
        start = time.perf_counter()
        with urllib.request.urlopen(request, timeout=30) as response:
            payload = response.read()
        elapsed = (time.perf_counter() - start) * 1e3
        return elapsed, json.loads(payload) if payload else {}


def time_server(manifest: Path, ex: Explorer, cohort: str, selections: list[dict]) -> dict:
    port = _free_port()
    base = f"http://127.0.0.1:{port}/"
    start = time.perf_counter()
    process = subprocess.Popen([str(Path(sys.executable).with_name("msma")), "serve", str(manifest), "--port",
                                str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    try:
        first_page = None
        while time.perf_counter() - start < 60:
            try:
                _get(base)
                _get(base + "_dash-layout")
                _get(base + "_dash-dependencies")
                first_page = time.perf_counter() - start
                break
            except OSError:
                time.sleep(0.02)
        if first_page is None:
            raise RuntimeError(f"msma serve did not answer within 60 s: {process.stderr.read().decode()[-2000:]}")
        client = DashClient(base)
        permutations = str(ex.refresh_permutations())
        times: dict[str, list[float]] = {k: [] for k in ("noop", "selection", "som", "regions", "correlations",
                                                         "slices")}
        controls = {f"{ids.CORRECTION}.value": "bonferroni", f"{ids.ALPHA}.value": "0.05",
                    f"{ids.ROI_COUNT}.value": "10", f"{ids.FDR}.value": "0.1",
                    f"{ids.PERMUTATIONS}.value": permutations, f"{ids.CORRELATION_MODE}.value": "full",
                    f"{ids.SOM_LAYER}.value": "u_matrix", f"{ids.THRESHOLD}.value": DEFAULT_THRESHOLD,
                    f"{ids.OPACITY}.value": 0.85, f"{ids.RADIOLOGICAL}.value": False,
                    f"{ids.RANGE_MODE}.value": "auto", f"{ids.RANGE_MAX}.value": 3, f"{ids.COHORT}.value": cohort,
                    f"{ids.ROI_SCORES}.value": ex.run.default_roi_scores, f"{ids.RUN}.data": ex.run.run_id}
        for k, selection in enumerate([selections[0], *selections]):
            crosshair = {"voxel": views.start_voxel(ex, cohort), "roi": None, "plane": "axial", "moved": []}
            values = {**controls, f"{ids.SELECTION}.data": selection, f"{ids.CROSSHAIR}.data": crosshair,
                      f"{ids.SOM_GRAPH}.selectedData": {"points": [{"customdata": u} for u in selection["units"]]}}
            noop, _ = client.call(ids.SELECTION, {**values, f"{ids.SOM_GRAPH}.selectedData": {"points": []}},
                                  f"{ids.SOM_GRAPH}.selectedData")
            chosen, _ = client.call(ids.SELECTION, values, f"{ids.SOM_GRAPH}.selectedData")
            som, _ = client.call(ids.SOM_GRAPH, values, f"{ids.SELECTION}.data")
            regions_ms, response = client.call(ids.ROI_GRAPH, values, f"{ids.SELECTION}.data")
            regions = response["response"][ids.REGIONS]["data"]
            correlations, _ = client.call(ids.CORRELATION_GRAPH, {**values, f"{ids.REGIONS}.data": regions},
                                          f"{ids.REGIONS}.data")
            slices, _ = client.call(ids.SLICE_GRAPHS["axial"], values, f"{ids.SELECTION}.data")
            if k == 0:
                continue
            for name, value in zip(times, (noop, chosen, som, regions_ms, correlations, slices), strict=True):
                times[name].append(value)
        status = Path(f"/proc/{process.pid}/status").read_text()
        memory = {line.split(":")[0]: int(line.split()[1]) / 1024 for line in status.splitlines()
                  if line.startswith(("VmRSS", "VmHWM"))}
    finally:
        process.terminate()
        process.wait(timeout=10)
    noop = float(np.median(times.pop("noop")))
    http = {name: _percentiles(values) for name, values in times.items()}
    return {
        "first_page_s": round(first_page, 2),
        "http_ms": http,
        "http_noop_ms": round(noop, 1),
        "http_over_noop": {name: round(v["p95"] / noop, 1) for name, v in http.items()},
        "rss_mb": round(memory["VmRSS"]),
        "peak_rss_mb": round(memory["VmHWM"]),
    }


def measure(manifest: Path, repeats: int) -> dict:
    run = open_run(manifest)
    start = time.perf_counter()
    app = create_app(run)
    create_s = time.perf_counter() - start
    del app
    ex = Explorer(run)
    cohort = default_cohort(run)
    start = time.perf_counter()
    table = ex.behaviour_table(cohort, ex.refresh_permutations(), ex.run.default_roi_scores)
    cold_ms = (time.perf_counter() - start) * 1e3
    functions, selections = time_functions(ex, cohort, repeats)
    server = time_server(manifest, ex, cohort, selections)
    hypotheses = run.record["hypotheses"].get(cohort) or {}
    return {
        "subjects": len(run.subjects),
        "cohort": cohort,
        "cohort_size": len(run.cohort_ids(cohort)),
        "significant_rois_of_prototype": len(hypotheses.get("significant_rois", [])),
        "behaviour_scores": 0 if run.behaviour is None else run.behaviour.shape[1],
        "create_app_s": round(create_s, 2),
        "permutation_table_rois": 0 if table is None else len(table.rois),
        "permutation_table_ms": round(cold_ms, 1),
        **functions,
        **server,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "data_manifest.yaml")
    parser.add_argument("--subjects", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    results = {"cpus": os.cpu_count()}
    manifest = load_manifest(args.manifest)
    try:
        results["demo"] = measure(manifest.path, args.repeats)
    except Exception as exc:  # no run yet: measure the synthetic run only, and say so
        results["demo"] = f"not measured: {exc} (run make demo first)"
    grid_from = manifest if manifest.template.image.is_file() else None
    with tempfile.TemporaryDirectory() as folder:
        study = write_synthetic_study(Path(folder) / "study", args.subjects, grid_from=grid_from)
        results[f"synthetic_{args.subjects}"] = measure(study, args.repeats)
        results[f"synthetic_{args.subjects}"]["grid"] = "demo template" if grid_from else "toy grid"
    print(json.dumps(results))


if __name__ == "__main__":
    main()
