"""Cohort prototypes that do not hinge on one map unit (issue 15, item 4).

The dissertation's *maximal prototype* (ch. 6.2, :meth:`analysis.exploration.som.SelfOrganizingMap.maximal_prototype`)
is the single best-matching unit (BMU) holding the most of a cohort's members. A subgroup that the map spreads over a
few neighbouring units loses most of its members to that choice: each unit holds only a part of it. The definitions
here gather a prototype from several units of a fitted map:

- :func:`maximal`: the maximal prototype itself, as a one-unit :class:`UnitPrototype` (the baseline);
- :func:`enriched`: the units where the cohort is over-represented against the reference cohort (one-sided
  hypergeometric test per unit, i.e. Fisher's exact test of the unit's cohort vs reference counts), the connected
  patch of such units on the lattice that holds the maximal prototype's unit (or else the most enriched unit);
- :func:`enriched_region`: a region grown from that unit, neighbour by neighbour, while the region's own
  enrichment p-value falls (a greedy spatial scan statistic);
- :func:`superclass`: the codebook clustered into *superclasses* by Ward agglomeration constrained to lattice
  neighbours (aweSOM's superclasses, with a connectivity matrix), their number chosen by the Davies-Bouldin index
  (Vesanto & Alhoniemi 2000); the prototype is the superclass holding the most of the cohort;
- :func:`stable`: the cohort members that fall in the maximal prototype of most maps of a band of grid sizes around
  the fitted one (the stability sweep of ch. 6.3, :mod:`analysis.exploration.sweep`, read member by member).

Each returns a :class:`UnitPrototype`: the member row indices (into the rows given to ``fit``) and the units
involved. :data:`DEFINITIONS` maps each name to its function and a one-line description;
:func:`cohort_prototype` calls one by name. Units are ``(row, col)`` as in :mod:`analysis.exploration.som`, and two
units are *neighbours* when minisom's lattice makes them so: the 8 surrounding units on a rectangular lattice (as its
U-matrix and topographic error count them), the 6 touching hexagons on a hexagonal one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.stats import hypergeom
from sklearn.cluster import AgglomerativeClustering
from sklearn.metrics import davies_bouldin_score

from analysis.exploration.som import SelfOrganizingMap, unit_positions
from analysis.exploration.sweep import SweepGrids, grid_stability_sweep

__all__ = [
    "DEFINITIONS",
    "Definition",
    "UnitPrototype",
    "cohort_prototype",
    "enriched",
    "enriched_region",
    "lattice_adjacency",
    "maximal",
    "stable",
    "superclass",
    "superclasses",
    "unit_enrichment",
]

ENRICHMENT_ALPHA = 0.05
"""A unit is enriched when its one-sided hypergeometric p-value is below this (uncorrected: the rule asks which
units to merge, not whether any single one is a discovery)."""
STABLE_SHARE = 0.5
"""A member is stable when it is in the maximal prototype of more than this share of the band's grids."""


@dataclass(frozen=True)
class UnitPrototype:
    """A cohort's prototype gathered from one or more map units.

    Attributes
    ----------
    cohort : str
        The cohort label.
    definition : str
        The name of the definition that built it (a key of :data:`DEFINITIONS`).
    units : tuple of (int, int)
        ``(row, col)`` of the units involved, in row-major order.
    members : ndarray of int, shape (size,)
        Row indices (into the rows given to ``fit``) of the cohort's members in the prototype, ascending.
    cohort_size : int
        Number of fitted subjects in the cohort.
    note : str or None
        Why the definition's own rule did not apply and what was returned instead (e.g. no unit enriched: the
        maximal prototype); None when it applied.
    """

    cohort: str
    definition: str
    units: tuple[tuple[int, int], ...]
    members: np.ndarray
    cohort_size: int
    note: str | None = None

    @property
    def size(self) -> int:
        """``len(members)``."""
        return int(self.members.size)

    @property
    def fraction(self) -> float:
        """Share of the cohort in the prototype, ``size / cohort_size``."""
        return self.size / self.cohort_size


def _flat_units(som: SelfOrganizingMap) -> np.ndarray:
    """Row-major index of every fitted subject's BMU, shape (n_subjects,)."""
    return som.bmu_[:, 0] * som.weights_.shape[1] + som.bmu_[:, 1]


def _units(flat, n_cols: int) -> tuple[tuple[int, int], ...]:
    return tuple((int(u // n_cols), int(u % n_cols)) for u in sorted(set(np.asarray(flat).tolist())))


def _cohort_rows(som: SelfOrganizingMap, labels, cohort: str) -> tuple[np.ndarray, np.ndarray]:
    """Checked labels and the row indices of ``cohort`` (raises, listing the labels, when it has none)."""
    labels = som._check_labels(labels)
    rows = np.flatnonzero(labels == cohort)
    if rows.size == 0:
        present = ", ".join(repr(label) for label in np.unique(labels).tolist())
        raise ValueError(f"cohort {cohort!r} has no members among the fitted rows; labels present: {present}")
    return labels, rows


def _prototype(som, labels, cohort: str, definition: str, unit_set, note: str | None = None) -> UnitPrototype:
    """The cohort's members whose BMU is in ``unit_set`` (row-major unit indices)."""
    _, rows = _cohort_rows(som, labels, cohort)
    flat = _flat_units(som)
    members = rows[np.isin(flat[rows], np.asarray(sorted(unit_set), dtype=int))]
    return UnitPrototype(
        cohort=cohort,
        definition=definition,
        units=_units(list(unit_set), som.weights_.shape[1]),
        members=members,
        cohort_size=int(rows.size),
        note=note,
    )


def lattice_adjacency(n_rows: int, n_cols: int, topology: str = "rectangular") -> csr_matrix:
    """Which units are lattice neighbours: a symmetric boolean ``(n_units, n_units)`` matrix, row-major units.

    Neighbours are the units within 1.5 grid units of each other where minisom places them
    (:func:`analysis.exploration.som.unit_positions`): on a rectangular lattice the 4 edge and 4 diagonal neighbours
    (at 1 and sqrt(2)), on a hexagonal one the 6 touching hexagons (at 1; the next ring is at sqrt(3)).
    """
    across, up = unit_positions(n_rows, n_cols, topology)
    points = np.column_stack([across.ravel(), up.ravel()])
    distance = np.linalg.norm(points[:, None, :] - points[None, :, :], axis=-1)
    return csr_matrix((distance > 0) & (distance < 1.5))


def _som_adjacency(som: SelfOrganizingMap) -> csr_matrix:
    return lattice_adjacency(*som.weights_.shape[:2], som.topology)


def maximal(som: SelfOrganizingMap, labels, cohort: str) -> UnitPrototype:
    """The dissertation's maximal prototype (the BMU holding most of ``cohort``) as a one-unit prototype."""
    p = som.maximal_prototype(labels, cohort)
    return UnitPrototype(cohort, "maximal", (p.unit,), p.members, p.cohort_size)


def unit_enrichment(som: SelfOrganizingMap, labels, cohort: str, reference_cohort: str) -> pd.DataFrame:
    """Per unit, the over-representation of ``cohort`` against ``reference_cohort``.

    Of the ``C + R`` subjects of the two cohorts, a unit holds ``c`` of the cohort and ``r`` of the reference. Under
    the null (the unit's subjects are a random draw from the two cohorts pooled), ``c`` is hypergeometric; the
    one-sided p-value is ``P(X >= c)`` for ``X ~ Hypergeom(M=C + R, n=C, N=c + r)``, the same as Fisher's exact test
    of ``[[c, r], [C - c, R - r]]`` with ``alternative="greater"``. Units holding no cohort member get p = 1.

    Returns
    -------
    DataFrame, one row per unit in row-major order: ``row``, ``col``, ``cohort_count``, ``reference_count``,
    ``p_value``.
    """
    labels, rows = _cohort_rows(som, labels, cohort)
    if cohort == reference_cohort:
        raise ValueError(f"cohort {cohort!r} is the reference cohort: its enrichment against itself is undefined")
    reference = np.flatnonzero(labels == reference_cohort)
    if reference.size == 0:
        raise ValueError(f"reference cohort {reference_cohort!r} has no members among the fitted rows")
    n_units = som.weights_.shape[0] * som.weights_.shape[1]
    flat = _flat_units(som)
    c = np.bincount(flat[rows], minlength=n_units)
    r = np.bincount(flat[reference], minlength=n_units)
    p = np.where(c > 0, hypergeom.sf(c - 1, rows.size + reference.size, rows.size, c + r), 1.0)
    unit = np.arange(n_units)
    return pd.DataFrame(
        {"row": unit // som.weights_.shape[1], "col": unit % som.weights_.shape[1], "cohort_count": c,
         "reference_count": r, "p_value": np.clip(p, 0.0, 1.0)}
    )


def enriched(
    som: SelfOrganizingMap,
    labels,
    cohort: str,
    reference_cohort: str,
    *,
    alpha: float = ENRICHMENT_ALPHA,
    bridge_empty: bool = False,
) -> UnitPrototype:
    """The connected patch of enriched units holding the maximal prototype's unit, or else the most enriched unit.

    A unit is enriched when its :func:`unit_enrichment` p-value is below ``alpha``; enriched units that are lattice
    neighbours (:func:`lattice_adjacency`) are merged into patches. The prototype is the patch containing the
    maximal prototype's unit when that unit is enriched, else the patch containing the unit of smallest p-value
    (ties: more cohort members, then the lowest unit). When no unit is enriched, the maximal prototype is returned,
    with a ``note`` saying so.

    With ``bridge_empty``, units that are the BMU of no fitted subject (the map's interpolating units, between
    clusters of the data) also join patches, without adding members: a subgroup the map draws out with empty units
    between its parts stays one patch.
    """
    table, seed = _enrichment_seed(som, labels, cohort, reference_cohort, alpha)
    if seed is None:
        return _no_enrichment(som, labels, cohort, "enriched", alpha)
    is_enriched = table["p_value"].to_numpy() < alpha
    passable = is_enriched.copy()
    if bridge_empty:
        passable |= np.bincount(_flat_units(som), minlength=passable.size) == 0
    _, component = connected_components(_som_adjacency(som)[passable][:, passable], directed=False)
    component_of = np.full(passable.size, -1)
    component_of[passable] = component
    patch = np.flatnonzero(is_enriched & (component_of == component_of[seed]))
    return _prototype(som, labels, cohort, "enriched", set(patch.tolist()))


def _enrichment_seed(som, labels, cohort: str, reference_cohort: str, alpha: float) -> tuple[pd.DataFrame, int | None]:
    """The :func:`unit_enrichment` table and the unit an enriched prototype starts from (row-major index): the
    maximal prototype's unit when it is enriched, else the unit of smallest p-value (ties: more cohort members,
    then the lowest unit); None when no unit is enriched at ``alpha``."""
    table = unit_enrichment(som, labels, cohort, reference_cohort)
    p = table["p_value"].to_numpy()
    if not (p < alpha).any():
        return table, None
    peak = som.maximal_prototype(labels, cohort).unit
    peak_flat = peak[0] * som.weights_.shape[1] + peak[1]
    if p[peak_flat] < alpha:
        return table, peak_flat
    return table, int(np.lexsort((table.index.to_numpy(), -table["cohort_count"].to_numpy(), p))[0])


def _no_enrichment(som, labels, cohort: str, definition: str, alpha: float) -> UnitPrototype:
    peak = som.maximal_prototype(labels, cohort).unit
    note = f"no unit enriched at p < {alpha:g}: the maximal prototype's unit"
    return _prototype(som, labels, cohort, definition, {peak[0] * som.weights_.shape[1] + peak[1]}, note)


def enriched_region(
    som: SelfOrganizingMap, labels, cohort: str, reference_cohort: str, *, alpha: float = ENRICHMENT_ALPHA
) -> UnitPrototype:
    """A connected region grown from the enriched prototype's first unit while it grows more enriched.

    Starting from the unit :func:`enriched` starts from, the lattice neighbour of the region whose addition gives
    the smallest p-value of the merged region (the :func:`unit_enrichment` test on the region's summed cohort and
    reference counts; ties: the lowest unit) is added as long as it lowers that p-value (a greedy spatial scan
    statistic). Units without members can join. When no unit is enriched at ``alpha``, the maximal prototype is
    returned, with a ``note`` saying so.
    """
    table, seed = _enrichment_seed(som, labels, cohort, reference_cohort, alpha)
    if seed is None:
        return _no_enrichment(som, labels, cohort, "enriched_region", alpha)
    c, r = table["cohort_count"].to_numpy(), table["reference_count"].to_numpy()
    n_cohort, n_reference = int(c.sum()), int(r.sum())
    adjacency = _som_adjacency(som).toarray()

    def p_value(units: list[int]) -> float:
        members = int(c[units].sum())
        return float(hypergeom.sf(members - 1, n_cohort + n_reference, n_cohort, members + int(r[units].sum())))

    region, best = [seed], p_value([seed])
    while True:
        frontier = np.flatnonzero(adjacency[region].any(axis=0) & ~np.isin(np.arange(c.size), region))
        if frontier.size == 0:
            break
        scores = [p_value([*region, int(u)]) for u in frontier]
        pick = int(np.argmin(scores))  # first minimum: the lowest unit among ties
        if scores[pick] >= best:
            break
        region.append(int(frontier[pick]))
        best = scores[pick]
    return _prototype(som, labels, cohort, "enriched_region", set(region))


def superclasses(som: SelfOrganizingMap, n_superclasses: int | None = None) -> np.ndarray:
    """Superclass of every unit: Ward agglomeration of the codebook vectors, merging only lattice neighbours.

    ``n_superclasses`` defaults to the count in ``2 .. floor(sqrt(n_units))`` with the smallest Davies-Bouldin
    index of the codebook clustering (Vesanto & Alhoniemi 2000, clustering of the SOM; ties: fewer superclasses).

    Returns
    -------
    ndarray of int, shape (n_rows, n_cols)
        Superclass labels ``0 .. k - 1``.
    """
    n_rows, n_cols, n_features = som.weights_.shape
    codebook = som.weights_.reshape(-1, n_features)
    connectivity = _som_adjacency(som)

    def cluster(k: int) -> np.ndarray:
        model = AgglomerativeClustering(n_clusters=k, linkage="ward", connectivity=connectivity)
        return model.fit_predict(codebook)

    if n_superclasses is None:
        candidates = range(2, max(2, int(np.sqrt(n_rows * n_cols))) + 1)
        fits = {k: cluster(k) for k in candidates}
        scores = {k: davies_bouldin_score(codebook, fit) for k, fit in fits.items() if len(set(fit)) > 1}
        best = min(scores, key=lambda k: (scores[k], k))
        return fits[best].reshape(n_rows, n_cols)
    return cluster(n_superclasses).reshape(n_rows, n_cols)


def superclass(som: SelfOrganizingMap, labels, cohort: str, *, n_superclasses: int | None = None) -> UnitPrototype:
    """The superclass (:func:`superclasses`) holding the most of ``cohort``; ties: the superclass of fewer units,
    then the one with the lowest unit. Its units are all of the superclass's units, members or not."""
    _, rows = _cohort_rows(som, labels, cohort)
    classes = superclasses(som, n_superclasses).ravel()
    held = np.bincount(classes[_flat_units(som)[rows]], minlength=classes.max() + 1)
    n_units = np.bincount(classes, minlength=classes.max() + 1)
    best = min(range(held.size), key=lambda k: (-held[k], n_units[k], np.flatnonzero(classes == k)[0]))
    return _prototype(som, labels, cohort, "superclass", set(np.flatnonzero(classes == best).tolist()))


def stable(
    som: SelfOrganizingMap, labels, cohort: str, X, *, band: int = 1, share: float = STABLE_SHARE
) -> UnitPrototype:
    """The cohort members in the maximal prototype of more than ``share`` of the maps of a band of grid sizes.

    The band is every grid ``(rows + dr) x (cols + dc)`` with ``|dr|, |dc| <= band`` (sizes below 2 left out)
    around the fitted ``rows x cols``, each map fitted on ``X`` with the fitted map's reference rows, topology and
    iterations, as the stability sweep fits them (:func:`analysis.exploration.sweep.grid_stability_sweep`); the
    prototype's units are the fitted map's BMUs of the stable members. When no member is stable, the maximal
    prototype of the fitted map is returned, with a ``note`` saying so.

    Parameters
    ----------
    X : array_like, shape (n_subjects, L)
        The score norms the map was fitted on (the map keeps no copy).
    """
    labels, rows = _cohort_rows(som, labels, cohort)
    X = np.asarray(X, dtype=float)
    if X.shape[0] != som.bmu_.shape[0]:
        raise ValueError(f"X must be the {som.bmu_.shape[0]} rows the map was fitted on; received {X.shape[0]}")
    n_rows, n_cols = som.weights_.shape[:2]
    grids = SweepGrids(
        rows=[r for r in range(n_rows - band, n_rows + band + 1) if r >= 2],
        cols=[c for c in range(n_cols - band, n_cols + band + 1) if c >= 2],
        topology=som.topology,
        n_iterations=som.n_iterations,
    )
    sweep = grid_stability_sweep(X, labels, cohort, reference=som.reference_mask_, grids=grids, n_jobs=1,
                                 progress=False)
    counts = pd.Series(np.concatenate(sweep["members"].to_list()), dtype=int).value_counts()
    members = np.sort(counts.index[counts > share * len(sweep)].to_numpy(dtype=int))
    if members.size == 0:
        peak = som.maximal_prototype(labels, cohort).unit
        note = f"no member in the maximal prototype of over {share:.0%} of {len(sweep)} grids: the maximal prototype"
        return _prototype(som, labels, cohort, "stable", {peak[0] * n_cols + peak[1]}, note)
    units = _flat_units(som)[members]
    return UnitPrototype(cohort, "stable", _units(units, n_cols), members, int(rows.size))


@dataclass(frozen=True)
class Definition:
    """A prototype definition: its function and a one-line description; ``needs`` names the arguments beyond the
    map, the labels and the cohort (``reference_cohort``, ``X``)."""

    function: Callable[..., UnitPrototype]
    description: str
    needs: tuple[str, ...] = ()


DEFINITIONS: dict[str, Definition] = {
    "maximal": Definition(maximal, "the single unit holding the most of the cohort (dissertation ch. 6.2)"),
    "enriched": Definition(
        enriched,
        f"the connected patch of units where the cohort is over-represented against the reference "
        f"(hypergeometric p < {ENRICHMENT_ALPHA:g}) holding the maximal prototype's unit",
        ("reference_cohort",),
    ),
    "enriched_region": Definition(
        enriched_region,
        "a connected region grown from that unit by the neighbour that most lowers the region's enrichment p-value",
        ("reference_cohort",),
    ),
    "superclass": Definition(
        superclass, "the codebook superclass (adjacency-constrained Ward, Davies-Bouldin count) holding most of it"
    ),
    "stable": Definition(
        stable, "the members in the maximal prototype of most maps of the grids one row or column around", ("X",)
    ),
}
"""Prototype definitions by name."""


def cohort_prototype(
    name: str, som: SelfOrganizingMap, labels, cohort: str, *, reference_cohort: str | None = None, X=None
) -> UnitPrototype:
    """The prototype of ``cohort`` by the definition ``name`` of :data:`DEFINITIONS`, handing it the arguments it
    needs (``reference_cohort`` for ``enriched``, the fitted norms ``X`` for ``stable``)."""
    if name not in DEFINITIONS:
        raise ValueError(f"unknown prototype definition {name!r}; expected one of {sorted(DEFINITIONS)}")
    definition = DEFINITIONS[name]
    given = {"reference_cohort": reference_cohort, "X": X}
    missing = [k for k in definition.needs if given[k] is None]
    if missing:
        raise ValueError(f"prototype definition {name!r} needs {', '.join(missing)}")
    return definition.function(som, labels, cohort, *(given[k] for k in definition.needs))


CHAIN_DEFINITION = "enriched"
"""The prototype definition the refresh's chain and the explorer's first selection use (docs/prototypes.md: the
maximal prototype on the default demo, more recall at the same precision on weaker subgroups)."""


def add_subgroups(record: dict, som: SelfOrganizingMap, labels, ids: Sequence, reference_cohort: str) -> dict:
    """Give every non-reference cohort's entry of a run's ``som.prototypes`` its :data:`CHAIN_DEFINITION`
    prototype under ``subgroup``: ``definition``, ``units`` ([row, col] lists), ``members`` (subject ids),
    ``size`` and ``note``. The maximal prototype's own keys stay as they are. Returns ``record``."""
    labels = np.asarray(labels)
    for cohort, entry in record["prototypes"].items():
        if cohort == reference_cohort:
            continue
        p = enriched(som, labels, cohort, reference_cohort)
        entry["subgroup"] = {"definition": p.definition, "units": [list(u) for u in p.units],
                             "members": [ids[i] for i in p.members], "size": p.size, "note": p.note}
    return record


def chain_selections(prototypes: dict) -> dict[str, dict]:
    """cohort -> {"members": [...]} of the prototype the chain tests: the ``subgroup`` when the run has one (runs
    made before it existed: the maximal prototype)."""
    return {cohort: {"members": entry.get("subgroup", entry)["members"]} for cohort, entry in prototypes.items()}
