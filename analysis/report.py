"""Headline figures of a published run, as one JSON-ready dict (``msma report --json``) or as Markdown tables.

Detection metrics follow the dissertation's table 3.8: each detector, each cohort against the held-out reference
test subjects, in-distribution as the positive class, values in percent.
"""

from __future__ import annotations

import os
from pathlib import Path

from analysis.artifacts import read_run

METRICS = ("fpr_at_95_tpr", "detection_error", "auroc", "aupr_in", "aupr_out")
HEADERS = ("FPR (95% TPR) ↓", "Det. error ↓", "AUROC ↑", "AUPR in ↑", "AUPR out ↑")
DETECTOR_NAMES = {"gmm": "GMM", "knn": "KNN", "flow": "Flow"}
NORM_NAMES = {"msma": "MSMA", "lowrank": "Low-rank Gaussian", "gaussian": "Per-voxel Gaussian"}


def report_data(run_dir: str | os.PathLike) -> dict:
    """The run's headline figures: provenance, the score model, and per-cohort detection metrics."""
    run = read_run(run_dir)
    detection: dict[str, dict[str, dict[str, dict]]] = {}
    for row in run["metrics"]:
        entry = {k: row.get(k) for k in (*METRICS, "auroc_se", "n_inliers", "n_outliers")}
        detection.setdefault(row["norms"], {}).setdefault(row["detector"], {})[row["group"]] = entry
    model = run["score_model"]
    history = model.get("history") or {}
    steps, losses = history.get("step", []), history.get("val_loss", [])
    return {
        "run_id": run["run_id"],
        "run_dir": str(Path(run_dir).resolve()),
        "study": run["study"],
        "profile": run["profile"],
        "score_model": {
            "reused": model["reused"],
            "steps": model["steps"],
            "stopped": model["stopped"],
            "best_val_loss": model["best_val_loss"],
            "untrained_val_loss": losses[0] if steps[:1] == [0.0] else None,
            "parameters": model["parameters"],
            "sigma_min": run["schedule"]["sigma_min"],
            "sigma_max": run["schedule"]["sigma_max"],
            "n_scales": len(run["schedule"]["sigmas"]),
        },
        "detection": {
            "reference": "held-out reference test subjects (in-distribution = positive class)",
            "norms": {k: NORM_NAMES.get(k, k) for k in detection},
            "results": detection,
        },
        "som": _som_summary(run.get("som")),
        "recovery": (run.get("som") or {}).get("recovery"),
        "timings_s": run["timings_s"],
        "warnings": run.get("warnings", []),
    }


def _som_summary(som: dict | None) -> dict | None:
    if not som:
        return None
    prototypes = {c: {k: p[k] for k in ("unit", "size", "cohort_size")} for c, p in som["prototypes"].items()}
    return {k: som[k] for k in ("grid", "topology", "quantization_error", "topographic_error")} | {
        "maximal_prototypes": prototypes
    }


def _loss(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _auroc(entry: dict) -> str:
    if entry.get("auroc") is None:
        return "n/a"
    se = entry.get("auroc_se")
    return _pct(entry["auroc"]) + ("" if se is None else f" ± {100 * se:.1f}")


def _pct(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def format_report(run_dir: str | os.PathLike) -> str:
    """Markdown: a table per score-norm source (detector x cohort x metric), then an AUROC overview."""
    data = report_data(run_dir)
    results = data["detection"]["results"]
    model = data["score_model"]
    lines = [
        f"run {data['run_id']} ({data['study']}, profile {data['profile']})",
        f"score model: {model['parameters']} parameters, {model['steps']} steps ({model['stopped']}"
        f"{', reused checkpoint' if model['reused'] else ''}), sigma {model['sigma_min']:.3g}..{model['sigma_max']:.3g}"
        f" over {model['n_scales']} scales",
        f"validation DSM loss: {_loss(model['untrained_val_loss'])} untrained -> {_loss(model['best_val_loss'])} best",
        "",
    ]
    for norms, detectors in results.items():
        lines += [f"### {NORM_NAMES.get(norms, norms)}: each cohort vs held-out reference test subjects (%)", ""]
        lines.append("| detector | cohort | n | " + " | ".join(HEADERS) + " |")
        lines.append("|---|---|---|" + "---|" * len(HEADERS))
        for detector, groups in detectors.items():
            for group, m in groups.items():
                cells = " | ".join(_pct(m[k]) for k in METRICS)
                lines.append(f"| {DETECTOR_NAMES.get(detector, detector)} | {group} | {m['n_outliers']} | {cells} |")
        lines.append("")
    columns = [(n, d) for n, ds in results.items() for d in ds]
    groups = list(next(iter(next(iter(results.values())).values()))) if results else []
    lines += ["### AUROC (%) by cohort, ± its standard error (Hanley-McNeil)", ""]
    lines.append(
        "| cohort | " + " | ".join(f"{NORM_NAMES.get(n, n)} {DETECTOR_NAMES.get(d, d)}" for n, d in columns) + " |"
    )
    lines.append("|---|" + "---|" * len(columns))
    for group in groups:
        cells = " | ".join(_auroc(results[n][d].get(group, {})) for n, d in columns)
        lines.append(f"| {group} | {cells} |")
    if data["som"]:
        som = data["som"]
        lines += ["", f"### SOM {som['grid'][0]} x {som['grid'][1]}: maximal prototype per cohort", ""]
        lines += ["| cohort | unit | members | of |", "|---|---|---|---|"]
        for cohort, p in som["maximal_prototypes"].items():
            lines.append(f"| {cohort} | {tuple(p['unit'])} | {p['size']} | {p['cohort_size']} |")
    if data["recovery"]:
        r = data["recovery"]
        lines += [
            "",
            f"recovery of the planted subgroup by the {r['cohort']} prototype: precision {r['precision']:.2f}, "
            f"recall {r['recall']:.2f} ({r['prototype_size']} members, {r['planted']} planted)",
        ]
    lines += [f"warning: {w}" for w in data["warnings"]]
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in data["timings_s"].items())
    lines += ["", f"stage timings: {timings}", f"run folder: {data['run_dir']}"]
    return "\n".join(lines)
