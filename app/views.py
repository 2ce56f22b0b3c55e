"""What each view shows for a state of the explorer: the run and a small state in, figures out.

:class:`Explorer` holds the published run and the lookups every view needs (cohort styles, slicing geometry,
hover texts), all computed once when the app is created and only read afterwards, so one instance serves every
browser session. The functions below turn a state (a cohort, selected SOM units, a crosshair, the controls) into
the plain data of :mod:`app.figures`, calling :mod:`analysis` for every number.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from analysis.exploration.balance import covariate_balance
from analysis.exploration.cohort_analysis import (
    RegionStep,
    behaviour_table,
    region_step,
    selection_summary,
    split_cohort,
)
from analysis.exploration.correlations import CorrelationResult, PermutationTable
from analysis.exploration.power import detectable_effect
from analysis.exploration.roi_stats import atypical_rois, reference_percentile
from analysis.exploration.slices import AXIS_NAMES, PLANES, SliceGeometry, peak_voxel, region_centre
from analysis.exploration.som import unit_positions
from analysis.runs.reader import PublishedRun
from app.figures import empty_figure, wrap_text
from app.figures.behaviour import PairPoints, correlation_figure, pair_scatter_figure
from app.figures.regions import BoxGroup, roi_box_figure
from app.figures.slices import SliceData
from app.figures.som import MapLayer, PrototypeMarker, som_figure
from app.style import HIT_MAP_COLORS, REST_COLOR, U_MATRIX_COLORS, CohortStyle, cohort_styles

MIN_COMPLETE = 10
"""Fewest cohort members with behaviour scores (and complete cases per pair) for a correlation: the refresh's."""

MEMBER_IDS_ON_HOVER = 6
"""Member ids listed per cohort in a SOM unit's hover (the count is always shown)."""


@dataclass(frozen=True, eq=False)
class Explorer:
    """A published run with the read-only lookups of the views."""

    run: PublishedRun
    _tables: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    TABLES_KEPT = 8
    """Permutation tables remembered (cohort x permutation count); each is a few MB at 10,000 permutations."""

    def roi_table(self, scores: str) -> pd.DataFrame:
        """The ROI scores the chain reads: "adjusted" (covariate-adjusted z, when the run has it) or "raw"."""
        return self.run.roi_tables[scores]

    def score_unit(self, scores: str) -> str:
        """The unit of a ROI score table, for axis titles and hovers."""
        return "z vs normative prediction" if scores == "adjusted" else self.unit

    def behaviour_table(self, cohort: str, n_permutations: int, scores: str = "raw") -> PermutationTable | None:
        """The cohort's behaviour correlations for every ROI a selection can make significant: its kept ROIs, those
        above the reference 90th percentile whatever the selection. Computed on first use and remembered (a pure
        function of the run, the same for every browser), so a new selection reads its ROIs' rows in a
        millisecond instead of permuting again; the numbers equal a fresh computation on those ROIs."""
        key = (cohort, int(n_permutations), scores)
        with self._lock:
            if key in self._tables:
                self._tables.move_to_end(key)
                return self._tables[key]
        # Computed outside the lock, so other cohorts' reads do not wait (two first requests may both compute it).
        rois = self.roi_table(scores)
        kept = atypical_rois(rois, self.run.reference_ids, self.run.cohort_ids(cohort))
        table = behaviour_table(rois, self.run.behaviour, self.run.cohort_ids(cohort), kept,
                                n_permutations=int(n_permutations), min_complete=MIN_COMPLETE, random_state=self.seed)
        with self._lock:
            self._tables[key] = table
            while len(self._tables) > self.TABLES_KEPT:
                self._tables.popitem(last=False)
        return table

    @cached_property
    def styles(self) -> dict[str, CohortStyle]:
        return cohort_styles(self.run.cohorts)

    @cached_property
    def geometry(self) -> SliceGeometry:
        grid = self.run.study.grid
        return SliceGeometry(grid.shape, grid.affine)

    @cached_property
    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        som = self.run.som
        return unit_positions(som.n_rows, som.n_cols, som.topology)

    @cached_property
    def unit_flat(self) -> np.ndarray:
        """Each subject's BMU as ``row * n_cols + col``."""
        s = self.run.subjects
        return (s["bmu_row"] * self.run.som.n_cols + s["bmu_col"]).to_numpy()

    @cached_property
    def unit_text(self) -> np.ndarray:
        """Hover text of every SOM unit: its members per cohort, with the first few ids."""
        som, subjects = self.run.som, self.run.subjects
        text = np.empty((som.n_rows, som.n_cols), dtype=object)
        groups = subjects.groupby([subjects["bmu_row"], subjects["bmu_col"]])
        for r in range(som.n_rows):
            for c in range(som.n_cols):
                lines = [f"<b>unit ({r}, {c})</b> U-matrix {som.u_matrix[r, c]:.2f}"]
                members = groups.get_group((r, c)) if (r, c) in groups.groups else subjects.iloc[:0]
                for cohort in self.run.cohorts:
                    ids = members.index[members["cohort"] == cohort].tolist()
                    if ids:
                        more = " ..." if len(ids) > MEMBER_IDS_ON_HOVER else ""
                        shown = ", ".join(ids[:MEMBER_IDS_ON_HOVER]) + more
                        lines.append(f"{cohort}: {len(ids)} ({shown})")
                if len(lines) == 1:
                    lines.append("no members")
                text[r, c] = "<br>".join(lines)
        return text

    @cached_property
    def region_names(self) -> np.ndarray:
        """(D, H, W) atlas region name of every voxel, for the slices' hover."""
        names = {index: name for name, index in self.run.roi_labels.items()}
        outside = f"outside the {self.run.study.manifest.atlas.name} regions"
        top = int(self.run.study.atlas_labels.max())
        lookup = np.array([outside] + [names.get(i, outside) for i in range(1, top + 1)], dtype=object)
        return lookup[np.clip(self.run.study.atlas_labels, 0, len(lookup) - 1)]

    @cached_property
    def background_range(self) -> tuple[float, float]:
        brain = self.run.template[self.run.study.brain_mask]
        return float(np.percentile(brain, 1)), float(np.percentile(brain, 99.5))

    @cached_property
    def _reference_p90(self) -> dict[str, pd.Series]:
        tables = self.run.roi_tables.items()
        return {name: reference_percentile(table, self.run.reference_ids) for name, table in tables}

    def reference_p90(self, scores: str) -> pd.Series:
        """Each ROI's reference 90th percentile in the ``scores`` table."""
        return self._reference_p90[scores]

    @property
    def unit(self) -> str:
        return self.run.heatmap_unit

    @property
    def seed(self) -> int:
        return int(self.run.record.get("seed", 0))

    def refresh_permutations(self) -> int:
        """The permutation count the refresh used (10,000 unless its record says otherwise)."""
        for entry in (self.run.record.get("hypotheses") or {}).values():
            if (entry or {}).get("correlations"):
                return int(entry["correlations"]["n_permutations"])
        return 10_000


# --- selection ---------------------------------------------------------------------------------------------------


def prototype_units(ex: Explorer, cohort: str) -> list[list[int]]:
    """The units a cohort starts from: those of the prototype the refresh's chain tested (its ``subgroup``, which
    may gather several units), else its maximal prototype's unit."""
    prototype = ex.run.som.prototypes.get(cohort)
    if not prototype:
        return []
    subgroup = prototype.get("subgroup")
    return [list(u) for u in subgroup["units"]] if subgroup else [list(prototype["unit"])]


def selected_ids(ex: Explorer, units) -> list[str]:
    """Every subject (of any cohort) whose BMU is one of ``units``."""
    flat = [int(r) * ex.run.som.n_cols + int(c) for r, c in units]
    return ex.run.subjects.index[np.isin(ex.unit_flat, flat)].tolist()


def units_from_points(ex: Explorer, points) -> list[list[int]]:
    """The units named by a Plotly selection or click (each point's ``customdata`` is ``[row, col]``); anything
    else the browser sends, or a unit off the map, is ignored."""
    units = []
    for point in points if isinstance(points, list) else []:
        custom = point.get("customdata") if isinstance(point, dict) else None
        if not (isinstance(custom, list | tuple) and len(custom) == 2
                and all(isinstance(v, int | float) and float(v).is_integer() for v in custom)):
            continue
        unit = [int(custom[0]), int(custom[1])]
        if 0 <= unit[0] < ex.run.som.n_rows and 0 <= unit[1] < ex.run.som.n_cols and unit not in units:
            units.append(unit)
    return units


def cohort_members(ex: Explorer, cohort: str, units) -> tuple[list[str], list[str]]:
    """The cohort's members inside the selected units and the others."""
    return split_cohort(ex.run.cohort_ids(cohort), selected_ids(ex, units))


# --- SOM map ------------------------------------------------------------------------------------------------------


def som_view(ex: Explorer, cohort: str, layer: str, units) -> go.Figure:
    som = ex.run.som
    prototypes = [
        PrototypeMarker(c, tuple(p["unit"]), int(p["size"]), int(p["cohort_size"]), ex.styles[c])
        for c, p in som.prototypes.items() if c in ex.styles
    ]
    if layer == "hits":
        hits = np.bincount(ex.unit_flat[(ex.run.subjects["cohort"] == cohort).to_numpy()],
                           minlength=som.n_rows * som.n_cols).reshape(som.n_rows, som.n_cols)
        values, label, colours = hits, f"members of {cohort}", HIT_MAP_COLORS
        what = f"hit map of {cohort}"
    else:
        values, label, colours = som.u_matrix, "U-matrix (relative distance)", U_MATRIX_COLORS
        what = "U-matrix"
    title = f"{som.n_rows} × {som.n_cols} {som.topology} SOM of the score norms: {what}"
    return som_figure(MapLayer(values, label, colours), ex.positions, som.topology, prototypes, ex.unit_text,
                      [tuple(u) for u in units], title)


# --- region step: ROI box plots and the selection summary -----------------------------------------------------------


def regions(ex: Explorer, cohort: str, units, correction: str, alpha: float, scores: str = "raw") -> RegionStep:
    return region_step(ex.roi_table(scores), ex.run.reference_ids, ex.run.cohort_ids(cohort), selected_ids(ex, units),
                       alpha=alpha, correction=correction)


CORRECTION_NAMES = {"bonferroni": "Bonferroni", "bh": "BH"}


ROI_ROW_PX = 32
"""Height of one ROI's row of boxes; the figure grows with the ROIs shown (its card scrolls)."""


def roi_height(n_rois: int) -> int:
    return max(400, 90 + ROI_ROW_PX * n_rois)


def power_note(step: RegionStep, n_selected: int, n_rest: int) -> str:
    """What the step's test can see (:func:`~analysis.exploration.power.detectable_effect`): with BH, for as many
    truly different ROIs as the step found significant (at least one)."""
    expected = max(1, len(step.significant_rois)) if step.correction == "bh" else None
    return detectable_effect(n_selected, n_rest, len(step.kept_rois), correction=step.correction, alpha=step.alpha,
                             expected_true=expected).sentence


def roi_view(ex: Explorer, cohort: str, units, step: RegionStep, shown: int, highlighted: str | None,
             scores: str = "raw") -> go.Figure:
    correction = CORRECTION_NAMES[step.correction]
    inside, rest = cohort_members(ex, cohort, units)
    title_base = "ROIs that set the selection apart"
    if not step.kept_rois:
        return empty_figure(title_base, f"No ROI's mean over {cohort} exceeds the reference 90th "
                                                f"percentile:<br>nothing to test.")
    if not inside or not rest:
        where = "in the selection" if not inside else "outside the selection"
        return empty_figure(title_base, f"No member of {cohort} {where}:<br>select units holding some of "
                                                f"its members, and leave some out.")
    if not step.significant_rois:
        best = step.tests.iloc[0]
        return empty_figure(
            title_base,
            f"None of the {len(step.kept_rois)} kept ROIs differs at {correction} p < {step.alpha:g}<br>"
            f"between {len(inside)} selected and {len(rest)} other members of {cohort};<br>"
            f"the smallest raw p is {best['p_raw']:.2g}, in {best['roi']}.<br>"
            + wrap_text(power_note(step, len(inside), len(rest))),
        )
    rois = step.significant_rois[:shown]
    stats = step.tests.set_index("roi").to_dict(orient="index")
    style = ex.styles[cohort]
    reference_style = ex.styles[ex.run.reference_cohort]
    table = ex.roi_table(scores)
    groups = [
        BoxGroup(f"selection ({len(inside)})", table.loc[inside, rois], style.color, _fill(style.color, 0.45), "all"),
        BoxGroup(f"rest of {cohort} ({len(rest)})", table.loc[rest, rois], REST_COLOR, _fill(REST_COLOR, 0.3), "all"),
        BoxGroup(f"{ex.run.reference_cohort} ({len(ex.run.reference_ids)})", table.loc[ex.run.reference_ids, rois],
                 reference_style.color, _fill(reference_style.color, 0.2), "outliers"),
    ]
    title = (f"{len(rois)} of {len(step.significant_rois)} ROIs at {correction} p < {step.alpha:g} "
             f"({len(step.kept_rois)} kept), most significant on top")
    return roi_box_figure(rois, groups, ex.reference_p90(scores).to_dict(), stats, ex.score_unit(scores), title,
                          highlighted, power_note(step, len(inside), len(rest)))



def _fill(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[k : k + 2], 16) for k in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def summary(ex: Explorer, cohort: str, units) -> dict:
    """The selection's make-up (:func:`~analysis.exploration.cohort_analysis.selection_summary`) and its members'
    covariates against the rest of the cohort (:func:`~analysis.exploration.balance.covariate_balance`)."""
    result = selection_summary(ex.run.subjects, selected_ids(ex, units), cohort)
    study = ex.run.study
    inside, rest = cohort_members(ex, cohort, units)
    kinds = {c.name: c.kind for c in study.covariates}
    result["covariates"] = covariate_balance(study.covariate_table, kinds, inside, rest) if inside and rest else []
    return result


# --- behaviour correlations ----------------------------------------------------------------------------------------


def correlations(ex: Explorer, cohort: str, rois, n_permutations: int, scores: str = "raw") -> CorrelationResult | None:
    """The live behaviour step of ``rois``, read from the cohort's remembered permutation table
    (:meth:`Explorer.behaviour_table`)."""
    table = ex.behaviour_table(cohort, n_permutations, scores) if len(rois) else None
    return None if table is None else table.result(list(rois))


def correlation_height(n_rois: int) -> int:
    """The heatmap grows with its ROIs (12 px a row beyond the card's height; the card scrolls)."""
    return max(404, 210 + 12 * n_rois)


def correlation_view(ex: Explorer, cohort: str, rois, result: CorrelationResult | None, q: float,
                     significant_only: bool) -> go.Figure:
    title = "Behaviour correlations of the significant ROIs"
    if ex.run.behaviour is None:
        return empty_figure(title, "The study has no behaviour table (manifest: behaviour).")
    if not rois:
        return empty_figure(title, "No significant ROI to correlate with behaviour.")
    if result is None:
        return empty_figure(title, f"Fewer than {MIN_COMPLETE} members of {cohort} have behaviour scores.")
    table = result.table
    hits = int((table["testable"] & (table["p_bh"] < q)).sum())
    if significant_only and not hits:
        return empty_figure(
            title, f"No pair at BH p < {q:g} among {int(table['testable'].sum())} tested<br>"
                   f"(choose “full matrix” to see every ρ).")
    title = (f"Spearman ρ over {cohort}: {hits} of {int(table['testable'].sum())} pairs at BH p < {q:g} "
             f"({result.n_permutations:,} permutations)")
    hit_rois = set(table.loc[table["testable"] & (table["p_bh"] < q), "roi"])
    n_rows = len([r for r in rois if r in hit_rois]) if significant_only else len(rois)
    return correlation_figure(table, list(rois), list(ex.run.behaviour.columns), q, significant_only, title,
                                      correlation_height(n_rows))


def scatter_view(ex: Explorer, cohort: str, units, roi: str, behaviour: str, view: str, stats: dict,
                 scores: str = "raw") -> go.Figure:
    members = [i for i in ex.run.cohort_ids(cohort) if i in ex.run.behaviour.index]
    chosen = set(selected_ids(ex, units))
    points = PairPoints(ex.roi_table(scores).loc[members, roi].to_numpy(),
                        ex.run.behaviour.loc[members, behaviour].to_numpy(), members,
                        np.array([i in chosen for i in members]))
    return pair_scatter_figure(roi, behaviour, points, ex.styles[cohort], cohort, ex.score_unit(scores), view, stats)


# --- brain slices ---------------------------------------------------------------------------------------------------


MEAN_CHUNK = 64
"""Subjects' heatmaps read at once for a mean: memory stays bounded (64 x 3.6 MB on a 2 mm grid) for any selection."""


def mean_volume(ex: Explorer, ids) -> np.ndarray | None:
    """(D, H, W) mean heatmap of ``ids`` (NaN outside the brain), or None without ids; the memory map is read in
    chunks of :data:`MEAN_CHUNK` subjects."""
    rows = slice_rows(ex, ids)
    if not len(rows):
        return None
    total = np.zeros(ex.run.heatmaps.shape[1:], dtype=np.float64)
    for start in range(0, len(rows), MEAN_CHUNK):
        total += np.asarray(ex.run.heatmaps[rows[start : start + MEAN_CHUNK]], dtype=np.float64).sum(axis=0)
    return (total / len(rows)).astype(np.float32)


def selection_peak(ex: Explorer, cohort: str, units) -> list[int] | None:
    """The strongest voxel of the mean heatmap of the cohort's members in ``units``, or None without any."""
    inside, _ = cohort_members(ex, cohort, units)
    volume = mean_volume(ex, inside)
    return None if volume is None else peak_voxel(volume)


def colour_range(volume: np.ndarray | None, mode: str, fixed: float | None) -> tuple[float, float]:
    """Symmetric about 0: the 99th percentile of |value| over the brain ("auto"), or +-``fixed``."""
    if mode == "fixed" and fixed is not None and np.isfinite(fixed) and fixed > 0:
        top = float(fixed)
    elif volume is None or not np.isfinite(volume).any():
        top = 1.0
    else:
        top = float(np.nanpercentile(np.abs(volume), 99)) or 1.0
    return -top, top


def start_voxel(ex: Explorer, cohort: str) -> list[int]:
    """Where the crosshair starts: the peak of the cohort prototype's mean heatmap (else the grid centre)."""
    return selection_peak(ex, cohort, prototype_units(ex, cohort)) or [s // 2 for s in ex.geometry.shape]


def roi_centre(ex: Explorer, roi: str) -> list[int] | None:
    index = ex.run.roi_labels.get(roi)
    return None if index is None else region_centre(ex.run.study.atlas_labels, index, ex.run.study.brain_mask)


def slice_data(ex: Explorer, plane: str, voxel, rows, roi: str | None) -> SliceData:
    """The cut of the template, the mean heatmap of the subjects in ``rows`` and the outlined ROI on ``plane``."""
    g = ex.geometry
    h_axis, v_axis, normal = PLANES[plane]
    index = int(voxel[normal])
    values = (g.cut_stack(ex.run.heatmaps, rows, plane, index) if len(rows)
              else np.full(g.cut(ex.run.template, plane, index).shape, np.nan, dtype=np.float32))
    outline = None
    if roi is not None and roi in ex.run.roi_labels:
        outline = g.cut(ex.run.study.atlas_labels == ex.run.roi_labels[roi], plane, index)
    return SliceData(
        plane=plane,
        horizontal=g.coordinates(h_axis),
        vertical=g.coordinates(v_axis),
        background=g.cut(ex.run.template, plane, index),
        values=values,
        regions=g.cut(ex.region_names, plane, index),
        outline=outline,
        crosshair=(g.position(h_axis, int(voxel[h_axis])), g.position(v_axis, int(voxel[v_axis]))),
        depth=f"{AXIS_NAMES[normal]} = {g.position(normal, index):.0f} {g.unit}",
        unit=g.unit,
    )


def slice_rows(ex: Explorer, ids) -> np.ndarray:
    return np.sort(np.array([ex.run.row_of[i] for i in ids], dtype=int))


PLANE_TITLES = {"axial": "Axial", "coronal": "Coronal", "sagittal": "Sagittal"}


def slice_title(data: SliceData) -> str:
    return f"{PLANE_TITLES[data.plane]}, {data.depth}"
