"""Tests of the Self-Organizing Map wrapper against independent numpy computations, on an odd 5 x 6 grid."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.exploration.som import Prototype, SelfOrganizingMap

N_ROWS, N_COLS, L = 5, 6, 8


def make_cohort(seed: int = 0, n_typical: int = 200, n_ds: int = 25, n_planted: int = 15):
    """Positive norms spanning orders of magnitude; ``n_planted`` "ds" subjects form a tight, far cluster."""
    rng = np.random.default_rng(seed)
    base = np.linspace(0.0, 6.0, L)  # log-norms grow across scales, so columns differ by orders of magnitude
    logs = base + rng.normal(scale=0.3, size=(n_typical + n_ds, L))
    planted = np.arange(n_typical, n_typical + n_planted)
    logs[planted] = base + rng.normal(scale=0.03, size=(n_planted, L))
    logs[planted, :3] += 3.0  # far from everyone in three scales
    labels = np.array(["typical"] * n_typical + ["ds"] * n_ds)
    return np.exp(logs), labels, planted


@pytest.fixture(scope="module")
def cohort():
    return make_cohort()


@pytest.fixture(scope="module")
def fitted(cohort):
    X, labels, _ = cohort
    som = SelfOrganizingMap(n_rows=N_ROWS, n_cols=N_COLS, n_iterations=60)
    return som.fit(X, reference=labels == "typical")


def standardised(X, reference):
    logs = np.log(X)
    return (logs - logs[reference].mean(axis=0)) / logs[reference].std(axis=0)


def test_fit_returns_self_and_sets_shapes(cohort):
    X, labels, _ = cohort
    som = SelfOrganizingMap(n_rows=N_ROWS, n_cols=N_COLS, n_iterations=20)
    assert som.fit(X) is som
    assert som.weights_.shape == (N_ROWS, N_COLS, L)
    assert som.bmu_.shape == (X.shape[0], 2)
    assert np.issubdtype(som.bmu_.dtype, np.integer)
    assert som.bmu_[:, 0].max() < N_ROWS and som.bmu_[:, 1].max() < N_COLS
    assert som.u_matrix_.shape == (N_ROWS, N_COLS)
    assert som.center_.shape == som.scale_.shape == (L,)
    assert som.quantization_distances_.shape == (X.shape[0],)
    assert np.isscalar(som.quantization_error_) and 0.0 <= som.topographic_error_ <= 1.0
    assert som.som_.get_weights().shape == (N_ROWS, N_COLS, L)


def test_init_stores_parameters_only():
    som = SelfOrganizingMap(n_rows=3, n_cols=4, sigma=2.0, topology="hexagonal")
    assert som.get_params()["sigma"] == 2.0
    assert not [name for name in vars(som) if name.endswith("_")]


def test_deterministic(cohort):
    X, _, _ = cohort
    a = SelfOrganizingMap(n_rows=N_ROWS, n_cols=N_COLS, n_iterations=20, random_state=3).fit(X)
    b = SelfOrganizingMap(n_rows=N_ROWS, n_cols=N_COLS, n_iterations=20, random_state=3).fit(X)
    np.testing.assert_array_equal(a.weights_, b.weights_)
    np.testing.assert_array_equal(a.bmu_, b.bmu_)


def test_standardisation_uses_reference_rows_only(cohort, fitted):
    X, labels, _ = cohort
    logs = np.log(X[labels == "typical"])
    np.testing.assert_allclose(fitted.center_, logs.mean(axis=0))
    np.testing.assert_allclose(fitted.scale_, logs.std(axis=0))
    # An index array selects the same rows as the mask.
    again = SelfOrganizingMap(n_rows=N_ROWS, n_cols=N_COLS, n_iterations=1).fit(
        X, reference=np.flatnonzero(labels == "typical")
    )
    np.testing.assert_allclose(again.center_, fitted.center_)
    # The default reference (all rows) gives different parameters here.
    everyone = SelfOrganizingMap(n_rows=N_ROWS, n_cols=N_COLS, n_iterations=1).fit(X)
    np.testing.assert_allclose(everyone.center_, np.log(X).mean(axis=0))
    assert not np.allclose(everyone.center_, fitted.center_)


def test_bmus_are_brute_force_argmin(cohort, fitted):
    X, labels, _ = cohort
    Z = standardised(X, labels == "typical")
    W = fitted.weights_
    d = np.sqrt(((Z[:, None, None, :] - W[None, :, :, :]) ** 2).sum(axis=-1))  # (n, rows, cols)
    flat = d.reshape(len(Z), -1).argmin(axis=1)
    expected = np.column_stack([flat // N_COLS, flat % N_COLS])
    np.testing.assert_array_equal(fitted.bmu_, expected)
    np.testing.assert_array_equal(fitted.bmus(X), expected)
    np.testing.assert_array_equal(fitted.bmus(X[7:9]), expected[7:9])


def test_quantization_error_is_mean_distance_to_bmu(cohort, fitted):
    X, labels, _ = cohort
    Z = standardised(X, labels == "typical")
    distances = np.linalg.norm(Z - fitted.weights_[fitted.bmu_[:, 0], fitted.bmu_[:, 1]], axis=1)
    np.testing.assert_allclose(fitted.quantization_distances_, distances, rtol=1e-10)
    np.testing.assert_allclose(fitted.quantization_error_, distances.mean(), rtol=1e-8)


def test_hexagonal_topology_fits(cohort):
    X, _, _ = cohort
    som = SelfOrganizingMap(n_rows=N_ROWS, n_cols=N_COLS, topology="hexagonal", n_iterations=20).fit(X)
    assert som.weights_.shape == (N_ROWS, N_COLS, L)
    assert som.u_matrix_.shape == (N_ROWS, N_COLS)
    assert 0.0 <= som.topographic_error_ <= 1.0
    assert som.som_.topology == "hexagonal"


def test_hit_maps_sum_to_cohort_sizes(cohort, fitted):
    _, labels, _ = cohort
    hits = fitted.hit_map(labels)
    assert set(hits) == {"typical", "ds"}
    assert hits["typical"].shape == (N_ROWS, N_COLS)
    assert hits["typical"].sum() == 200 and hits["ds"].sum() == 25
    total = hits["typical"] + hits["ds"]
    np.testing.assert_array_equal(
        total.ravel(), np.bincount(fitted.bmu_[:, 0] * N_COLS + fitted.bmu_[:, 1], minlength=N_ROWS * N_COLS)
    )


def test_maximal_prototype_recovers_planted_subgroup(cohort, fitted):
    _, labels, planted = cohort
    proto = fitted.maximal_prototype(labels, "ds")
    assert isinstance(proto, Prototype)
    assert proto.cohort == "ds" and proto.cohort_size == 25 and proto.size == proto.members.size
    hits = fitted.hit_map(labels)["ds"]
    assert proto.unit == np.unravel_index(hits.argmax(), hits.shape)
    assert hits[proto.unit] == proto.size
    found = np.intersect1d(proto.members, planted).size
    assert found / proto.size >= 0.8  # precision
    assert found / planted.size >= 0.8  # recall
    assert (labels[proto.members] == "ds").all()
    assert (fitted.bmu_[proto.members] == proto.unit).all()


def test_maximal_prototype_tie_break():
    # Two cohort members in each of two units; the tighter pair's unit wins, whatever its position.
    som = SelfOrganizingMap(n_rows=2, n_cols=2)
    som.weights_ = np.zeros((2, 2, 2))
    som.bmu_ = np.array([[0, 0], [0, 0], [1, 1], [1, 1], [0, 1]])
    som.quantization_distances_ = np.array([0.9, 0.9, 0.1, 0.2, 0.0])
    labels = np.array(["a", "a", "a", "a", "b"])
    assert som.maximal_prototype(labels, "a").unit == (1, 1)
    som.quantization_distances_ = np.array([0.5, 0.5, 0.5, 0.5, 0.0])
    proto = som.maximal_prototype(labels, "a")
    assert proto.unit == (0, 0)
    np.testing.assert_array_equal(proto.members, [0, 1])


@pytest.mark.parametrize(
    ("X", "kwargs", "message"),
    [
        (np.zeros((10, 3)), {}, "strictly positive"),
        (np.full((10, 3), np.nan), {"log_transform": False}, "finite"),
        (np.ones(10), {}, "2-D"),
        (np.ones((10, 1)), {}, "at least 2 columns"),
    ],
)
def test_bad_fit_input_raises(X, kwargs, message):
    with pytest.raises(ValueError, match=message):
        SelfOrganizingMap(n_rows=3, n_cols=4, n_iterations=2, **kwargs).fit(X)


def test_bad_parameters_and_reference_raise(cohort):
    X, labels, _ = cohort
    with pytest.raises(ValueError, match="topology must be one of"):
        SelfOrganizingMap(topology="square").fit(X)
    with pytest.raises(ValueError, match="n_rows must be an integer >= 2"):
        SelfOrganizingMap(n_rows=1).fit(X)
    with pytest.raises(ValueError, match="one entry per row"):
        SelfOrganizingMap(n_iterations=1).fit(X, reference=np.ones(3, dtype=bool))


def test_bad_input_after_fit_raises(cohort, fitted):
    X, labels, _ = cohort
    with pytest.raises(ValueError, match=f"must have {L} columns.*received {L - 1}"):
        fitted.bmus(X[:, :-1])
    with pytest.raises(ValueError, match="cohort 'asd' has no members"):
        fitted.maximal_prototype(labels, "asd")
    with pytest.raises(ValueError, match="one cohort label per row"):
        fitted.hit_map(labels[:-1])


def test_log_transform_false_accepts_signed_data():
    rng = np.random.default_rng(1)
    Z = rng.normal(size=(40, 3))
    som = SelfOrganizingMap(n_rows=3, n_cols=4, n_iterations=5, log_transform=False).fit(Z)
    np.testing.assert_allclose(som.center_, Z.mean(axis=0))


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
def test_vectorised_batch_training_equals_minisoms_loop(topology):
    from minisom import MiniSom

    from analysis.exploration.som_training import train_batch_offline

    rng = np.random.default_rng(11)
    data = np.vstack([rng.normal(size=(40, 5)), rng.normal(3.0, 1.0, size=(20, 5))])
    reference, ours = (MiniSom(4, 5, 5, sigma=2.0, learning_rate=0.5, topology=topology) for _ in range(2))
    for som in (reference, ours):
        som.pca_weights_init(data)
    reference.train_batch_offline(data, 30)
    train_batch_offline(ours, data, 30)
    np.testing.assert_allclose(ours.get_weights(), reference.get_weights(), rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
def test_fit_statistics_equal_minisoms_own(cohort, topology):
    X, labels, _ = cohort
    som = SelfOrganizingMap(n_rows=N_ROWS, n_cols=N_COLS, topology=topology, n_iterations=30).fit(
        X, reference=labels == "typical"
    )
    Z = som.standardise(X)
    assert som.quantization_error_ == pytest.approx(som.som_.quantization_error(Z), rel=1e-12)
    assert som.topographic_error_ == som.som_.topographic_error(Z)
    np.testing.assert_array_equal(som.u_matrix_, som.som_.distance_map())


def test_best_matching_units_equal_brute_force_bit_for_bit_and_break_ties_to_the_lowest_unit():
    from analysis.exploration.som_training import best_matching_units

    rng = np.random.default_rng(4)
    codebook = rng.normal(size=(12, 7))
    # Random rows, copies of units, and midpoints of two units (exact ties in exact arithmetic).
    data = np.vstack([rng.normal(size=(300, 7)), codebook[[3, 8]], (codebook[[1, 5]] + codebook[[9, 2]]) / 2])
    best, distances, second = best_matching_units(data, codebook)
    brute = np.linalg.norm(data[:, None, :] - codebook[None, :, :], axis=-1)
    np.testing.assert_array_equal(best, brute.argmin(axis=1))
    np.testing.assert_array_equal(distances, brute[np.arange(len(data)), best])
    assert (second != best).all()
    np.testing.assert_array_equal(second[:300], np.argsort(brute[:300], axis=1)[:, 1])


@pytest.mark.parametrize("topology", ["rectangular", "hexagonal"])
def test_training_steps_give_the_straightforward_values_bit_for_bit(topology):
    from minisom import MiniSom
    from scipy.sparse import csr_matrix

    from analysis.exploration.som_training import _DistanceOffsets, _Neighbourhood, _unit_coordinates, _UnitSums

    rng = np.random.default_rng(2)
    data, weights = rng.normal(size=(90, 7)), rng.normal(size=(N_ROWS * N_COLS, 7))
    som = MiniSom(N_ROWS, N_COLS, 7, topology=topology)
    x, y = _unit_coordinates(som)
    d = 2 * 1.7 * 1.7
    elementwise = np.exp(-((x[:, None] - x[None, :]) ** 2) / d) * np.exp(-((y[:, None] - y[None, :]) ** 2) / d)
    np.testing.assert_array_equal(_Neighbourhood(som)(1.7), elementwise)
    offsets = data @ weights.T
    offsets *= -2.0
    offsets += np.einsum("ij,ij->i", weights, weights)[None, :]
    np.testing.assert_array_equal(_DistanceOffsets(data, len(weights))(weights), offsets)
    bmu = offsets.argmin(axis=1)
    one_hot = csr_matrix((np.ones(len(bmu)), (bmu, np.arange(len(bmu)))), shape=(len(weights), len(bmu)))
    sums, counts = _UnitSums(data, len(weights))(bmu)
    np.testing.assert_array_equal(sums, one_hot @ data)
    np.testing.assert_array_equal(counts, np.bincount(bmu, minlength=len(weights)))
