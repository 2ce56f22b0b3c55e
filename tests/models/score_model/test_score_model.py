"""The score model: VE schedule, DSM loss, network shapes and parameterisation, batched score norms, checkpoints,
and resumable training."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial.distance import pdist

from models.checkpoint import CheckpointError, load_checkpoint, load_score_model, save_score_model
from models.score_model.gaussian_prior import LowRankGaussian
from models.score_model.losses import dsm_loss, get_dsm_loss_fn
from models.score_model.network import GPU_2MM, ScoreNet, ScoreNetConfig, count_parameters
from models.score_model.norms import score_norms, score_norms_naive
from models.score_model.sde import VESchedule, sigma_range_from_data
from models.score_model.train import ScoreTrainingData, TrainConfig, TrainingCheckpoint, train_score_model

GRID = (7, 8, 9)
SMALL_NET = ScoreNetConfig(channels=(4, 8, 8), groups=2, embedding_dim=8)


def brain_mask() -> np.ndarray:
    mask = np.zeros(GRID, dtype=bool)
    mask[1:6, 1:7, 2:8] = True
    return mask


def random_images(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.5 + 0.1 * rng.standard_normal((n, *GRID))).astype(np.float32) * brain_mask()


def trained_like_net(config: ScoreNetConfig = SMALL_NET, seed: int = 0) -> ScoreNet:
    """A network whose zero-initialised head is randomised, so the residual is not zero, on a rank-2 Gaussian."""
    torch.manual_seed(seed)
    net = ScoreNet(config, GRID, rank=2)
    torch.nn.init.normal_(net.head.weight, std=0.1)
    torch.nn.init.normal_(net.head.bias, std=0.1)
    images = random_images(10, seed=seed + 1)
    factors = 0.05 * torch.randn(2, *GRID)
    net.set_gaussian(torch.from_numpy(images.mean(0)), torch.from_numpy(images.var(0) + 0.01), factors)
    return net.eval()


# --- schedule -----------------------------------------------------------------------------------------------------


def test_sigmas_are_geometric_ascending_and_span_the_range():
    sigmas = VESchedule(0.05, 20.0).sigmas(20).numpy()
    assert sigmas.shape == (20,)
    np.testing.assert_allclose([sigmas[0], sigmas[-1]], [0.05, 20.0], rtol=1e-6)
    ratios = sigmas[1:] / sigmas[:-1]
    np.testing.assert_allclose(ratios, ratios[0], rtol=1e-5)
    assert ratios[0] > 1


def test_training_sigmas_are_log_uniform():
    schedule = VESchedule(0.1, 10.0)
    draws = schedule.sample_sigmas(20000, torch.Generator().manual_seed(0)).numpy()
    assert draws.min() >= 0.1 and draws.max() <= 10.0
    u = (np.log(draws) - np.log(0.1)) / (np.log(10.0) - np.log(0.1))
    assert stats.kstest(u, "uniform").pvalue > 0.01


@pytest.mark.parametrize(("low", "high"), [(0.0, 1.0), (2.0, 1.0), (1.0, float("inf"))])
def test_schedule_rejects_bad_ranges(low, high):
    with pytest.raises(ValueError, match="sigma_min < sigma_max"):
        VESchedule(low, high)


def test_sigma_range_from_data_matches_scipy():
    rng = np.random.default_rng(3)
    train = rng.normal(size=(30, 50)) * rng.uniform(0.5, 2.0, size=50)
    schedule = sigma_range_from_data(train)
    assert schedule.sigma_max == pytest.approx(np.percentile(pdist(train), 99), rel=1e-9)
    assert schedule.sigma_min == pytest.approx(train.std(axis=0).mean(), rel=1e-12)


# --- loss ---------------------------------------------------------------------------------------------------------


def test_dsm_loss_matches_the_formula_and_the_mask_weights():
    rng = np.random.default_rng(0)
    x, noise = (torch.tensor(rng.normal(size=(3, 2, 4)), dtype=torch.float32) for _ in range(2))
    sigma = torch.tensor([0.5, 1.0, 2.0])
    weight = torch.tensor(rng.integers(0, 2, size=(2, 4)), dtype=torch.float32)

    def score_fn(xn, s):
        return -0.3 * xn

    s = sigma[:, None, None]
    residual = (s * score_fn(x + s * noise, sigma) + noise).numpy()
    expected = np.mean([0.5 * (residual[i] ** 2 * weight.numpy()).sum() / weight.numpy().sum() for i in range(3)])
    assert float(dsm_loss(score_fn, x, sigma, noise, weight)) == pytest.approx(expected, rel=1e-6)
    assert float(dsm_loss(score_fn, x, sigma, noise)) == pytest.approx(0.5 * np.mean(residual**2), rel=1e-6)


def test_dsm_loss_is_minimised_by_the_true_perturbed_score():
    """For x ~ N(0, 1), the perturbed score is -x/(1 + sigma^2) and the minimal loss is 0.5 / (1 + sigma^2)."""
    sigma_value = 0.7
    x = torch.randn(200000, 1, generator=torch.Generator().manual_seed(0))
    noise = torch.randn(200000, 1, generator=torch.Generator().manual_seed(1))
    sigma = torch.full((200000,), sigma_value)

    def scaled(c):
        return lambda xn, s: -c * xn / (1 + s[:, None] ** 2)

    best = float(dsm_loss(scaled(1.0), x, sigma, noise))
    assert best == pytest.approx(0.5 / (1 + sigma_value**2), rel=0.01)
    assert float(dsm_loss(scaled(0.8), x, sigma, noise)) > best
    assert float(dsm_loss(scaled(1.2), x, sigma, noise)) > best


def test_loss_closure_draws_sigmas_inside_the_schedule():
    seen = []

    def score_fn(xn, s):
        seen.append(s.clone())
        return torch.zeros_like(xn)

    loss_fn = get_dsm_loss_fn(VESchedule(0.2, 3.0))
    loss = loss_fn(score_fn, torch.zeros(64, 3), torch.Generator().manual_seed(0))
    assert 0.2 <= float(seen[0].min()) and float(seen[0].max()) <= 3.0
    assert float(loss) == pytest.approx(0.5, rel=0.2)  # zero score: the loss is half the noise energy


# --- network ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [(4,), (4, 8), (4, 8, 8), (4, 8, 8, 16)])
def test_network_output_has_the_input_shape_on_odd_grids(channels):
    net = ScoreNet(ScoreNetConfig(channels=channels, groups=2, embedding_dim=8), GRID)
    x = torch.randn(3, 1, *GRID)
    assert net(x, torch.tensor([0.1, 1.0, 5.0])).shape == (3, 1, *GRID)


def test_the_gpu_configuration_builds_and_runs():
    net = ScoreNet(GPU_2MM, GRID, rank=3)
    assert 3e6 < count_parameters(net) < 2e7
    assert net(torch.randn(1, 1, *GRID), torch.tensor([1.0])).shape == (1, 1, *GRID)


def test_untrained_gaussian_residual_network_is_the_analytic_gaussian_score():
    net = ScoreNet(SMALL_NET, GRID)
    mean, var = torch.rand(GRID), torch.rand(GRID) + 0.1
    net.set_gaussian(mean, var)
    x = torch.randn(2, 1, *GRID)
    sigma = torch.tensor([0.3, 2.0])
    expected = -(x - mean) / (var + sigma[:, None, None, None, None] ** 2)
    torch.testing.assert_close(net(x, sigma), expected)
    plain_config = ScoreNetConfig(channels=(4, 8), groups=2, embedding_dim=8, parameterisation="net_over_sigma")
    plain = ScoreNet(plain_config, GRID)
    assert torch.count_nonzero(plain(x, sigma)) == 0


def test_network_config_rejects_unknown_settings():
    with pytest.raises(ValueError, match="unknown score-network settings"):
        ScoreNetConfig.from_dict({"channels": [4], "depth": 3})
    with pytest.raises(ValueError, match="parameterisation"):
        ScoreNetConfig(parameterisation="direct")
    with pytest.raises(ValueError, match="divisible by groups"):
        ScoreNetConfig(channels=(6, 8), groups=4)


# --- score norms --------------------------------------------------------------------------------------------------


def test_batched_norms_equal_the_naive_loop_and_the_kept_voxel_scores():
    net = trained_like_net()
    images, mask = random_images(5, seed=4), brain_mask()
    sigmas = VESchedule(0.05, 5.0).sigmas(6).numpy()
    kept = np.zeros((5, 6, int(mask.sum())), dtype=np.float32)
    batched = score_norms(net, images, mask, sigmas, batch_size=7, voxel_scores_out=kept)
    naive = score_norms_naive(net, images, mask, sigmas)
    np.testing.assert_allclose(batched.norms, naive, rtol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(kept.astype(np.float64), axis=2), naive, rtol=1e-4)


def test_a_subjects_norms_do_not_depend_on_its_batch():
    net = trained_like_net(seed=1)
    images, mask = random_images(6, seed=5), brain_mask()
    sigmas = VESchedule(0.05, 5.0).sigmas(4).numpy()
    alone = score_norms(net, images[2:3], mask, sigmas, batch_size=4).norms[0]
    for batch_size, others in [(24, images), (5, images[::-1].copy()), (3, images[[4, 2, 0]])]:
        norms = score_norms(net, others, mask, sigmas, batch_size=batch_size).norms
        row = [i for i in range(len(others)) if np.array_equal(others[i], images[2])][0]
        np.testing.assert_allclose(norms[row], alone, rtol=1e-5)


def test_per_voxel_gaussian_norms_match_a_direct_computation():
    brain = random_images(12, seed=6)[:, brain_mask()].astype(np.float64)
    gaussian = LowRankGaussian(ranks=(0,)).fit(brain[:8], brain[8:])
    mean, var = brain[:8].mean(0), brain[:8].var(0)
    sigmas = np.array([0.1, 1.0, 3.0])
    out = gaussian.score_norms(brain[8:], sigmas)
    for i in range(4):
        for j, s in enumerate(sigmas):
            expected = np.sqrt(np.sum((s * (brain[8 + i] - mean) / (var + s * s)) ** 2))
            assert out[i, j] == pytest.approx(expected, rel=1e-6)


def _low_rank_data(n: int, seed: int) -> np.ndarray:
    factors = np.random.default_rng(100).normal(size=(3, 40)) * 2.0
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 3)) @ factors + rng.normal(size=(n, 40)) * 0.3 + 5.0


def test_low_rank_gaussian_matches_the_dense_covariance_and_scipy():
    train, val = _low_rank_data(200, 0), _low_rank_data(50, 1)
    gaussian = LowRankGaussian(ranks=(0, 1, 3, 8)).fit(train, val)
    assert gaussian.rank_ == 3  # the data have three factors
    covariance = gaussian.components_ @ gaussian.components_.T + np.diag(gaussian.diagonal_)
    for k, ll in gaussian.val_log_likelihood_.items():
        assert np.isfinite(ll) and (k != 3 or ll == max(gaussian.val_log_likelihood_.values()))
    expected_ll = stats.multivariate_normal(gaussian.mean_, covariance).logpdf(val).mean()
    assert gaussian.val_log_likelihood_[3] == pytest.approx(expected_ll, rel=1e-9)
    sigma = 0.7
    dense = -sigma * np.linalg.solve(covariance + sigma**2 * np.eye(40), (val - gaussian.mean_).T).T
    np.testing.assert_allclose(gaussian.scaled_scores(val, sigma), dense, rtol=1e-8, atol=1e-10)


def test_network_gaussian_part_equals_the_numpy_gaussian():
    rng = np.random.default_rng(9)
    mask = np.ones(GRID, dtype=bool)
    train = (rng.normal(size=(30, 2)) @ rng.normal(size=(2, mask.size)) + rng.normal(size=(30, mask.size))) * 0.1
    gaussian = LowRankGaussian(ranks=(2,)).fit(train, train[:5])
    net = ScoreNet(SMALL_NET, GRID, rank=2)
    net.set_gaussian(
        torch.tensor(gaussian.mean_.reshape(GRID), dtype=torch.float32),
        torch.tensor(gaussian.diagonal_.reshape(GRID), dtype=torch.float32),
        torch.tensor(gaussian.components_.T.reshape(2, *GRID), dtype=torch.float32),
    )
    x = torch.tensor(train[:3].reshape(3, 1, *GRID), dtype=torch.float32)
    sigma = torch.tensor([0.05, 0.5, 2.0])
    with torch.no_grad():
        got = (net(x, sigma) * sigma[:, None, None, None, None]).reshape(3, -1).numpy()
    for i, s in enumerate(sigma.tolist()):
        np.testing.assert_allclose(got[i], gaussian.scaled_scores(train[i : i + 1], s)[0], rtol=2e-3, atol=1e-4)


def test_score_norms_rejects_a_mask_of_another_grid():
    with pytest.raises(ValueError, match="mask shape"):
        score_norms(trained_like_net(), random_images(1), np.ones((7, 8, 8), bool), [1.0])


# --- checkpoints --------------------------------------------------------------------------------------------------


def test_checkpoint_round_trip_loads_with_weights_only(tmp_path):
    net = trained_like_net(seed=2)
    schedule = VESchedule(0.08, 12.0)
    path = tmp_path / "score_model.pt"
    save_score_model(path, net, schedule, data_hash="abc", metadata={"steps": 3, "history": {"val_loss": [0.5]}})
    assert torch.load(path, weights_only=True)["kind"] == "score_model"
    loaded, loaded_schedule, info = load_score_model(path)
    assert loaded_schedule == schedule and info["data_hash"] == "abc" and info["metadata"]["steps"] == 3
    assert loaded.config == net.config
    x, sigma = torch.randn(2, 1, *GRID), torch.tensor([0.1, 2.0])
    with torch.no_grad():
        torch.testing.assert_close(loaded(x, sigma), net(x, sigma), rtol=0, atol=0)


class _Payload:
    def __reduce__(self):
        return (print, ("code ran while loading",))


def test_checkpoint_that_needs_arbitrary_code_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as handle:
        pickle.dump({"format": 1, "kind": "score_model", "x": _Payload()}, handle, protocol=2)
    with pytest.raises(CheckpointError, match="evil.pt"):
        load_checkpoint(path)


# --- training -----------------------------------------------------------------------------------------------------


def _training_data() -> ScoreTrainingData:
    return ScoreTrainingData(
        torch.from_numpy(random_images(12, seed=7)[:, None]), torch.from_numpy(random_images(4, seed=8)[:, None])
    )


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"patience": 0}, "patience must be an integer >= 1; received 0"),
        ({"batch_size": 2.5}, "batch_size must be an integer"),
        ({"learning_rate": -1e-3}, "learning_rate must be a positive finite number"),
        ({"ema_decay": 1.0}, r"ema_decay must be in \[0, 1\)"),
        ({"max_minutes": 0}, "max_minutes must be a positive finite number"),
    ],
)
def test_train_config_refuses_settings_training_cannot_use(settings, needle):
    with pytest.raises(ValueError, match=needle):
        TrainConfig(**settings)


def test_training_lowers_the_validation_loss():
    data = _training_data()
    torch.manual_seed(0)
    net = ScoreNet(ScoreNetConfig(channels=(4, 8), groups=2, embedding_dim=8, parameterisation="net_over_sigma"), GRID)
    config = TrainConfig(max_steps=60, batch_size=4, validate_every=20, patience=10, learning_rate=3e-3)
    result = train_score_model(net, VESchedule(0.05, 5.0), data, config, progress=False)
    assert result.steps == 60 and result.stopped == "max_steps"
    assert result.history["val_loss"][-1] < result.history["val_loss"][0]
    assert result.best_val_loss == min(result.history["val_loss"])


def test_interrupted_training_resumes_to_the_same_weights(tmp_path):
    data = _training_data()
    config = TrainConfig(max_steps=20, batch_size=3, validate_every=5, patience=10, checkpoint_every=5)
    schedule = VESchedule(0.05, 5.0)

    def fresh():
        torch.manual_seed(0)
        return ScoreNet(SMALL_NET, GRID)

    straight = train_score_model(fresh(), schedule, data, config, progress=False)

    def crash(step):
        if step == 12:
            raise KeyboardInterrupt

    path = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        train_score_model(fresh(), schedule, data, config, checkpoint=TrainingCheckpoint(path), on_step=crash,
                          progress=False)
    assert load_checkpoint(path)["step"] == 10
    resumed = train_score_model(fresh(), schedule, data, config, checkpoint=TrainingCheckpoint(path), progress=False)
    assert resumed.resumed_from_step == 10 and resumed.steps == 20
    for key, value in straight.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)


def test_a_checkpoint_of_other_settings_is_not_resumed(tmp_path):
    data = _training_data()
    config = TrainConfig(max_steps=10, batch_size=3, validate_every=5, checkpoint_every=5)
    path = tmp_path / "state.pt"
    train_score_model(ScoreNet(SMALL_NET, GRID), VESchedule(0.05, 5.0), data, config,
                      checkpoint=TrainingCheckpoint(path, {"key": "a"}), progress=False)
    again = train_score_model(ScoreNet(SMALL_NET, GRID), VESchedule(0.05, 5.0), data, config,
                              checkpoint=TrainingCheckpoint(path, {"key": "b"}), progress=False)
    assert again.resumed_from_step == 0


def test_an_unreadable_training_state_is_ignored_with_a_warning(tmp_path):
    data = _training_data()
    path = tmp_path / "state.pt"
    path.write_bytes(b"not a checkpoint")
    config = TrainConfig(max_steps=5, batch_size=3, validate_every=5, checkpoint_every=5)
    with pytest.warns(UserWarning, match="training starts from the beginning"):
        result = train_score_model(ScoreNet(SMALL_NET, GRID), VESchedule(0.05, 5.0), data, config,
                                   checkpoint=TrainingCheckpoint(path), progress=False)
    assert result.resumed_from_step == 0 and result.steps == 5
