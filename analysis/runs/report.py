"""Headline figures of a published run, as one JSON-ready dict (``msma report --json``) or as Markdown tables.

Detection metrics follow the dissertation's table 3.8: each detector, each cohort against the held-out reference
test subjects, in-distribution as the positive class, values in percent.
"""

from __future__ import annotations

import os
from pathlib import Path

from analysis.exploration.balance import describe_balance
from analysis.methods import DETECTORS, LESION_METHODS, NORM_SETS, names
from analysis.runs.store import read_run

METRICS = ("fpr_at_95_tpr", "detection_error", "auroc", "aupr_in", "aupr_out")
HEADERS = ("FPR (95% TPR) ↓", "Det. error ↓", "AUROC ↑", "AUPR in ↑", "AUPR out ↑")
DETECTOR_NAMES = names(DETECTORS)
NORM_NAMES = names(NORM_SETS)
LESION_METHOD_NAMES = names(LESION_METHODS)
LEGACY_LESION_METHOD_NAMES = {
    "spatial_msma": "Spatial-MSMA (NLL in nats, min over patches)",
    "z_score": "Voxel z-score",
    "voxel_magnitude": "Voxel score magnitude",
    "patch_magnitude": "Patch-norm magnitude (min over patches)",
    "patch_magnitude_centre": "Patch-norm magnitude",
    "unconditional_flow": "Unconditional flow (min over patches)",
}
"""Names of the methods in runs written before the heatmaps were calibrated and kept at the patch centre: those runs
mapped patch scores to voxels as the minimum over covering patches and called the centre variant
``patch_magnitude_centre``."""
LESION_METRICS = (("hd99", "99-HD (mm) ↓", 2), ("msd", "MSD (mm) ↓", 2), ("tpr", "TPR ↑", 2), ("ppv", "PPV ↑", 2))
LESION_SUPPLEMENTARY = (
    ("auroc", "voxel AUROC ↑", 3), ("tpr_at_zero_fp", "TPR at 0 FP ↑", 2), ("predicted_fraction", "brain segmented", 3),
)
"""Threshold-free figures shown after table 5.1's four (runs written before they existed lack them)."""


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
        "spatial": _spatial_summary(run.get("spatial")),
        "lesions": ((run.get("spatial") or {}).get("lesions") or {}).get("summary"),
        "som": _som_summary(run.get("som")),
        "recovery": (run.get("som") or {}).get("recovery"),
        "hypotheses": run.get("hypotheses"),
        "normative": _normative_summary(run.get("normative")),
        "timings_s": run["timings_s"],
        "warnings": run.get("warnings", []),
    }


def _region_figures(g: dict) -> str:
    """A recovery's planted-region figures as one phrase: recall, significant count, false discovery proportion."""
    fdp = "n/a" if g["false_discovery_proportion"] is None else f"{g['false_discovery_proportion']:.2f}"
    recall = "n/a" if g["recall"] is None else f"{g['recall']:.2f}"
    return f"recall {recall} of {g['planted']}, {g['significant']} significant, false discovery proportion {fdp}"


def _normative_summary(normative: dict | None) -> dict | None:
    if not normative:
        return None
    return {
        "covariates": [f"{c['name']} ({c['kind']})" for c in normative["covariates"]],
        "design": normative["design"],
        "fit_subjects": normative["fit_subjects"],
        "held_out_r2": normative["held_out"]["r2"],
        "imputed": {k: v for k, v in normative["imputed"].items() if v},
        "table": normative["table"],
    }


def _normative_lines(normative: dict | None) -> list[str]:
    if not normative:
        return ["", "ROI scores: raw (no normative model in this run: the study declares no covariates, or the model "
                "could not be fitted, as its warnings say)"]
    r2 = ", ".join(f"{k} {v:.3f}" for k, v in normative["held_out_r2"].items())
    imputed = ", ".join(f"{k} {v}" for k, v in normative["imputed"].items())
    covariates = ", ".join(normative["covariates"])
    model = (f"{normative['design']} model of every ROI score on {covariates}" if normative["design"] != "mean" else
             f"each ROI's mean only: {covariates} do not predict held-out reference subjects")
    return ["", "### ROI scores adjusted for covariates (normative model)", "",
            f"{model}; fitted on {normative['fit_subjects']} held-out reference subjects; held-out R^2: {r2}"
            + (f"; missing values imputed: {imputed}" if imputed else "")
            + f". The chain below ran on the adjusted scores ({normative['table']}: z, higher = more anomalous)."]


def _spatial_summary(spatial: dict | None) -> dict | None:
    if not spatial:
        return None
    flow = spatial["flow"]
    return {
        "patch_size": spatial["config"]["patch_size"],
        "flow": {k: flow.get(k) for k in ("reused", "steps", "stopped", "best_val_nll", "parameters")},
        "heatmaps": spatial["heatmaps"]["stack"],
        "roi_scores": spatial["roi_scores"]["table"],
        "rois": len(spatial["roi_scores"]["rois"]),
    }


def _mean_se(value, se, digits: int) -> str:
    if value is None or value != value:
        return "n/a"
    if se is None or se != se:
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} ± {se:.{digits}f}"


def format_lesion_table(summary: list[dict]) -> str:
    """Table 5.1 of the dissertation: per lesion group, each method's mean ± standard error over subjects."""
    lines = []
    groups = list(dict.fromkeys(row["group"] for row in summary))
    legacy = any(row["method"] == "patch_magnitude_centre" for row in summary)
    names = LEGACY_LESION_METHOD_NAMES if legacy else LESION_METHOD_NAMES
    order = list(names)
    if legacy:
        lines += ["(a run written before Spatial-MSMA's heatmaps were calibrated per voxel and kept at the patch "
                  "centre)", ""]
    for group in groups:
        rows = sorted(
            (r for r in summary if r["group"] == group),
            key=lambda r: order.index(r["method"]) if r["method"] in order else len(order),
        )
        n = rows[0]["n_subjects"] if rows else 0
        columns = [*LESION_METRICS, *(c for c in LESION_SUPPLEMENTARY if any(f"{c[0]}_mean" in r for r in rows))]
        lines += [f"#### lesions: {group} ({n} subjects)", ""]
        lines.append("| method | " + " | ".join(h for _, h, _ in columns) + " |")
        lines.append("|---|" + "---|" * len(columns))
        for r in rows:
            cells = " | ".join(_mean_se(r.get(f"{k}_mean"), r.get(f"{k}_se"), d) for k, _, d in columns)
            lines.append(f"| {names.get(r['method'], r['method'])} | {cells} |")
        lines.append("")
    return "\n".join(lines).rstrip()


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
    if data["spatial"]:
        sp = data["spatial"]
        flow = sp["flow"]
        lines += [
            "",
            f"### Spatial-MSMA: {sp['patch_size']}^3 patch norms, conditional flow ({flow['parameters']} parameters, "
            f"{flow['steps']} steps, {flow['stopped']}{', reused' if flow['reused'] else ''}; best validation NLL "
            f"{_loss(flow['best_val_nll'])}); heatmaps in {sp['heatmaps']}, {sp['rois']} ROI scores in "
            f"{sp['roi_scores']}",
        ]
    if data["lesions"]:
        lines += ["", "### Lesion detection (dissertation table 5.1 protocol)", ""]
        lines.append(format_lesion_table(data["lesions"]))
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
        if r.get("subgroup"):
            s = r["subgroup"]
            lines.append(f"the chain's prototype ({s['definition']}: enriched units merged over the grid): precision "
                         f"{s['precision']:.2f}, recall {s['recall']:.2f} ({s['prototype_size']} members)")
        if r.get("regions"):
            lines.append("planted regions among the prototype's significant ROIs (Bonferroni p < 0.05): "
                         + _region_figures(r["regions"]))
        if r.get("regions_bh"):
            lines.append("the same with BH p < 0.05: " + _region_figures(r["regions_bh"]))
        if r.get("behaviour"):
            b = r["behaviour"]
            found = ", ".join(f"{f['score']} ~ {f['region_group']}" for f in b["found"]) or "none"
            lines.append(
                f"planted behaviour pairs at BH q < 0.1: {len(b['found'])} of {b['planted_pairs']} ({found}); "
                f"{b['false_discoveries']} other significant pairs of {b['significant_pairs']}"
            )
    lines += _normative_lines(data.get("normative"))
    if data.get("hypotheses"):
        lines += ["", "### Cohort hypotheses (dissertation ch. 6.3): prototype vs rest of the cohort on ROI scores", ""]
        lines += [
            "| cohort | ROIs above reference p90 | significant (Bonferroni) | correlation pairs | BH significant |",
            "|---|---|---|---|---|",
        ]
        for cohort, h in data["hypotheses"].items():
            c = h["correlations"] or {}
            significant = f"{c['bh_significant']} (q < {c['q']})" if c else "0"
            lines.append(
                f"| {cohort} | {h['kept_rois']} | {len(h['significant_rois'])} | {c.get('pairs', 0)} | {significant} |"
            )
        for cohort, h in data["hypotheses"].items():
            if h.get("balance"):
                lines += ["", f"covariates of the {cohort} prototype against the rest of the cohort:"]
                lines += [f"- {describe_balance(row)}" + (" (unbalanced)" if row["unbalanced"] else "")
                          for row in h["balance"]]
            if h.get("power"):
                lines.append(f"what the test can see: {h['power']['sentence']}")
    lines += [f"warning: {w}" for w in data["warnings"]]
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in data["timings_s"].items())
    lines += ["", f"stage timings: {timings}", f"run folder: {data['run_dir']}"]
    return "\n".join(lines)
