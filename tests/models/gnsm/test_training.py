"""GNSM objectives, network, training and score norms: the losses against their definitions, resuming a killed
run, a checkpoint round trip, and a small table whose dependency-breaking rows the trained model finds."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from analysis.detection.detectors import GaussianMixtureDetector
from models.checkpoint import CheckpointError, load_gnsm_model, save_gnsm_model
from models.gnsm.losses import MixedLayout, gnsm_loss, perturb
from models.gnsm.network import GNSMNet, GNSMNetConfig
from models.gnsm.noise import NoiseScales, exp_concrete_score, onehot_logits, score_from_logit_noise
from models.gnsm.train import GNSMTrainConfig, score_norms, train_gnsm
from models.training import TrainingCheckpoint

SIZES = (3, 4)
TINY = GNSMNetConfig(width=32, layers=2, embedding_dim=8)


def _rows(n: int, rng: np.random.Generator, broken: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Column b follows column a (b = a, or a + 1 when ``broken``); the continuous column is a's index + noise."""
    a = rng.integers(3, size=n)
    b = (a + (1 if broken else 0)) % 4 if broken else a
    onehot = np.concatenate([np.eye(3)[a], np.eye(4)[b]], axis=1)
    continuous = (a - 1.0 + 0.1 * rng.standard_normal(n))[:, None]
    return torch.from_numpy(onehot).float(), torch.from_numpy(continuous).float()


def _batch(seed: int = 0):
    layout = MixedLayout(SIZES, 1)
    scales = NoiseScales(n_scales=5)
    onehot, continuous = _rows(9, np.random.default_rng(seed))
    clean = layout.clean_inputs(onehot, continuous)
    scale = torch.arange(9) % 5
    batch = perturb(layout, scales, clean, scale, torch.Generator().manual_seed(seed))
    return layout, scales, clean, batch


def test_mse_objective_is_the_squared_error_of_the_scores():
    layout, scales, clean, batch = _batch()
    output = torch.randn(9, layout.width, generator=torch.Generator().manual_seed(1))
    out_cont, out_cat = layout.split(output)
    _, onehot = layout.split(clean)
    logits = onehot_logits(onehot, layout.blocks, scales.deltas()[batch.scale])
    _, y = layout.split(batch.inputs)
    blocks = layout.blocks
    estimated = score_from_logit_noise(blocks.softmax(out_cat), batch.lam, blocks)
    target = exp_concrete_score(y, logits, batch.lam, blocks)
    categorical = ((estimated - target) ** 2).sum(1) / scales.lam_max**2
    continuous = ((out_cont - batch.gaussian) ** 2).sum(1)
    expected = (categorical + continuous).mean()
    assert float(gnsm_loss(layout, scales, output, batch, "mse")) == pytest.approx(float(expected), rel=1e-5)


def test_kl_objective_is_zero_at_the_true_logit_noise_and_positive_elsewhere():
    layout, scales, _, batch = _batch()
    perfect = torch.cat([batch.gaussian, batch.logit_noise + 3.0], dim=1)  # a shift within a block changes nothing
    assert float(gnsm_loss(layout, scales, perfect, batch, "kl")) == pytest.approx(0.0, abs=1e-6)
    off = perfect + torch.randn(perfect.shape, generator=torch.Generator().manual_seed(2))
    assert float(gnsm_loss(layout, scales, off, batch, "kl")) > 0.01
    with pytest.raises(ValueError, match="objective"):
        gnsm_loss(layout, scales, off, batch, "l1")


def test_network_scores_follow_eq_4_9_and_the_continuous_noise_estimate():
    net = GNSMNet(TINY, SIZES, 1, NoiseScales(n_scales=5))
    layout, _, clean, _ = _batch()
    scale = torch.arange(9) % 5
    out = net(clean, scale)
    score = net.score(clean, scale)
    assert score.shape == (9, 1 + 7)
    lam, sigma = net.temperatures[scale], net.sigmas[scale]
    assert torch.allclose(score[:, :1], -out[:, :1] / sigma[:, None])
    for start, k in ((1, 3), (4, 4)):
        block = torch.softmax(out[:, start : start + k], dim=1)
        assert torch.allclose(score[:, start : start + k], -lam[:, None] + lam[:, None] * k * block, atol=1e-5)
    # within a block the scores sum to zero: the gradient lies along the simplex (sum_j (-lam + lam K p_j) = 0)
    assert torch.allclose(score[:, 1:4].sum(1), torch.zeros(9), atol=1e-4)


def _data(n: int, seed: int):
    layout = MixedLayout(SIZES, 1)
    onehot, continuous = _rows(n, np.random.default_rng(seed))
    return layout.clean_inputs(onehot, continuous)


def test_a_killed_run_resumes_to_the_same_weights(tmp_path):
    config = GNSMTrainConfig(max_steps=30, batch_size=16, validate_every=10, patience=10, checkpoint_every=10)
    train, val = _data(100, 0), _data(12, 1)

    def fresh():
        torch.manual_seed(0)
        return GNSMNet(TINY, SIZES, 1, NoiseScales(n_scales=5))

    whole = train_gnsm(fresh(), train, val, config, progress=False)

    def stop_at_25(step):
        if step == 25:
            raise KeyboardInterrupt

    checkpoint = TrainingCheckpoint(tmp_path / "state.pt", {"data": "toy"})
    with pytest.raises(KeyboardInterrupt):
        train_gnsm(fresh(), train, val, config, checkpoint=checkpoint, progress=False, on_step=stop_at_25)
    resumed = train_gnsm(fresh(), train, val, config, checkpoint=checkpoint, progress=False)
    assert resumed.resumed_from_step == 20
    for name, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    np.testing.assert_equal(resumed.history, whole.history)  # NaN (the untrained train loss) equals NaN here


def test_checkpoint_round_trip_with_weights_only(tmp_path):
    net = GNSMNet(TINY, SIZES, 1, NoiseScales(n_scales=5))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01)
    save_gnsm_model(tmp_path / "gnsm.pt", net, metadata={"encoder": {"columns": ["a", "b"]}})
    loaded, info = load_gnsm_model(tmp_path / "gnsm.pt")
    clean = _data(5, 3)
    scale = torch.arange(5)
    assert torch.equal(loaded.score(clean, scale), net.score(clean, scale))
    assert info["metadata"]["encoder"]["columns"] == ["a", "b"]
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_gnsm_model(tmp_path / "bad.pt")


def test_trained_norms_separate_rows_that_break_the_dependency():
    torch.manual_seed(0)
    rng = np.random.default_rng(7)
    layout = MixedLayout(SIZES, 1)
    train, val = _data(1000, 10), _data(100, 11)
    net = GNSMNet(GNSMNetConfig(width=48, layers=2, embedding_dim=16), SIZES, 1, NoiseScales(n_scales=8))
    result = train_gnsm(net, train, val, GNSMTrainConfig(max_steps=300, batch_size=64, validate_every=100),
                        progress=False)
    assert result.best_val_loss < result.history["val_loss"][0]
    normal = layout.clean_inputs(*_rows(100, rng))
    broken = layout.clean_inputs(*_rows(100, rng, broken=True))
    detector = GaussianMixtureDetector(random_state=0).fit(score_norms(net, train).numpy())
    scores = detector.score_samples(score_norms(net, torch.cat([normal, broken])).numpy())
    auroc = roc_auc_score(np.r_[np.zeros(100), np.ones(100)], scores)
    assert auroc > 0.95
