"""Time to export every figure of one selection in PNG, SVG and PDF (app.export), against references measured in the
same run.

Usage: .venv/bin/python bench/export.py [--manifest data_manifest.yaml] [--synthetic] [--cohort NAME] [--repeats 2]

The selection is the one the explorer opens on: the default cohort (or ``--cohort``) with its prototype's units. The
run is the study's latest (the demo after ``make demo``); with ``--synthetic``, or when the study has no run, a
synthetic published run of the demo's cohort proportions on a toy grid with a 7 x 7 grid-stability sweep
(:mod:`analysis.demo.synthetic_run`). Measured, in seconds:

- ``export_s``: :func:`app.export.export_selection` into a new folder, median of ``--repeats``, on an explorer that
  has the cohort's permutation table (as the explorer's download button finds it): building the figures, one Kaleido
  browser rendering all of them in every format, writing images, CSV and JSON. The target is 15 s on 2 cores;
- its parts: ``figures_s`` (the views and the print style), ``render_s`` (one browser, every image) and
  ``images_per_s``;
- ``first_export_s``: the first export on a fresh explorer (``msma export``'s case: it computes the cohort's
  permutation table at the refresh's count first);
- the references: ``kaleido_start_s``, one Kaleido browser started with the export's pages and closed without a
  figure (the fixed cost of any export), and ``to_json_s``, plotly's ``to_json`` of the same figures (what
  serialising them costs); ``export_over_kaleido_start`` and ``render_over_to_json`` relate the export to them.

The last line is a JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from analysis.demo.synthetic_run import write_synthetic_study
from analysis.exploration.sweep import SweepGrids, grid_stability_sweep
from analysis.runs import layout
from analysis.runs.reader import RunNotFound, open_run
from analysis.runs.store import write_table
from app import default_cohort, export
from app.views import Explorer, prototype_units

REPO = Path(__file__).resolve().parents[1]
TARGET_S = 15.0


def synthetic_run(folder: Path):
    """A synthetic published run with a 7 x 7 sweep of its planted cohort, so every kind of figure is exported."""
    run = open_run(write_synthetic_study(folder / "study", 488, seed=0))
    cohort = default_cohort(run)
    labels = run.subjects["cohort"].to_numpy()
    table = grid_stability_sweep(run.score_norms.to_numpy(dtype=float), labels, cohort,
                                 reference=labels == run.reference_cohort,
                                 grids=SweepGrids(rows=range(3, 10), cols=range(3, 10)), progress=False)
    table["members"] = [[str(run.subjects.index[i]) for i in m] for m in table["members"]]
    write_table(run.run_dir / layout.sweep_file(cohort), table)
    return run


def kaleido_start(pages: int) -> float:
    """Seconds to start and close one Kaleido browser with its pages, as :func:`app.export.render_images` does."""
    async def start_and_close() -> None:
        async with export._browser_class()(n=pages, timeout=export.RENDER_TIMEOUT_S,
                                           mathjax=False, path=export.chromium_path()):
            pass

    start = time.perf_counter()
    asyncio.run(start_and_close())
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifest", type=Path, default=REPO / "data_manifest.yaml")
    parser.add_argument("--synthetic", action="store_true", help="export from a synthetic run instead of the latest")
    parser.add_argument("--cohort", help="the selection's cohort (default: the one the explorer opens on)")
    parser.add_argument("--repeats", type=int, default=2, help="timed exports on the warm explorer (default 2)")
    args = parser.parse_args()
    if export.chromium_path() is None:
        raise SystemExit("bench/export.py: no Chromium (apt-get install chromium, or set BROWSER_PATH)")
    with tempfile.TemporaryDirectory(prefix="msma-bench-export-") as scratch:
        scratch = Path(scratch)
        source = "synthetic"
        run = None
        if not args.synthetic:
            try:
                run, source = open_run(args.manifest), "latest run"
            except (RunNotFound, OSError, ValueError) as exc:
                print(f"no run of {args.manifest} ({exc}); using a synthetic run")
        if run is None:
            run = synthetic_run(scratch)
        ex = Explorer(run)
        cohort = args.cohort or default_cohort(run)
        units = prototype_units(ex, cohort)
        print(f"{source} {run.run_id}: {cohort}, units {units}, {len(run.subjects)} subjects, grid "
              f"{'x'.join(map(str, run.study.grid.shape))}")

        start = time.perf_counter()
        first = export.export_selection(ex, cohort, units, scratch / "first")
        first_s = time.perf_counter() - start

        start = time.perf_counter()
        figures, settings = export.selection_figures(ex, cohort, units)
        figures_s = time.perf_counter() - start
        start = time.perf_counter()
        for item in figures:
            item.figure.to_json()
        to_json_s = time.perf_counter() - start
        start = time.perf_counter()
        images = export.render_images(figures, settings.formats)
        render_s = time.perf_counter() - start

        times = []
        for k in range(max(1, args.repeats)):
            start = time.perf_counter()
            export.export_selection(ex, cohort, units, scratch / f"export-{k}")
            times.append(time.perf_counter() - start)
        pages = export.default_pages(len(figures))
        start_s = statistics.median(kaleido_start(pages) for _ in range(2))

    export_s = statistics.median(times)
    print(f"{len(figures)} figures ({', '.join(f.name for f in figures)}), {len(images)} images, {len(first)} files")
    print(json.dumps({
        "source": source, "run_id": run.run_id, "cohort": cohort, "units": units, "figures": len(figures),
        "images": len(images), "formats": list(settings.formats), "sweep": any(f.name == "sweep" for f in figures),
        "cores": os.cpu_count(), "pages": pages, "load_average_1min": round(os.getloadavg()[0], 2),
        "export_s": round(export_s, 2), "export_runs_s": [round(t, 2) for t in times],
        "figures_s": round(figures_s, 2), "render_s": round(render_s, 2),
        "images_per_s": round(len(images) / render_s, 2), "first_export_s": round(first_s, 2),
        "kaleido_start_s": round(start_s, 2), "to_json_s": round(to_json_s, 3),
        "export_over_kaleido_start": round(export_s / start_s, 2),
        "render_over_to_json": round(render_s / to_json_s, 1),
        "target_s": TARGET_S, "within_target": export_s <= TARGET_S,
    }))


if __name__ == "__main__":
    main()
