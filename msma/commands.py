"""The implementations of the ``msma`` subcommands (the parser is :mod:`msma.cli`).

Each command imports only what it needs, so ``msma validate`` stays quick and never loads torch. Each returns the
exit status: 0 on success, 1 when the study or run has problems (each printed with file, field, expected and found),
2 for a usage error.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def _report_problems(exc) -> int:
    print(str(exc), file=sys.stderr)
    return 1


def cmd_validate(args) -> int:
    from analysis.demo.config import read_demo_config
    from analysis.study.errors import ManifestError
    from analysis.study.manifest import load_manifest
    from analysis.study.validation import validate_study

    start = time.perf_counter()
    try:
        # The study schema leaves the demo: block's settings to the generator; validate checks them too.
        manifest = load_manifest(args.manifest, read_demo=read_demo_config)
        study = validate_study(manifest, progress=not args.quiet, check_voxels=not args.headers_only)
    except ManifestError as exc:
        return _report_problems(exc)
    print(study.summary())
    for warning in study.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"valid: {len(study.subjects)} subjects checked in {time.perf_counter() - start:.1f} s")
    return 0


def cmd_demo(args) -> int:
    from analysis.demo.config import demo_config_from_mapping, read_demo_config
    from analysis.demo.writer import build_demo_cohort, cohort_is_current, write_demo_study
    from analysis.study.errors import ManifestError, Problem
    from analysis.study.manifest import load_manifest
    from analysis.study.validation import validate_study

    timings: dict[str, float] = {}
    start = time.perf_counter()
    try:
        manifest = load_manifest(args.manifest, read_demo=read_demo_config)
        if manifest.demo is None:
            raise ManifestError(
                [Problem(str(args.manifest), "demo", "a demo: block describing the cohort to generate", "none")]
            )
        # Read again for the value: load_manifest has already reported any problem of the block.
        config = demo_config_from_mapping(manifest.demo.settings, str(Path(args.manifest)))
        if args.out is not None:
            manifest_path = write_demo_study(config, args.out, progress=not args.quiet)
            manifest = load_manifest(manifest_path)
            print(f"built the demo study in {args.out}")
        else:
            folder = manifest.resolve(config.folder)
            if cohort_is_current(config, folder) and not args.force:
                print(f"reusing the demo cohort in {folder} (same settings; --force rebuilds it)")
            else:
                truth = build_demo_cohort(config, folder, progress=not args.quiet)
                print(
                    f"built the demo cohort in {folder}: {len(truth['subjects'])} subjects, "
                    f"{truth['atlas']['labels_on_grid']} of {truth['atlas']['labels_named']} AAL labels on the "
                    f"{'x'.join(map(str, truth['grid']['shape']))} grid"
                )
        timings["build"] = time.perf_counter() - start
        study = validate_study(manifest, progress=not args.quiet)
        timings["validate"] = time.perf_counter() - start - timings["build"]
    except (ManifestError, FileExistsError) as exc:
        return _report_problems(exc)
    print(study.summary())
    status = _refresh_and_report(manifest, args, study=study)
    timings["refresh"] = time.perf_counter() - start - timings["build"] - timings["validate"]
    print("timings: " + ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()))
    if status != 0 or args.no_serve:
        return status
    return _serve(manifest, None, args)


def cmd_serve(args) -> int:
    from analysis.study.errors import ManifestError
    from analysis.study.manifest import load_manifest

    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as exc:
        return _report_problems(exc)
    return _serve(manifest, args.run_id, args)


def _serve(manifest, run_id, args) -> int:
    """Open the run and serve its explorer (or, with no run yet, a page naming the command that makes one)."""
    from analysis.runs.reader import RunNotFound, RunUnreadable, open_run
    from analysis.study.errors import ManifestError
    from app.server import LOOPBACK, serve, waiting_app

    if args.debug and args.host not in LOOPBACK:
        print(f"--debug with --host {args.host}: the debug server runs code sent to it; serve it on 127.0.0.1",
              file=sys.stderr)
        return 2
    try:
        run = open_run(manifest, run_id)
    except RunNotFound as exc:
        if run_id is not None:
            print(exc, file=sys.stderr)
            return 1
        command = f"msma refresh {manifest.path}"
        print(f"{exc}; serving a page that says to run: {command}", file=sys.stderr)
        app = waiting_app(manifest.study_name, f"The study has no published run yet ({exc}).", command)
        what = f"{manifest.study_name} (no run yet)"
    except (ManifestError, RunUnreadable) as exc:
        return _report_problems(exc)
    else:
        if args.cohort is not None and args.cohort not in run.cohorts:
            print(f"--cohort: expected one of {run.cohorts} (cohorts of run {run.run_id}), got {args.cohort!r}",
                  file=sys.stderr)
            return 2
        from app import create_app

        app, what = create_app(run, cohort=args.cohort), f"{run.study_name}, run {run.run_id},"
    try:
        serve(app, args.host, args.port, debug=args.debug, what=what)
    except OSError as exc:  # the port is taken, or the host is not an address of this machine
        print(f"msma serve: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0


def _refresh_and_report(manifest, args, study=None) -> int:
    from analysis.demo.truth import planted_truth
    from analysis.runs.report import format_report
    from analysis.runs.store import StoreBusy
    from analysis.study.errors import ManifestError
    from pipeline.refresh import RefreshError, refresh

    if args.keep_runs < 1:
        print("--keep-runs: expected a count >= 1", file=sys.stderr)
        return 2
    try:
        result = refresh(
            manifest,
            profile=args.profile,
            device=args.device,
            progress=not args.quiet,
            keep_runs=args.keep_runs,
            study=study,
            truth=planted_truth(manifest),
        )
    except (ManifestError, RefreshError, StoreBusy) as exc:
        return _report_problems(exc)
    print(format_report(result.run_dir))
    return 0


def cmd_refresh(args) -> int:
    from analysis.study.errors import ManifestError
    from analysis.study.manifest import load_manifest

    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as exc:
        return _report_problems(exc)
    return _refresh_and_report(manifest, args)


def cmd_report(args) -> int:
    import json

    from analysis.runs.report import format_report, report_data
    from analysis.runs.store import RunNotFound, RunStore
    from analysis.study.errors import ManifestError
    from analysis.study.manifest import load_manifest

    try:
        manifest = load_manifest(args.manifest)
        run_dir = RunStore(manifest.output_dir).latest()
    except (ManifestError, RunNotFound) as exc:
        return _report_problems(exc)
    try:
        text = json.dumps(report_data(run_dir), indent=2) if args.json else format_report(run_dir)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        print(f"{run_dir / 'run.json'}: not a readable msma run record ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    print(text)
    return 0


def cmd_evaluate_lesions(args) -> int:
    import json

    import numpy as np

    from analysis.lesions import LesionProtocol, evaluate_study_lesions
    from analysis.runs import layout
    from analysis.runs.report import format_lesion_table
    from analysis.runs.store import RunNotFound, RunStore, read_run
    from analysis.study.errors import ManifestError, Problem
    from analysis.study.manifest import load_manifest
    from analysis.study.validation import validate_study
    from analysis.study.volumes import atomic_write_bytes

    for flag, value, minimum in (("--thresholds", args.thresholds, 1), ("--jobs", args.jobs, 1),
                                 ("--min-size", args.min_size, 0), ("--dilation", args.dilation, 0)):
        if value < minimum:
            print(f"{flag}: expected a count >= {minimum}", file=sys.stderr)
            return 2
    protocol = LesionProtocol(n_thresholds=args.thresholds, min_size=args.min_size, dilation_radius=args.dilation)
    run_dir = None
    try:
        manifest = load_manifest(args.manifest)
        if manifest.lesions is None:
            raise ManifestError(
                [Problem(str(args.manifest), "lesions", "a lesions: block naming the ground-truth masks", "none")]
            )
        study = validate_study(manifest, progress=not args.quiet, check_voxels=False)
        run_dir = RunStore(manifest.output_dir).latest()
        record = (read_run(run_dir).get("spatial") or {}).get("lesions")
        wanted = list(study.lesions.index)
        if record is None or not set(wanted) <= set(record["subjects"]):
            missing = wanted if record is None else [i for i in wanted if i not in set(record["subjects"])]
            raise ManifestError(
                [
                    Problem(
                        str(run_dir / layout.RECORD.name),
                        "spatial.lesions.subjects",
                        "lesion maps of every subject in the lesions table (run msma refresh after editing it)",
                        f"none for {len(missing)} subjects, e.g. {missing[:3]}",
                    )
                ]
            )
        methods = list(record["maps"]["order"])
        maps_file = run_dir / layout.LESION_MAPS.name
        stack = np.load(maps_file, mmap_mode="r")
        expected = (len(record["subjects"]), len(methods), int(study.brain_mask.sum()))
        if stack.shape != expected:
            raise ManifestError(
                [Problem(str(maps_file), "shape", f"{expected} (subjects, methods, brain voxels of the current mask)",
                         f"{stack.shape}: the study changed since the refresh; run msma refresh")]
            )
    except (ManifestError, RunNotFound) as exc:
        return _report_problems(exc)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        where = run_dir if run_dir is not None else args.manifest
        print(f"{where}: unreadable study, run record or lesion maps ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    rows = [record["subjects"].index(i) for i in wanted]
    maps = {m: np.asarray(stack[rows, k]) for k, m in enumerate(methods)}
    del stack  # the copies above are all the evaluation needs; close the memory map
    try:
        evaluation = evaluate_study_lesions(study, maps, protocol, n_jobs=args.jobs, progress=not args.quiet)
        if args.out:
            atomic_write_bytes(args.out, evaluation.per_subject.to_csv(index=False).encode())
    except (OSError, ValueError) as exc:
        print(f"evaluate-lesions: {exc}", file=sys.stderr)
        return 1
    summary, failed = evaluation.summary, evaluation.failed
    if args.json:
        records = summary.astype(object).where(summary.notna(), None).to_dict(orient="records")
        payload = {"run_id": run_dir.name, "protocol": protocol.as_dict(), "summary": records,
                   "failed": failed.to_dict(orient="records")}
        print(json.dumps(payload, indent=2, default=float))
    else:
        print(f"run {run_dir.name}: {len(wanted)} subjects with lesion masks; protocol {protocol.as_dict()}")
        print(format_lesion_table(summary.to_dict(orient="records")))
        for _, row in failed.iterrows():
            print(f"not evaluated: {row['subject_id']} with {row['method']}: {row['note']}")
    return 0


def cmd_sweep(args) -> int:
    from analysis.exploration.sweep import SweepGrids, parse_range
    from analysis.runs.store import RunNotFound, RunStore
    from analysis.runs.sweeps import sweep_run
    from analysis.study.errors import ManifestError
    from analysis.study.manifest import load_manifest

    try:
        rows, cols = parse_range(args.rows, "--rows"), parse_range(args.cols, "--cols")
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        manifest = load_manifest(args.manifest)
        run_dir = RunStore(manifest.output_dir).latest()
    except (ManifestError, RunNotFound) as exc:
        return _report_problems(exc)
    try:
        table, out = sweep_run(run_dir, manifest.reference_cohort, args.cohort,
                               SweepGrids(rows=rows, cols=cols, topology=args.topology), n_jobs=args.jobs,
                               progress=not args.quiet)
    except ValueError as exc:
        print(f"--cohort: {exc}", file=sys.stderr)
        return 1
    stable = table[table["jaccard_neighbours"] >= 0.8]
    print(
        f"{len(table)} grids, rows {rows[0]}-{rows[-1]} x cols {cols[0]}-{cols[-1]}: maximal prototype of "
        f"{args.cohort} holds {table['size'].min()}-{table['size'].max()} of {table['cohort_size'].iloc[0]} subjects; "
        f"{len(stable)} grids overlap their neighbours by Jaccard >= 0.8"
    )
    print(f"table: {out}")
    return 0


EXPORT_FLAGS = {"cohort": "--cohort", "grid": "--grid", "units": "--units", "out_dir": "--out",
                "correction": "--correction", "alpha": "--alpha", "q": "--q", "scores": "--scores",
                "n_permutations": "--permutations", "crosshair": "--crosshair", "formats": "--formats"}
"""The option of ``msma export`` behind each argument an :class:`app.export.ExportError` names."""


def cmd_export(args) -> int:
    from tqdm.auto import tqdm

    from analysis.runs.reader import RunNotFound, RunUnreadable, open_run
    from analysis.study.errors import ManifestError
    from analysis.study.manifest import load_manifest
    from app.export import ExportError, ExportSettings, RenderError, check_grid, export_selection
    from app.views import SOM_INPUTS, Explorer, prototype_units

    try:
        run = open_run(load_manifest(args.manifest), args.run_id)
    except (ManifestError, RunNotFound, RunUnreadable) as exc:
        return _report_problems(exc)
    ex = Explorer(run)
    if args.cohort not in run.cohorts:
        print(f"--cohort: expected one of {run.cohorts} (cohorts of run {run.run_id}), got {args.cohort!r}",
              file=sys.stderr)
        return 2
    if args.topology is not None and args.grid is None:
        print(f"--topology: only with --grid (the run's map is {run.som.topology}); got {args.topology!r}",
              file=sys.stderr)
        return 2
    if args.som_input not in ex.som_inputs:
        print(f"--som-input: run {run.run_id} has no {args.som_input} norms (a refresh with a gnsm: block writes "
              f"them); expected {' or '.join(ex.som_inputs)}", file=sys.stderr)
        return 2
    refit = args.grid is not None or args.som_input != "msma"
    size = args.grid or (run.som.n_rows, run.som.n_cols)
    try:  # before any map is fitted: a grid the explorer cannot fit is a usage error naming --grid
        grid = check_grid(ex, (*size, args.topology or run.som.topology, args.som_input)) if refit else None
    except ExportError:
        print(f"--grid: expected ROWS,COLS with rows and columns from 2 to 30 (e.g. 5,6); got "
              f"{','.join(map(str, args.grid))!r}", file=sys.stderr)
        return 2
    som = ex.map(grid).som
    where = f"the {som.n_rows} x {som.n_cols} {som.topology} map" + (" refitted" if grid else " of the run")
    if grid is not None and grid.norms != "msma":
        where += f" on {SOM_INPUTS[grid.norms]}"
    units = args.units or prototype_units(ex, args.cohort, grid)
    if not units:
        print(f"--units: {args.cohort} has no prototype on {where} (run {run.run_id}); name units as ROW,COL",
              file=sys.stderr)
        return 2
    settings = ExportSettings(correction=args.correction, alpha=args.alpha, q=args.q, scores=args.scores,
                              n_permutations=args.permutations, crosshair=args.crosshair, formats=args.formats)
    bars = []

    def rendered(done: int, total: int, name: str) -> None:
        if not bars:  # the figures are built: the browser starts
            bars.append(tqdm(total=total, desc="rendering figures", unit="figure", disable=args.quiet))
        if done:
            bars[0].set_postfix_str(name, refresh=False)
            bars[0].update(1)

    start = time.perf_counter()
    try:
        paths = export_selection(ex, args.cohort, units, args.out, settings, on_figure=rendered, grid=grid)
    except ExportError as exc:
        flag = EXPORT_FLAGS.get(exc.argument, exc.argument)
        print(f"{flag}: expected {exc.expected}; got {exc.found!r}", file=sys.stderr)
        return 2 if exc.argument in EXPORT_FLAGS else 1
    except (RenderError, OSError) as exc:
        print(f"msma export: {exc}", file=sys.stderr)
        return 1
    finally:
        for bar in bars:
            bar.close()
    images = [p for p in paths if p.suffix.lstrip(".") in settings.formats]
    print(f"exported {len(images)} images of {len(images) // len(settings.formats)} figures of {args.cohort} "
          f"(units {', '.join(f'{r},{c}' for r, c in units)} on {where}) from run {run.run_id} in "
          f"{time.perf_counter() - start:.1f} s")
    print(f"folder: {paths[0].parent}")
    return 0


def cmd_tabular_fit(args) -> int:
    from analysis.tabular.schema import TabularError
    from pipeline.tabular import FitOptions, fit_tabular

    options = FitOptions(profile=args.profile, objective=args.objective, seed=args.seed,
                         max_minutes=args.max_minutes, progress=not args.quiet, variant=args.variant)
    try:
        result = fit_tabular(args.table, args.schema, args.out, options)
    except TabularError as exc:
        print(exc, file=sys.stderr)
        return 2
    except ValueError as exc:  # a setting out of range (--seed, --max-minutes)
        print(f"msma tabular fit: {exc}", file=sys.stderr)
        return 2
    training = result.training
    scores = result.scores
    print(f"fitted GNSM on {result.inliers} inlier rows of {result.rows} in {training.seconds:.0f} s "
          f"({training.steps} steps, stopped by {training.stopped.replace('_', ' ')}, best validation loss "
          f"{training.best_val_loss:.4f})")
    if (~scores["inlier"]).any():
        print(f"median score: inliers {scores.loc[scores['inlier'], 'score'].median():.2f}, other rows "
              f"{scores.loc[~scores['inlier'], 'score'].median():.2f} (higher = more anomalous)")
    print(f"model folder: {result.folder}")
    return 0


def cmd_tabular_score(args) -> int:
    from analysis.tabular.schema import TabularError
    from pipeline.tabular import score_tabular

    try:
        scores, paths = score_tabular(args.model, args.table, args.out)
    except TabularError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"scored {len(scores)} rows of {args.table}; highest score {scores['score'].max():.2f} "
          f"({scores.loc[scores['score'].idxmax(), 'id']})")
    print("scores: " + ", ".join(str(p) for p in paths))
    return 0
