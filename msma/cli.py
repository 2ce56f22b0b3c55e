"""``msma``: the command line of msma-explorer.

The parser lives here; the commands are in :mod:`msma.commands`, each importing only what it needs, so ``msma
validate`` stays quick and never loads torch.
Exit status: 0 on success, 1 when the study has problems (each printed with file, field, expected and found),
2 for a usage error.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from analysis.lesions.protocol import LESION_PROTOCOL
from msma import commands

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
    subcommands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    validate = subcommands.add_parser(
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
    validate.set_defaults(run=commands.cmd_validate)

    demo = subcommands.add_parser(
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
    demo.set_defaults(run=commands.cmd_demo)

    serve = subcommands.add_parser(
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
    serve.set_defaults(run=commands.cmd_serve)

    refresh = subcommands.add_parser(
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
    refresh.set_defaults(run=commands.cmd_refresh)

    report = subcommands.add_parser(
        "report",
        help="print the latest run's headline figures: detection metrics, SOM prototypes, hypothesis chain, lesion "
        "table",
        description="Print the latest published run's headline figures: detection metrics of every cohort "
        "against the held-out reference test subjects, for each detector.",
    )
    _add_manifest(report)
    report.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    report.set_defaults(run=commands.cmd_report)

    lesions = subcommands.add_parser(
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
    lesions.set_defaults(run=commands.cmd_evaluate_lesions)

    sweep = subcommands.add_parser(
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
    sweep.set_defaults(run=commands.cmd_sweep)

    export = subcommands.add_parser(
        "export",
        help="every figure of one selection (a cohort and SOM units) as PNG, SVG and PDF, each with a CSV of the "
        "numbers it draws and a JSON of run, selection, settings and versions",
        description="Export the explorer's figures of one selection of the latest (or a named) run for a paper, on "
        "the run's map or (--grid) on the map of another grid size as the Grid sweep room shows it: the "
        "SOM map, the cohort's grid-stability sweep (when the run has one), the box plots of the significant ROIs, "
        "their behaviour correlations, the scatter of every pair at BH p < --q and the three brain slices at the "
        "crosshair. Needs Chromium (Debian's chromium, or BROWSER_PATH). The folder --out is written whole or not "
        "at all.",
    )
    _add_manifest(export)
    export.add_argument("--run", dest="run_id", metavar="RUN_ID", help="export from this run instead of the latest")
    export.add_argument("--cohort", required=True, help="the selection's cohort")
    export.add_argument("--units", nargs="+", type=_unit, metavar="R,C",
                        help="the selection's SOM units as ROW,COL (default: the cohort's prototype, as the explorer "
                        "selects it, on the --grid map if given)")
    export.add_argument("--grid", type=_grid, metavar="ROWS,COLS",
                        help="the selection is on the map of this grid size, refitted on the run's score norms as "
                        "msma sweep and the Grid sweep room fit it (default: the run's map)")
    export.add_argument("--topology", choices=["rectangular", "hexagonal"],
                        help="topology of the --grid map (default: the run's map's)")
    export.add_argument("--som-input", default="msma", choices=["msma", "gnsm"],
                        help="what the map is fitted on: msma, the score norms (default), or gnsm, the score and "
                        "GNSM norms side by side, refitted at the --grid size or the run's (runs with a gnsm: block)")
    export.add_argument("--out", required=True, type=Path, metavar="DIR",
                        help="the export folder to create (it must not exist, or be empty)")
    export.add_argument("--correction", default="bonferroni", choices=["bonferroni", "bh"],
                        help="correction of the ROI tests (default bonferroni)")
    export.add_argument("--alpha", type=float, default=0.05, help="level of the corrected ROI p-values (default 0.05)")
    export.add_argument("--q", type=float, default=0.1,
                        help="BH level of the behaviour correlations; each pair below it gets a scatter (default 0.1)")
    export.add_argument("--scores", choices=["adjusted", "raw"],
                        help="ROI scores: covariate-adjusted or raw (default: the run's, as its chain ran)")
    export.add_argument("--permutations", type=int, metavar="N",
                        help="permutations of the correlation test (default: the refresh's count)")
    export.add_argument("--crosshair", type=_voxel, metavar="I,J,K",
                        help="voxel where the slices cut (default: the peak of the selection's mean heatmap)")
    export.add_argument("--formats", type=_formats, default="png,svg,pdf", metavar="LIST",
                        help="image formats, comma-separated (default png,svg,pdf)")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.set_defaults(run=commands.cmd_export)

    tabular = subcommands.add_parser(
        "tabular",
        help="GNSM on a table of categorical and continuous columns: fit the score network on its inlier rows, score "
        "any table with it",
        description="Gumbel-noise score matching (GNSM) for categorical and mixed tabular data: 'fit' trains the "
        "score network on a table's inlier rows as a schema YAML declares them and scores every row; 'score' scores "
        "another table with a fitted model. The anomaly score is MSMA's: a Gaussian mixture on each row's score "
        "norms at every noise scale (higher = more anomalous).",
    )
    tabular_commands = tabular.add_subparsers(dest="tabular_command", metavar="{fit,score}", required=True)
    fit = tabular_commands.add_parser(
        "fit", help="fit GNSM on a table's inlier rows; writes the model folder with the table's scores",
        description="Fit GNSM on the inlier rows of TABLE (CSV, TSV or Parquet) as SCHEMA declares its columns "
        "(categorical with levels, or continuous) and inliers. Writes --out: gnsm.pt, fit.json, scores.parquet and "
        "scores.csv (every row of TABLE scored). An existing folder is replaced only when the fit succeeds.",
    )
    fit.add_argument("table", type=Path, help="the table to fit on (CSV, TSV or Parquet)")
    fit.add_argument("--schema", required=True, type=Path, help="YAML declaring each column and the inlier rows")
    fit.add_argument("--out", required=True, type=Path, metavar="DIR", help="model folder to write")
    fit.add_argument("--profile", default="default", choices=["default", "paper", "fast"],
                     help="network size and step budget: default (2 CPU cores), paper (appendix A's, for a GPU), "
                     "fast (tiny smoke-test model whose scores mean little) (default: default)")
    fit.add_argument("--objective", choices=["kl", "mse"],
                     help="GNSM objective: kl (eq. 4.12) or mse (eq. 4.11) (default: kl)")
    fit.add_argument("--variant", default="paper", choices=["paper", "paper-mode", "smoothed"],
                     help="categorical noise and read-out: paper (the reference implementation), paper-mode (scores "
                     "read at each scale's noise-free relaxation), smoothed (the top scales also hide each level; "
                     "docs/gnsm.md compares them) (default: paper)")
    fit.add_argument("--seed", type=int, default=0, help="seed of the split, the noise and the weights (default 0)")
    fit.add_argument("--max-minutes", type=float, help="stop training after this many minutes (best weights kept)")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(run=commands.cmd_tabular_fit)
    score = tabular_commands.add_parser(
        "score", help="score a table with a fitted GNSM model",
        description="Score every row of TABLE with the model folder written by 'msma tabular fit'. The table must "
        "hold the model's columns with levels it has seen. Writes --out (Parquet) and the same table as CSV beside "
        "it: id, inlier, score (higher = more anomalous) and the score norm at each noise scale.",
    )
    score.add_argument("table", type=Path, help="the table to score (CSV, TSV or Parquet)")
    score.add_argument("--model", required=True, type=Path, metavar="DIR", help="folder written by 'msma tabular fit'")
    score.add_argument("--out", required=True, type=Path, metavar="FILE", help="scores to write (.parquet)")
    score.set_defaults(run=commands.cmd_tabular_score)
    return parser


def _integers(value: str, count: int, form: str, example: str) -> tuple[int, ...]:
    parts = value.split(",")
    try:
        numbers = tuple(int(p) for p in parts)
    except ValueError:
        numbers = ()
    if len(numbers) != count or any(n < 0 for n in numbers):
        raise argparse.ArgumentTypeError(f"expected {form} with whole numbers >= 0 (e.g. {example}), got {value!r}")
    return numbers


def _unit(value: str) -> list[int]:
    return list(_integers(value, 2, "ROW,COL", "3,4"))


def _grid(value: str) -> tuple[int, ...]:
    return _integers(value, 2, "ROWS,COLS", "5,6")


def _voxel(value: str) -> tuple[int, ...]:
    return _integers(value, 3, "I,J,K", "20,24,18")


def _formats(value: str) -> tuple[str, ...]:
    formats = tuple(f.strip().lower() for f in value.split(",") if f.strip())
    if not formats or not set(formats) <= {"png", "svg", "pdf"}:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of png, svg and pdf, got {value!r}")
    return formats


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


if __name__ == "__main__":
    sys.exit(main())
