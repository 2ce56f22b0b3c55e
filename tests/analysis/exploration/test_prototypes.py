"""Tests of the multi-unit prototype definitions on small synthetic score-norm sets whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from minisom import MiniSom
from scipy.stats import fisher_exact, hypergeom

from analysis.exploration import prototypes as P
from analysis.exploration.som import SelfOrganizingMap

L = 8
GRID = (5, 6)
N_REFERENCE, N_SUBGROUP, N_REST = 150, 20, 8


def make_cohort(seed: int, n_subgroup: int = N_SUBGROUP):
    """Positive norms: a reference cloud, a "ds" cohort whose subgroup is strung along a segment away from it
    (two clusters that run into each other, which the map splits over two neighbouring units) and whose other
    members are drawn like the reference."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0.0, 6.0, L)
    reference = base + rng.normal(scale=0.3, size=(N_REFERENCE, L))
    subgroup = base + rng.normal(scale=0.1, size=(n_subgroup, L))
    subgroup[:, :4] += 1.5
    subgroup[:, 4:] += 2.0 * np.linspace(0.0, 1.0, n_subgroup)[:, None]
    rest = base + rng.normal(scale=0.3, size=(N_REST, L))
    X = np.exp(np.vstack([reference, subgroup, rest]))
    labels = np.array(["typical"] * N_REFERENCE + ["ds"] * (n_subgroup + N_REST))
    return X, labels, np.arange(N_REFERENCE, N_REFERENCE + n_subgroup)


def fit(X, labels):
    return SelfOrganizingMap(*GRID, n_iterations=60).fit(X, reference=labels == "typical")


@pytest.fixture(scope="module", params=[0, 1, 2])
def spread(request):
    """A cohort whose subgroup the map spreads over exactly two neighbouring units (checked)."""
    X, labels, subgroup = make_cohort(request.param)
    som = fit(X, labels)
    units = {tuple(u) for u in som.bmu_[subgroup].tolist()}
    assert len(units) == 2
    (r0, c0), (r1, c1) = units
    assert max(abs(r0 - r1), abs(c0 - c1)) == 1
    return X, labels, subgroup, som, units


def precision_recall(prototype, subgroup):
    found = len(set(prototype.members.tolist()) & set(subgroup.tolist()))
    return found / prototype.size, found / len(subgroup)


def test_maximal_gets_one_of_the_two_units(spread):
    _, labels, subgroup, som, units = spread
    p = P.maximal(som, labels, "ds")
    assert len(p.units) == 1 and p.units[0] in units
    precision, recall = precision_recall(p, subgroup)
    assert precision == 1.0 and recall < 0.8
    classic = som.maximal_prototype(labels, "ds")
    np.testing.assert_array_equal(p.members, classic.members)
    assert p.units == (classic.unit,) and p.size == classic.size and p.cohort_size == classic.cohort_size


def test_enriched_gathers_both_units(spread):
    _, labels, subgroup, som, units = spread
    p = P.enriched(som, labels, "ds", "typical")
    assert set(p.units) == units and p.note is None
    assert precision_recall(p, subgroup) == (1.0, 1.0)
    assert p.definition == "enriched" and p.cohort_size == N_SUBGROUP + N_REST


def test_enriched_region_gathers_both_units(spread):
    _, labels, subgroup, som, units = spread
    p = P.enriched_region(som, labels, "ds", "typical")
    assert units <= set(p.units) and p.note is None
    assert precision_recall(p, subgroup) == (1.0, 1.0)
    # No neighbour of the region would lower its p-value further.
    table = P.unit_enrichment(som, labels, "ds", "typical")
    C, R = table["cohort_count"].sum(), table["reference_count"].sum()
    flat = [r * GRID[1] + c for r, c in p.units]

    def region_p(units):
        c, r = table["cohort_count"].iloc[units].sum(), table["reference_count"].iloc[units].sum()
        return hypergeom(C + R, C, c + r).sf(c - 1)

    adjacency = P.lattice_adjacency(*GRID).toarray()
    frontier = set(np.flatnonzero(adjacency[flat].any(axis=0))) - set(flat)
    assert all(region_p([*flat, u]) >= region_p(flat) for u in frontier)


def test_superclass_gathers_both_units(spread):
    _, labels, subgroup, som, units = spread
    p = P.superclass(som, labels, "ds")
    assert units <= set(p.units)
    assert precision_recall(p, subgroup) == (1.0, 1.0)
    classes = P.superclasses(som)
    assert classes.shape == GRID and len({classes[u] for u in p.units}) == 1


def test_stable_keeps_the_members_most_grids_agree_on(spread):
    X, labels, subgroup, som, units = spread
    p = P.stable(som, labels, "ds", X)
    assert set(p.units) <= units
    assert set(p.members.tolist()) <= set(subgroup.tolist())
    with pytest.raises(ValueError, match="rows the map was fitted on"):
        P.stable(som, labels, "ds", X[:-1])


def test_enrichment_p_values_match_scipy(spread):
    _, labels, _, som, _ = spread
    table = P.unit_enrichment(som, labels, "ds", "typical")
    assert len(table) == GRID[0] * GRID[1]
    C, R = int((labels == "ds").sum()), int((labels == "typical").sum())
    assert table["cohort_count"].sum() == C and table["reference_count"].sum() == R
    for row in table.itertuples():
        c, r = row.cohort_count, row.reference_count
        expected = hypergeom(C + R, C, c + r).sf(c - 1) if c > 0 else 1.0
        assert row.p_value == pytest.approx(expected, rel=1e-9, abs=1e-300)
        if c > 0:
            _, fisher = fisher_exact([[c, r], [C - c, R - r]], alternative="greater")
            assert row.p_value == pytest.approx(fisher, rel=1e-7, abs=1e-300)
        counted = (som.bmu_[:, 0] == row.row) & (som.bmu_[:, 1] == row.col)
        assert c == (counted & (labels == "ds")).sum() and r == (counted & (labels == "typical")).sum()


def test_cohort_of_one_is_its_own_unit():
    X, labels, subgroup = make_cohort(0)
    labels = labels.copy()
    labels[N_REFERENCE:] = "other"
    labels[subgroup[0]] = "single"
    som = fit(X, labels)
    unit = tuple(som.bmu_[subgroup[0]].tolist())
    for name in P.DEFINITIONS:
        p = P.cohort_prototype(name, som, labels, "single", reference_cohort="typical", X=X)
        assert p.members.tolist() == [subgroup[0]] and p.cohort_size == 1 and p.fraction == 1.0
        assert unit in p.units
    # With r reference subjects beside it in its unit, its p-value is (r + 1) / (R + 1).
    table = P.unit_enrichment(som, labels, "single", "typical")
    row = table[(table.row == unit[0]) & (table.col == unit[1])].iloc[0]
    assert row.p_value == pytest.approx((row.reference_count + 1) / (N_REFERENCE + 1))


def test_no_enrichment_returns_the_maximal_prototype_with_a_note():
    """A cohort drawn like the reference, here enriched nowhere (checked; with other seeds chance alone enriches a
    unit at p < 0.05 about half the time on this 30-unit map): the maximal prototype comes back, said so."""
    rng = np.random.default_rng(7)
    X = np.exp(np.linspace(0.0, 6.0, L) + rng.normal(scale=0.3, size=(200, L)))
    labels = np.array(["typical"] * 180 + ["ds"] * 20)
    som = fit(X, labels)
    assert (P.unit_enrichment(som, labels, "ds", "typical")["p_value"] >= P.ENRICHMENT_ALPHA).all()
    p = P.enriched(som, labels, "ds", "typical")
    classic = som.maximal_prototype(labels, "ds")
    assert p.units == (classic.unit,) and p.note.startswith("no unit enriched")
    np.testing.assert_array_equal(p.members, classic.members)
    region = P.enriched_region(som, labels, "ds", "typical")
    assert region.units == (classic.unit,) and region.note == p.note


def test_lattice_adjacency_matches_minisom_neighbours():
    for topology in ("rectangular", "hexagonal"):
        adjacency = P.lattice_adjacency(4, 5, topology).toarray()
        assert (adjacency == adjacency.T).all() and not adjacency.diagonal().any()
        # minisom's distance_map sums over exactly these neighbours: with unit distances to every neighbour,
        # each unit's U-matrix entry is its neighbour count.
        som = MiniSom(4, 5, 1, topology=topology)
        positions = np.arange(20, dtype=float).reshape(4, 5, 1)
        expected = []
        for x in range(4):
            for y in range(5):
                som._weights = np.where(positions == x * 5 + y, 1.0, 0.0)
                touched = np.abs(som.distance_map(scaling="sum")) > 0
                touched[x, y] = False
                expected.append(touched.ravel())
        np.testing.assert_array_equal(adjacency, np.array(expected))
    assert P.lattice_adjacency(3, 3).toarray()[4].sum() == 8


def test_registry_and_errors(spread):
    X, labels, _, som, _ = spread
    assert set(P.DEFINITIONS) == {"maximal", "enriched", "enriched_region", "superclass", "stable"}
    assert all(d.description for d in P.DEFINITIONS.values())
    with pytest.raises(ValueError, match="needs reference_cohort"):
        P.cohort_prototype("enriched", som, labels, "ds")
    with pytest.raises(ValueError, match="needs X"):
        P.cohort_prototype("stable", som, labels, "ds")
    with pytest.raises(ValueError, match="unknown prototype definition"):
        P.cohort_prototype("nope", som, labels, "ds")
    with pytest.raises(ValueError, match="no members"):
        P.maximal(som, labels, "absent")
    with pytest.raises(ValueError, match="is the reference cohort"):
        P.enriched(som, labels, "typical", "typical")


def test_bridging_empty_units_joins_parts_the_map_draws_apart():
    """Two tight clusters the map puts at the two ends of an edge, with empty units between them: the patch of
    enriched units holds one of them, or both when empty units may join it."""
    rng = np.random.default_rng(0)
    base = np.linspace(0.0, 6.0, L)
    reference = base + rng.normal(scale=0.3, size=(N_REFERENCE, L))
    parts = base + rng.normal(scale=0.1, size=(16, L))
    parts[:, :4] += 1.5
    parts[8:, 4:] += 0.7
    X = np.exp(np.vstack([reference, parts]))
    labels = np.array(["typical"] * N_REFERENCE + ["ds"] * 16)
    som = fit(X, labels)
    a, b = ({tuple(u) for u in som.bmu_[rows].tolist()} for rows in (range(150, 158), range(158, 166)))
    assert len(a) == len(b) == 1 and a != b
    plain = P.enriched(som, labels, "ds", "typical")
    bridged = P.enriched(som, labels, "ds", "typical", bridge_empty=True)
    assert plain.size == 8 and len(plain.units) == 1
    assert set(bridged.units) == a | b and bridged.size == 16
