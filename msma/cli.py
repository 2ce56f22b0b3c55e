"""``msma``: the command line of msma-explorer.

Each subcommand imports only what it needs, so ``msma validate`` stays quick and never loads torch.
Exit status: 0 on success, 1 when the study has problems (each printed with file, field, expected and found),
2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from analysis.lesions.protocol import LESION_PROTOCOL

DEFAULT_MANIFEST = "data_manifest.yaml"


def _add_manifest(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "manifest",
        nargs="?",
        default=DEFAULT_MANIFEST,
        help=f"the study's manifest (default: {DEFAULT_MANIFEST} in the current folder)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="msma",
        description="msma-explorer: multiscale score-matching anomaly scores for brain MRI cohorts.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = commands.add_parser(
        "validate",
        help="check a study's manifest and every file it names",
        description="Check the manifest and every file it names; print a summary of the study, or every problem "
        "found (file, field or row, expected, found) and exit 1.",
    )
    _add_manifest(validate)
    validate.add_argument(
        "--headers-only",
        action="store_true",
        help="read only the NIfTI headers of subject volumes (shape, affine), not their voxels (faster)",
    )
    validate.add_argument("--quiet", action="store_true", help="no progress bar")
    validate.set_defaults(run=_cmd_validate)

    demo = commands.add_parser(
        "demo",
        help="build the embedded demo study from the real MNI152 template and AAL atlas, refresh it and serve "
        "the explorer",
        description="Generate the demo cohort described by the manifest's demo: block (subjects, behaviour "
        "table, ground truth) and validate the manifest. A cohort already built from the same settings is "
        "reused.",
    )
    _add_manifest(demo)
    demo.add_argument(
        "--out",
        type=Path,
        help="build a self-contained demo study (cohort + its own data_manifest.yaml) in this folder instead",
    )
    demo.add_argument("--force", action="store_true", help="rebuild the cohort even if it is up to date")
    demo.add_argument(
        "--no-serve",
        action="store_true",
        help="stop after the refresh; do not start the explorer (CI and scripts)",
    )
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_model_options(demo)
    _add_serve_options(demo)
    demo.set_defaults(run=_cmd_demo)

    serve = commands.add_parser(
        "serve",
        help="open the explorer on the latest (or a named) run of the study",
        description="Serve the explorer of a study's published run in the browser: the SOM map, brain slices, ROI "
        "box plots and behaviour correlations, linked, with the statistics rerun live for any selection. Binds "
        "127.0.0.1 (this machine only) unless --host says otherwise; a study without a run gets a page saying which "
        "command makes one.",
    )
    _add_manifest(serve)
    serve.add_argument("--run", dest="run_id", metavar="RUN_ID", help="serve this run instead of the latest")
    _add_serve_options(serve)
    serve.set_defaults(run=_cmd_serve)

    refresh = commands.add_parser(
        "refresh",
        help="train (or reuse) the score model and the Spatial-MSMA flow, score and map every subject, run the SOM "
        "and the ch. 6.3 chain, and publish a new run",
        description="Validate the study, train the score model on the reference cohort (or reuse the checkpoint "
        "trained on the same data with the same settings), compute every subject's multiscale score norms, fit the "
        "MSMA detectors and publish a new versioned run in the manifest's output_dir. A refresh that fails or is "
        "killed leaves the previous run published.",
    )
    _add_manifest(refresh)
    refresh.add_argument("--quiet", action="store_true", help="no progress bars")
    _add_model_options(refresh)
    refresh.set_defaults(run=_cmd_refresh)

    report = commands.add_parser(
        "report",
        help="print the latest run's headline figures: detection metrics, SOM prototypes, hypothesis chain, lesion "
        "table",
        description="Print the latest published run's headline figures: detection metrics of every cohort "
        "against the held-out reference test subjects, for each detector.",
    )
    _add_manifest(report)
    report.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    report.set_defaults(run=_cmd_report)

    lesions = commands.add_parser(
        "evaluate-lesions",
        help="lesion detection metrics of the latest run's heatmaps and baselines (table 5.1)",
        description="Evaluate the latest run's Spatial-MSMA heatmaps and the baseline maps of the subjects in the "
        "manifest's lesions: table against their ground-truth masks: per subject, the threshold minimising the "
        "symmetric mean surface distance, components under --min-size voxels removed, dilation by a ball of "
        "--dilation; then the directed 99th-percentile Hausdorff distance and mean surface distance (mm, ground "
        "truth to prediction) and component-wise TPR and PPV, as mean ± standard error per lesion group, beside the "
        "threshold-free voxel AUROC, the TPR at 0 FP (lesions found before any voxel away from them is flagged) "
        "and the fraction of the brain segmented.",
    )
    _add_manifest(lesions)
    lesions.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    protocol = LESION_PROTOCOL
    lesions.add_argument("--thresholds", type=int, default=protocol.n_thresholds,
                         help=f"candidate thresholds per subject (default {protocol.n_thresholds})")
    lesions.add_argument("--min-size", type=int, default=protocol.min_size,
                         help=f"smallest component kept, in voxels (default {protocol.min_size})")
    lesions.add_argument("--dilation", type=int, default=protocol.dilation_radius,
                         help=f"dilation radius in voxels (default {protocol.dilation_radius})")
    lesions.add_argument("--jobs", type=int, default=2, help="worker processes (default 2)")
    lesions.add_argument("--out", default=None, help="also write the per-subject metrics to this CSV file")
    lesions.add_argument("--quiet", action="store_true", help="no progress bar")
    lesions.set_defaults(run=_cmd_evaluate_lesions)

    sweep = commands.add_parser(
        "sweep",
        help="SOM grid-stability sweep of a cohort's maximal prototype over grid sizes; adds sweep_<cohort>.parquet "
        "to the run",
        description="For every SOM grid size, fit the map on the latest run's score norms and record the cohort's "
        "maximal prototype (unit, size, members), the map's errors and the Jaccard overlap of the members with "
        "neighbouring grid sizes. The table is added to the run as sweep_<cohort>.parquet.",
    )
    _add_manifest(sweep)
    sweep.add_argument("--cohort", required=True, help="the cohort whose maximal prototype is followed")
    sweep.add_argument("--rows", default="3:15", help="grid rows FIRST:LAST, inclusive (default 3:15)")
    sweep.add_argument("--cols", default="3:15", help="grid columns FIRST:LAST, inclusive (default 3:15)")
    sweep.add_argument("--topology", default="rectangular", choices=["rectangular", "hexagonal"])
    sweep.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar")
    sweep.set_defaults(run=_cmd_sweep)
    return parser


def _add_model_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        default="default",
        choices=["default", "gpu-2mm", "fast"],
        help="model size and training length: default (CPU, 4-6 mm grids), gpu-2mm (GPU, 2 mm grids), fast "
        "(tiny smoke-test model whose scores mean little) (default: default)",
    )
    parser.add_argument(
        "--device",
        default="cpu",
        help="cpu, cuda (bfloat16 mixed precision) or auto (cuda when available) (default: cpu)",
    )
    parser.add_argument("--keep-runs", type=int, default=3, help="published runs to keep (default: 3)")


def _port(value: str) -> int:
    try:
        port = int(value)
    except ValueError:
        port = 0
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"expected a port number in 1-65535, got {value!r}")
    return port


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=_port, default=8050, help="port (default 8050)")
    parser.add_argument("--cohort", help="cohort to open on (default: the one with the most concentrated prototype)")
    parser.add_argument("--debug", action="store_true", help="Flask's debug server with Dash dev tools (not for "
                        "shared machines)")


def _version() -> str:
    from importlib.metadata import version

    return version("msma-explorer")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def _report_problems(exc) -> int:
    print(str(exc), file=sys.stderr)
    return 1


def _cmd_validate(args) -> int:
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
    print(f"valid: {len(study.subjects)} subjects checked in {time.perf_counter() - start:.1f} s")
    return 0


def _cmd_demo(args) -> int:
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


def _cmd_serve(args) -> int:
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


def _cmd_refresh(args) -> int:
    from analysis.study.errors import ManifestError
    from analysis.study.manifest import load_manifest

    try:
        manifest = load_manifest(args.manifest)
    except ManifestError as exc:
        return _report_problems(exc)
    return _refresh_and_report(manifest, args)


def _cmd_report(args) -> int:
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


def _cmd_evaluate_lesions(args) -> int:
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

    if args.jobs < 1:
        print("--jobs: expected a count >= 1", file=sys.stderr)
        return 2
    try:
        protocol = LesionProtocol(n_thresholds=args.thresholds, min_size=args.min_size, dilation_radius=args.dilation)
    except ValueError as exc:
        flag = {"n_thresholds": "--thresholds", "min_size": "--min-size", "dilation_radius": "--dilation"}
        name = str(exc).split(" ")[0]
        print(f"{flag.get(name, name)}: {exc}", file=sys.stderr)
        return 2
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
        print(f"{run_dir}: unreadable run record or lesion maps ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    rows = [record["subjects"].index(i) for i in wanted]
    maps = {m: np.asarray(stack[rows, k]) for k, m in enumerate(methods)}
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


def _cmd_sweep(args) -> int:
    import pandas as pd

    from analysis.exploration.sweep import grid_stability_sweep, parse_range
    from analysis.runs import layout
    from analysis.runs.store import RunNotFound, RunStore, write_table
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
    norms = pd.read_parquet(run_dir / layout.SCORE_NORMS.name)
    columns = [c for c in norms.columns if c.startswith("norm_")]
    cohorts = sorted(set(norms["cohort"]))
    if args.cohort not in cohorts:
        expected = f"expected one of {cohorts} (cohorts of run {run_dir.name})"
        print(f"--cohort: {expected}, got {args.cohort!r}", file=sys.stderr)
        return 1
    table = grid_stability_sweep(
        norms[columns].to_numpy(),
        norms["cohort"].to_numpy(),
        args.cohort,
        reference=(norms["cohort"] == manifest.reference_cohort).to_numpy(),
        rows=rows,
        cols=cols,
        topology=args.topology,
        n_jobs=args.jobs,
        progress=not args.quiet,
    )
    ids = norms["subject_id"].to_numpy()
    table["members"] = [[str(ids[i]) for i in m] for m in table["members"]]
    out = run_dir / layout.sweep_file(args.cohort)
    write_table(out, table)
    stable = table[table["jaccard_neighbours"] >= 0.8]
    print(
        f"{len(table)} grids, rows {rows[0]}-{rows[-1]} x cols {cols[0]}-{cols[-1]}: maximal prototype of "
        f"{args.cohort} holds {table['size'].min()}-{table['size'].max()} of {table['cohort_size'].iloc[0]} subjects; "
        f"{len(stable)} grids overlap their neighbours by Jaccard >= 0.8"
    )
    print(f"table: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
