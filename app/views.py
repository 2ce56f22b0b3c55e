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
from typing import NamedTuple

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
from analysis.exploration.sweep import fit_grid
from analysis.runs import layout as run_layout
from analysis.runs.reader import PublishedRun, SomMap
from app.figures import empty_figure, wrap_text
from app.figures.behaviour import PairPoints, correlation_figure, pair_scatter_figure
from app.figures.regions import BoxGroup, SubjectMark, roi_box_figure
from app.figures.slices import SliceData
from app.figures.som import MapLayer, PrototypeMarker, som_figure
from app.figures.sweep import sweep_figure
from app.style import HIT_MAP_COLORS, REST_COLOR, U_MATRIX_COLORS, CohortStyle, cohort_styles

MIN_COMPLETE = 10
"""Fewest cohort members with behaviour scores (and complete cases per pair) for a correlation: the refresh's."""

MEMBER_IDS_ON_HOVER = 6
"""Member ids listed per cohort in a SOM unit's hover (the count is always shown)."""

SOM_TITLE_CHARS = 66
"""Longest SOM title on one line in the map's card at 1600 px; a longer one is wrapped."""

GRIDS_KEPT = 16
"""Maps of other grid sizes (fitted when a sweep cell is clicked) remembered per run."""


SOM_INPUTS = {"msma": "the score norms", "gnsm": "the score + GNSM norms"}
"""What a SOM can be fitted on: the run's MSMA score norms (the refresh's map), or those and the subject's GNSM score
norms side by side (a metadata-aware map; runs with a ``gnsm:`` block)."""


class MapGrid(NamedTuple):
    """A map the explorer fits besides the run's: its grid and the norms it is fitted on."""

    rows: int
    cols: int
    topology: str = "rectangular"
    norms: str = "msma"
    """A key of :data:`SOM_INPUTS`."""


def check_grid(value) -> MapGrid | None:
    """A grid as the browser sends it (``{"rows", "cols", "topology", "norms"}``), if it is one the explorer fits:
    2-30 rows and columns, a known topology and SOM input; None for anything else."""
    if not isinstance(value, dict):
        return None
    rows, cols, topology = value.get("rows"), value.get("cols"), value.get("topology", "rectangular")
    norms = value.get("norms", "msma")
    if not all(isinstance(v, int) and not isinstance(v, bool) and 2 <= v <= 30 for v in (rows, cols)):
        return None
    if topology not in ("rectangular", "hexagonal") or norms not in SOM_INPUTS:
        return None
    return MapGrid(rows, cols, topology, norms)


def grid_value(grid) -> dict | None:
    """A checked grid as the selection store and the view state keep it (``norms`` only when not the default)."""
    if grid is None:
        return None
    grid = MapGrid(*grid)
    value = {"rows": grid.rows, "cols": grid.cols, "topology": grid.topology}
    return value if grid.norms == "msma" else {**value, "norms": grid.norms}


@dataclass(frozen=True)
class ViewContext:
    """What a view reads besides the selection's cohort and units: the sweep grid whose map the units are on
    (None: the run's map) and the subject found by the search box (marked in the view)."""

    grid: tuple[int, int, str] | None = None
    subject: str | None = None


@dataclass(frozen=True, eq=False)
class MapView:
    """One SOM of the run's score norms as the views read it: the run's own map, or a map of another grid size
    fitted in the explorer (from a sweep cell), with every subject's best-matching unit."""

    som: SomMap
    bmu_flat: np.ndarray
    """Each subject's BMU as ``row * n_cols + col``, in the run's subject order."""
    grid: MapGrid | None
    """None for the run's map, else the grid and input it was fitted on."""
    subjects: pd.DataFrame
    cohorts: list[str]

    @cached_property
    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        return unit_positions(self.som.n_rows, self.som.n_cols, self.som.topology)

    @cached_property
    def unit_text(self) -> np.ndarray:
        """Hover text of every unit: its members per cohort, with the first few ids."""
        som = self.som
        text = np.empty((som.n_rows, som.n_cols), dtype=object)
        order = np.argsort(self.bmu_flat, kind="stable")
        bounds = np.searchsorted(self.bmu_flat[order], np.arange(som.n_rows * som.n_cols + 1))
        ids, cohorts = self.subjects.index.to_numpy(), self.subjects["cohort"].to_numpy()
        for flat in range(som.n_rows * som.n_cols):
            r, c = divmod(flat, som.n_cols)
            lines = [f"<b>unit ({r}, {c})</b> U-matrix {som.u_matrix[r, c]:.2f}"]
            rows = order[bounds[flat] : bounds[flat + 1]]
            for cohort in self.cohorts:
                members = ids[rows[cohorts[rows] == cohort]].tolist()
                if members:
                    more = " ..." if len(members) > MEMBER_IDS_ON_HOVER else ""
                    lines.append(f"{cohort}: {len(members)} ({', '.join(members[:MEMBER_IDS_ON_HOVER])}{more})")
            if len(lines) == 1:
                lines.append("no members")
            text[r, c] = "<br>".join(lines)
        return text

    @property
    def norms(self) -> str:
        """The key of :data:`SOM_INPUTS` the map was fitted on."""
        return "msma" if self.grid is None else self.grid.norms

    @property
    def label(self) -> str:
        som = self.som
        where = "the run's" if self.grid is None else "refitted here"
        return f"{som.n_rows} × {som.n_cols} {som.topology} SOM ({where}) of {SOM_INPUTS[self.norms]}"


@dataclass(frozen=True, eq=False)
class Explorer:
    """A published run with the read-only lookups of the views."""

    run: PublishedRun
    _tables: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)
    _maps: OrderedDict = field(default_factory=OrderedDict, init=False, repr=False)
    _lookups: dict = field(default_factory=dict, init=False, repr=False)
    """Small per-run lookups (sweep tables with their file stamps, reference centile curves), kept apart from the
    permutation tables so they never evict one."""
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
    def run_map(self) -> MapView:
        s = self.run.subjects
        flat = (s["bmu_row"] * self.run.som.n_cols + s["bmu_col"]).to_numpy()
        return MapView(self.run.som, flat, None, s, self.run.cohorts)

    @cached_property
    def run_grid(self) -> MapGrid:
        """The run's own map as a :class:`MapGrid`: its grid fitted on the score norms."""
        som = self.run.som
        return MapGrid(som.n_rows, som.n_cols, som.topology, "msma")

    def shown_grid(self, grid) -> MapGrid | None:
        """``grid`` as the views keep it: None when it names the run's own map, else a :class:`MapGrid`."""
        return None if grid is None or MapGrid(*grid) == self.run_grid else MapGrid(*grid)

    @property
    def som_inputs(self) -> list[str]:
        """The keys of :data:`SOM_INPUTS` this run can fit a map on."""
        return ["msma"] if self.run.gnsm_norms is None else ["msma", "gnsm"]

    def map(self, grid=None) -> MapView:
        """The run's map (``grid`` None), or the map of another grid size or input (a :class:`MapGrid`, or rows,
        cols, topology) fitted as the refresh and ``msma sweep`` fit theirs (deterministic, so on the score norms it
        is the map the sweep table describes); fitted on first use and remembered."""
        if grid is None:
            return self.run_map
        grid = MapGrid(*grid)
        if grid.norms not in self.som_inputs:
            raise ValueError(f"this run has no {grid.norms} norms to fit a map on (runs with a gnsm: block do)")
        if grid == self.run_grid:
            return self.run_map
        with self._lock:
            if grid in self._maps:
                self._maps.move_to_end(grid)
                return self._maps[grid]
        fitted = fit_grid_map(self.run, *grid)
        with self._lock:
            self._maps[grid] = fitted
            while len(self._maps) > GRIDS_KEPT:
                self._maps.popitem(last=False)
        return fitted

    @property
    def positions(self) -> tuple[np.ndarray, np.ndarray]:
        return self.run_map.positions

    @property
    def unit_flat(self) -> np.ndarray:
        """Each subject's BMU on the run's map as ``row * n_cols + col``."""
        return self.run_map.bmu_flat

    @property
    def unit_text(self) -> np.ndarray:
        return self.run_map.unit_text

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


def som_input(run: PublishedRun, norms: str = "msma") -> np.ndarray:
    """The (subjects, features) table a map of ``norms`` (a key of :data:`SOM_INPUTS`) is fitted on: the score
    norms, or the score norms and the GNSM norms side by side. Each column is standardised by the reference cohort
    when the map is fitted, so every scale of either method weighs the same."""
    if norms == "msma":
        return run.score_norms.to_numpy(dtype=float)
    if norms == "gnsm" and run.gnsm_norms is not None:
        return np.hstack([run.score_norms.to_numpy(dtype=float), run.gnsm_norms.to_numpy(dtype=float)])
    raise ValueError(f"this run has no {norms} norms to fit a map on")


def fit_grid_map(run: PublishedRun, rows: int, cols: int, topology: str = "rectangular",
                 norms: str = "msma") -> MapView:
    """The map of one grid size fitted on the run's score norms (or on them and the GNSM norms, ``norms="gnsm"``),
    standardised by its reference cohort, with every cohort's maximal prototype:
    :func:`analysis.exploration.sweep.fit_grid`, so on the score norms a cohort's members are those its sweep table
    records for that grid."""
    labels = run.subjects["cohort"].to_numpy()
    som = fit_grid(som_input(run, norms), labels, run.cohorts[0], labels == run.reference_cohort, rows, cols,
                   topology).som
    ids = run.subjects.index.to_numpy()
    prototypes = {}
    for cohort in run.cohorts:
        p = som.maximal_prototype(labels, cohort)
        prototypes[cohort] = {"unit": list(p.unit), "size": p.size, "cohort_size": p.cohort_size,
                              "members": ids[p.members].tolist()}
    mapped = SomMap(rows, cols, topology, som.u_matrix_, som.weights_, prototypes)
    return MapView(mapped, som.bmu_[:, 0] * cols + som.bmu_[:, 1], MapGrid(rows, cols, topology, norms),
                   run.subjects, run.cohorts)


def prototype_units(ex: Explorer, cohort: str, grid=None) -> list[list[int]]:
    """The units a cohort starts from: those of the prototype the refresh's chain tested (its ``subgroup``, which
    may gather several units), else its maximal prototype's unit; on another grid, its maximal prototype's."""
    prototype = ex.map(grid).som.prototypes.get(cohort)
    if not prototype:
        return []
    subgroup = prototype.get("subgroup")
    return [list(u) for u in subgroup["units"]] if subgroup else [list(prototype["unit"])]


def selected_ids(ex: Explorer, units, grid=None) -> list[str]:
    """Every subject (of any cohort) whose BMU is one of ``units`` (on the run's map, or on ``grid``'s)."""
    view = ex.map(grid)
    flat = [int(r) * view.som.n_cols + int(c) for r, c in units]
    return ex.run.subjects.index[np.isin(view.bmu_flat, flat)].tolist()


def units_from_points(ex: Explorer, points, grid=None) -> list[list[int]]:
    """The units named by a Plotly selection or click (each point's ``customdata`` is ``[row, col]``); anything
    else the browser sends, or a unit off the map, is ignored."""
    units = []
    for point in points if isinstance(points, list) else []:
        custom = point.get("customdata") if isinstance(point, dict) else None
        if not (isinstance(custom, list | tuple) and len(custom) == 2
                and all(isinstance(v, int | float) and float(v).is_integer() for v in custom)):
            continue
        unit = [int(custom[0]), int(custom[1])]
        som = ex.map(grid).som
        if 0 <= unit[0] < som.n_rows and 0 <= unit[1] < som.n_cols and unit not in units:
            units.append(unit)
    return units


def cohort_members(ex: Explorer, cohort: str, units, grid=None) -> tuple[list[str], list[str]]:
    """The cohort's members inside the selected units and the others."""
    return split_cohort(ex.run.cohort_ids(cohort), selected_ids(ex, units, grid))


# --- SOM map ------------------------------------------------------------------------------------------------------


def som_view(ex: Explorer, cohort: str, layer: str, units, grid=None, subject: str | None = None) -> go.Figure:
    view = ex.map(grid)
    som = view.som
    prototypes = [
        PrototypeMarker(c, tuple(p["unit"]), int(p["size"]), int(p["cohort_size"]), ex.styles[c])
        for c, p in som.prototypes.items() if c in ex.styles
    ]
    if layer == "hits":
        hits = np.bincount(view.bmu_flat[(ex.run.subjects["cohort"] == cohort).to_numpy()],
                           minlength=som.n_rows * som.n_cols).reshape(som.n_rows, som.n_cols)
        values, label, colours = hits, f"members of {cohort}", HIT_MAP_COLORS
        what = f"hit map of {cohort}"
    else:
        values, label, colours = som.u_matrix, "U-matrix (relative distance)", U_MATRIX_COLORS
        what = "U-matrix"
    title = f"{view.label}: {what}"
    title = title if len(title) <= SOM_TITLE_CHARS else wrap_text(title, SOM_TITLE_CHARS)
    marked = None
    if subject is not None and subject in ex.run.row_of:
        r, c = divmod(int(view.bmu_flat[ex.run.row_of[subject]]), som.n_cols)
        marked = (subject, (r, c), ex.styles[ex.run.subjects.at[subject, "cohort"]])
    return som_figure(MapLayer(values, label, colours), view.positions, som.topology, prototypes, view.unit_text,
                      [tuple(u) for u in units], title, subject=marked)


# --- region step: ROI box plots and the selection summary -----------------------------------------------------------


def regions(ex: Explorer, cohort: str, units, correction: str, alpha: float, scores: str = "raw",
            grid=None) -> RegionStep:
    return region_step(ex.roi_table(scores), ex.run.reference_ids, ex.run.cohort_ids(cohort),
                       selected_ids(ex, units, grid),
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
             scores: str = "raw", context: ViewContext = ViewContext()) -> go.Figure:
    correction = CORRECTION_NAMES[step.correction]
    grid, subject = context.grid, context.subject
    inside, rest = cohort_members(ex, cohort, units, grid)
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
    if subject is not None and subject in table.index:
        groups.append(SubjectMark(f"subject {subject}", table.loc[subject, rois],
                                  ex.styles[ex.run.subjects.at[subject, "cohort"]].color))
    return roi_box_figure(rois, groups, ex.reference_p90(scores).to_dict(), stats, ex.score_unit(scores), title,
                          highlighted, power_note(step, len(inside), len(rest)))



def _fill(hex_colour: str, alpha: float) -> str:
    r, g, b = (int(hex_colour[k : k + 2], 16) for k in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def summary(ex: Explorer, cohort: str, units, grid=None) -> dict:
    """The selection's make-up (:func:`~analysis.exploration.cohort_analysis.selection_summary`) and its members'
    covariates against the rest of the cohort (:func:`~analysis.exploration.balance.covariate_balance`)."""
    result = selection_summary(ex.run.subjects, selected_ids(ex, units, grid), cohort)
    study = ex.run.study
    inside, rest = cohort_members(ex, cohort, units, grid)
    kinds = {c.name: c.kind for c in study.covariates}
    result["covariates"] = covariate_balance(study.covariate_table, kinds, inside, rest) if inside and rest else []
    result["anomaly"] = anomaly_balance(ex, inside, rest) if inside and rest else []
    return result


SUMMARY_DETECTORS = ("msma_gmm", "gnsm_gmm")
"""The subject-level anomaly scores the selection summary compares: MSMA's GMM on the score norms, and GNSM's on the
metadata-aware norms (runs with a ``gnsm:`` block)."""


def anomaly_balance(ex: Explorer, inside, rest) -> list[dict]:
    """The selection's members against the rest of the cohort on each subject-level anomaly score of
    :data:`SUMMARY_DETECTORS` the run has (higher = more anomalous): rows as
    :func:`~analysis.exploration.balance.covariate_balance` gives them (mean, SD, two-sided Mann-Whitney U), each
    group with its ``median`` too (anomaly scores are heavy-tailed), named by norm set ("MSMA", "GNSM")."""
    columns = [c for c in SUMMARY_DETECTORS if c in ex.run.detector_scores.columns]
    if not columns:
        return []
    table = ex.run.detector_scores[columns].astype(float)
    rows = covariate_balance(table, dict.fromkeys(columns, "numeric"), inside, rest)
    for row, column in zip(rows, columns, strict=True):
        row["name"] = column.split("_")[0].upper()
        row["detector"] = column
        for group, ids in (("selection", inside), ("rest", rest)):
            known = table.loc[list(ids), column].dropna()
            row[group]["median"] = float(known.median()) if len(known) else None
    return rows


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


def scatter_view(ex: Explorer, cohort: str, units, pair: tuple[str, str], view: str, stats: dict,
                 scores: str = "raw", context: ViewContext = ViewContext()) -> go.Figure:
    """The scatter of one ROI x behaviour ``pair`` over the cohort's members with both scores."""
    roi, behaviour = pair
    members = [i for i in ex.run.cohort_ids(cohort) if i in ex.run.behaviour.index]
    chosen = set(selected_ids(ex, units, context.grid))
    points = PairPoints(ex.roi_table(scores).loc[members, roi].to_numpy(),
                        ex.run.behaviour.loc[members, behaviour].to_numpy(), members,
                        np.array([i in chosen for i in members]),
                        context.subject if context.subject in members else None)
    figure = pair_scatter_figure(roi, behaviour, points, ex.styles[cohort], cohort, ex.score_unit(scores), view,
                                 stats)
    figure.update_layout(meta={"pair": [roi, behaviour]})
    return figure


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


def selection_peak(ex: Explorer, cohort: str, units, grid=None) -> list[int] | None:
    """The strongest voxel of the mean heatmap of the cohort's members in ``units``, or None without any."""
    inside, _ = cohort_members(ex, cohort, units, grid)
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


# --- sweeps ---------------------------------------------------------------------------------------------------------

STABLE_JACCARD = 0.8
"""Membership overlap at which a neighbouring grid counts as finding the same subgroup."""
NEIGHBOURHOOD = 3
"""The badge compares the grid shown with the swept grids up to this many rows and columns away."""


def sweep_table(ex: Explorer, cohort: str) -> pd.DataFrame | None:
    """The run's sweep table of ``cohort`` (re-read when the file changes: a sweep may finish while the page is
    open), or None when none has been run."""
    path = ex.run.run_dir / run_layout.sweep_file(cohort)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    key = ("sweep", cohort)
    with ex._lock:
        cached = ex._lookups.get(key)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    table = pd.read_parquet(path)
    with ex._lock:
        ex._lookups[key] = (stamp, table)
    return table


SWEEP_READING = [
    "Each cell is one SOM grid size, fitted on the run's score norms exactly as the refresh fits its map "
    "(PCA initialisation, batch training: deterministic). Left: how many of the cohort's subjects its maximal "
    "prototype (the unit holding most of them) gathers. Right: how much of that membership the grids one row or "
    "one column away keep (mean Jaccard overlap).",
    " A band of outlined cells (overlap ≥ 0.8) means the subgroup does not hinge on the grid size: neighbouring "
    "settings find the same subjects. Click a cell: its map replaces the map view with its prototype selected, "
    "and every other view follows; the run's-map button goes back.",
]


def sweep_topology(ex: Explorer, cohort) -> str:
    """The topology of the cohort's sweep (rectangular when the table predates the column or there is none)."""
    table = sweep_table(ex, cohort) if cohort in ex.run.cohorts else None
    if table is None or "topology" not in table.columns or table.empty:
        return "rectangular"
    return str(table["topology"].iloc[0])


def sweep_cell(ex: Explorer, cohort: str, point) -> tuple[int, int] | None:
    """The grid (rows, cols) a click on the cohort's sweep heatmap names, or None. Its ``customdata`` starts with
    [rows, cols] (:func:`app.figures.sweep.sweep_figure`), but Dash's Graph leaves a heatmap point's customdata out of
    ``clickData`` (it copies it only for a numeric ``pointNumber``, a heatmap's is [i, j]); a browser's click names
    the cell by its ``x``, ``y`` positions on the lattice instead, read against the sweep table's sizes as the figure
    lays them out."""
    if not isinstance(point, dict):
        return None
    custom = point.get("customdata")
    if isinstance(custom, list | tuple) and len(custom) >= 2:
        return tuple(custom[:2]) if all(isinstance(v, int) and not isinstance(v, bool) for v in custom[:2]) else None
    table = sweep_table(ex, cohort) if cohort in ex.run.cohorts else None
    x, y = point.get("x"), point.get("y")
    if table is None or table.empty or not all(isinstance(v, int) and not isinstance(v, bool) for v in (x, y)):
        return None
    rows, cols = sorted({int(v) for v in table["rows"]}), sorted({int(v) for v in table["cols"]})
    if not (0 <= y < len(rows) and 0 <= x < len(cols)):
        return None
    return rows[y], cols[x]


def sweep_view(ex: Explorer, cohort: str, grid=None) -> go.Figure:
    """The cohort's sweep heatmaps with the grid on the map outlined, or what to do when there is no sweep."""
    table = sweep_table(ex, cohort)
    if table is None or table.empty:
        return empty_figure(f"Grid-stability sweep of {cohort}",
                            f"No sweep of {cohort} in this run yet: run one here (left), or from the shell:<br>"
                            f"msma sweep --cohort {cohort}")
    view = ex.map(grid)
    # The sweep's maps are fitted on the score norms: a map with GNSM norms is none of its cells.
    shown = (view.som.n_rows, view.som.n_cols) if view.norms == "msma" else None
    return sweep_figure(table, cohort, shown)


def sweep_status(ex: Explorer, cohort: str) -> str:
    table = sweep_table(ex, cohort)
    if table is None:
        return f"No sweep of {cohort} yet."
    rows, cols = table["rows"], table["cols"]
    return (f"This run's sweep of {cohort}: {len(table)} grids, rows {rows.min()}-{rows.max()} × columns "
            f"{cols.min()}-{cols.max()}.")


def stability_note(ex: Explorer, selection: dict) -> tuple[str, str]:
    """How stable the selection's members of its cohort are over the neighbouring grid sizes, from the cohort's
    sweep, or how to get a sweep: (badge, sentence). The badge fits on one line under the map at 1600 px ("Stability:
    same 14 members (Jaccard ≥ 0.8) in 41/48 grids ±3 rows/cols"); the sentence says the same in full, for its
    tooltip."""
    cohort = selection["cohort"]
    grid = check_grid(selection.get("grid"))
    view = ex.map(grid)
    som = view.som
    if view.norms != "msma":  # no sweep table to read: sweeps fit the score norms only
        return ("Stability: sweeps measure score-norm maps only",
                f"Stability: a grid sweep fits its maps on the score norms alone, so it says nothing of this map of "
                f"{SOM_INPUTS[view.norms]}; switch the SOM input back to compare.")
    inside, _ = cohort_members(ex, cohort, selection["units"], grid)
    table = sweep_table(ex, cohort)
    if table is None:
        return (f"Stability: no sweep of {cohort} yet (Grid sweep room)",
                f"Stability: no sweep of {cohort} yet (start one in the Grid sweep room).")
    if "topology" in table.columns and (table["topology"] != som.topology).all():
        return (f"Stability: the sweep is not {som.topology}",
                f"Stability: the sweep of {cohort} used another topology than this {som.topology} map.")
    if not inside:
        return (f"Stability: no member of {cohort} selected",
                f"Stability: the selection holds no member of {cohort}.")
    near = table[((table["rows"] - som.n_rows).abs() <= NEIGHBOURHOOD)
                 & ((table["cols"] - som.n_cols).abs() <= NEIGHBOURHOOD)
                 & ~((table["rows"] == som.n_rows) & (table["cols"] == som.n_cols))]
    if near.empty:
        return (f"Stability: no swept grid within ±{NEIGHBOURHOOD} rows/cols",
                f"Stability: the sweep of {cohort} has no grid within {NEIGHBOURHOOD} rows and columns of this "
                f"{som.n_rows} × {som.n_cols} one.")
    chosen = set(inside)
    kept = sum(1 for members in near["members"]
               if len(chosen & set(members)) / len(chosen | set(members)) >= STABLE_JACCARD)
    return (f"Stability: same {len(inside)} members (Jaccard ≥ {STABLE_JACCARD:g}) in {kept}/{len(near)} grids "
            f"±{NEIGHBOURHOOD} rows/cols",
            f"Stability: these {len(inside)} members of {cohort} are the cohort's maximal prototype (Jaccard overlap "
            f"≥ {STABLE_JACCARD:g}) in {kept} of the {len(near)} swept grids within ±{NEIGHBOURHOOD} rows and "
            f"columns of this {som.n_rows} × {som.n_cols} map.")


# --- provenance -----------------------------------------------------------------------------------------------------


def provenance(ex: Explorer) -> dict:
    """Where the run's numbers come from, from its ``run.json``: the manifest's path and digest, the date, profile
    and device, the score model, the noise scales, the detection metrics (AUROC per norm set, detector and
    cohort), versions and warnings. Sections a run lacks are None."""
    record = ex.run.record
    model = record.get("score_model") or None
    schedule = record.get("schedule") or {}
    detection: dict[str, dict[str, dict[str, float | None]]] = {}
    for row in record.get("metrics") or []:
        detection.setdefault(row.get("norms", "?"), {}).setdefault(row.get("detector", "?"), {})[
            row.get("group", "?")] = row.get("auroc")
    return {
        "run_id": ex.run.run_id, "run_dir": str(ex.run.run_dir), "study": ex.run.study_name,
        "created_utc": record.get("created_utc"), "manifest": record.get("manifest") or {},
        "profile": record.get("profile"), "device": record.get("device"),
        "score_model": None if model is None else {
            "steps": model.get("steps"), "stopped": model.get("stopped"), "best_val_loss": model.get("best_val_loss"),
            "parameters": model.get("parameters"), "reused": bool(model.get("reused")),
        },
        "sigmas": schedule.get("sigmas"), "detection": detection, "versions": record.get("versions") or {},
        "warnings": record.get("warnings") or [], "gnsm": gnsm_provenance(record.get("gnsm")),
    }


def gnsm_provenance(section) -> str | None:
    """The run's GNSM fit in one line ("sex, age, icv_ml + 20 score norms; 1200 steps (early_stopping), best
    validation loss 11.56, 21.5 s"), or None for a run without a gnsm: block."""
    if not isinstance(section, dict):
        return None
    modelled = ", ".join(section.get("columns") or {}) or "no subject columns"
    if section.get("with_score_norms"):
        modelled += f" + {sum(1 for c in section.get('continuous') or [] if c.startswith('norm_'))} score norms"
    loss = section.get("best_val_loss")
    fit = (f"{section.get('steps', '?')} steps ({section.get('stopped', '?')}), best validation loss "
           f"{'n/a' if loss is None else f'{loss:.4g}'}")
    fit += " (reused checkpoint)" if section.get("reused") else (
        f", {section['seconds']:.1f} s" if isinstance(section.get("seconds"), int | float) else "")
    return f"{modelled}; {section.get('n_scales', '?')} scales; {fit}"


# --- one subject ----------------------------------------------------------------------------------------------------


def subject_story(ex: Explorer, subject: str, scores: str):
    """:func:`analysis.exploration.subject.subject_story` of the run, with the reference centile curves of the
    default detector fitted once per run and remembered."""
    from analysis.exploration.subject import default_detector, fit_reference_centiles
    from analysis.exploration.subject import subject_story as story

    detector = default_detector(ex.run.detector_scores.columns)
    key = ("centiles", detector)
    with ex._lock:
        centiles = ex._lookups.get(key)
    if centiles is None:
        held_out = ex.run.subjects.index.isin(ex.run.reference_ids)
        centiles = fit_reference_centiles(ex.run.detector_scores[detector].to_numpy(dtype=float)[held_out],
                                          ex.run.subjects["age"].to_numpy(dtype=float)[held_out])
        with ex._lock:
            ex._lookups[key] = centiles
    return story(ex.run, subject, scores, detector, centiles=centiles)


def subject_view(ex: Explorer, subject: str | None, scores: str):
    """The subject room: (header, norm-profile figure, centile chart, the subject's story or None); honest empty
    states when no subject is found."""
    if subject is None:
        header = ("Find a subject by id in the box at the top right: its score-norm profile, its place on the "
                  "reference cohort's centile chart and its most atypical ROIs appear here, and it is marked in "
                  "every view.")
        return (header, empty_figure("Score-norm profile", "No subject chosen."),
                empty_figure("Detector score against age", "No subject chosen."), None)
    from app.figures.subject import centile_figure, norm_profile_figure

    story = subject_story(ex, subject, scores)
    style = ex.styles[story.cohort]
    bmu = ex.run.subjects.loc[subject, ["bmu_row", "bmu_col"]].astype(int).tolist()
    age = "age unknown" if not np.isfinite(story.age) else f"{story.age:.1f} y"
    header = (f"Subject {subject} · {story.cohort} · {story.sex or 'sex unknown'} · {age} · best-matching unit "
              f"({bmu[0]}, {bmu[1]}) · {story.detector_name} {ex.run.detector_scores.at[subject, story.detector]:.4g} "
              f"({story.detector_unit})")
    if "gnsm_gmm" in ex.run.detector_scores.columns and story.detector != "gnsm_gmm":
        from analysis.exploration.subject import detector_label

        name, unit = detector_label("gnsm_gmm")
        header += f" · {name} {ex.run.detector_scores.at[subject, 'gnsm_gmm']:.4g} ({unit})"
    profile = norm_profile_figure(story.profile, style, subject, story.cohort, story.reference_cohort, story.sigmas)
    chart = centile_figure(story.chart, style, subject, story.cohort, story.reference_cohort, story.detector_name,
                           story.detector_unit)
    return header, profile, chart, story
