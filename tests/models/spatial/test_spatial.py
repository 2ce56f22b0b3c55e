"""Spatial-MSMA: patch norms, the conditional flow, heatmaps, ROI scores and the lesion table of the manifest."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import percentileofscore

from analysis.exploration.roi_stats import percentile_of_reference, roi_scores
from analysis.study.errors import ManifestError
from analysis.study.manifest import load_manifest
from analysis.study.validation import validate_study
from models.checkpoint import CheckpointError, load_spatial_model, save_score_model, save_spatial_model
from models.spatial.flow import SpatialFlowConfig, fit_standardisation, train_spatial_flow
from models.spatial.heatmap import compute_heatmaps, heatmap_file_names, patches_to_voxels
from models.spatial.patch_norms import patch_norms, patch_norms_naive
from models.spatial.torch_model import ConditionalFlow, SpatialMSMA, positional_encoding
from tests.conftest import make_small_study, write_nifti

SHAPE = (6, 7, 5)
TINY = SpatialFlowConfig(
    n_blocks=2, hidden=16, n_components=2, n_frequencies=2, context_features=3, context_channels=(4,),
    subjects_per_step=3, voxels_per_subject=32, max_steps=30, eval_every=10, patience=3, val_voxels_per_subject=20,
)


def _mask() -> np.ndarray:
    mask = np.zeros(SHAPE, dtype=bool)
    mask[1:5, 1:6, 1:4] = True
    mask[1, 1, 1] = False
    return mask


# -- patch norms ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("k", [1, 3, 5])
def test_patch_norms_equal_the_explicit_neighbourhood_loop(k):
    mask = _mask()
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((3, 4, int(mask.sum()))).astype(np.float16)
    fast = patch_norms(scores, mask, k)
    assert fast.shape == (3, int(mask.sum()), 4) and fast.dtype == np.float32
    np.testing.assert_allclose(fast, patch_norms_naive(scores, mask, k), rtol=1e-5, atol=1e-5)


def test_patch_norm_of_size_one_is_the_voxel_magnitude_and_a_corner_patch_counts_only_brain_voxels():
    mask = _mask()
    scores = np.ones((1, 2, int(mask.sum())))
    np.testing.assert_allclose(patch_norms(scores, mask, 1)[0], 1.0)
    coords = np.argwhere(mask)
    corner = int(np.flatnonzero((coords == [4, 5, 3]).all(axis=1))[0])  # the far corner: 2 x 2 x 2 brain voxels
    interior = int(np.flatnonzero((coords == [2, 3, 2]).all(axis=1))[0])  # all 27 neighbours in the brain
    norms = patch_norms(scores, mask, 3)[0]
    np.testing.assert_allclose(norms[corner], np.sqrt(8.0), rtol=1e-6)
    np.testing.assert_allclose(norms[interior], np.sqrt(27.0), rtol=1e-6)


def test_patch_norms_reject_even_sizes_and_wrong_shapes():
    mask = _mask()
    with pytest.raises(ValueError, match="odd"):
        patch_norms(np.zeros((1, 2, int(mask.sum()))), mask, 2)
    with pytest.raises(ValueError, match="brain voxels"):
        patch_norms(np.zeros((1, 2, 5)), mask, 3)


# -- positional encoding and flow ------------------------------------------------------------------------------------
def test_positional_encoding_is_sinusoidal_in_each_axis():
    mask = _mask()
    encoding = positional_encoding(mask, 3).numpy()
    assert encoding.shape == (int(mask.sum()), 18)
    coords = np.argwhere(mask)
    u = coords / (np.array(SHAPE) - 1)
    np.testing.assert_allclose(encoding[:, 0], np.sin(np.pi * u[:, 0]), atol=1e-6)  # axis 0, frequency 1
    # per axis: sin of frequencies 1, 2, 4 (x pi), then cos of the same
    np.testing.assert_allclose(encoding[:, 6 + 2], np.sin(4 * np.pi * u[:, 1]), atol=1e-6)
    np.testing.assert_allclose(encoding[:, 6 + 3 + 1], np.cos(2 * np.pi * u[:, 1]), atol=1e-6)
    np.testing.assert_allclose(encoding[:, 12 + 3], np.cos(np.pi * u[:, 2]), atol=1e-6)
    assert len(np.unique(encoding.round(6), axis=0)) == len(encoding)  # every voxel has its own code


def _perturbed_flow(n_features=5, n_condition=3, n_components=3, seed=0) -> ConditionalFlow:
    torch.manual_seed(seed)
    flow = ConditionalFlow(n_features, n_condition, n_blocks=4, hidden=8, n_components=n_components).double()
    with torch.no_grad():  # move every layer away from its identity initialisation
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return flow


def test_flow_is_invertible_given_the_condition():
    flow = _perturbed_flow()
    x, c = torch.randn(50, 5, dtype=torch.float64), torch.randn(50, 3, dtype=torch.float64)
    z, _ = flow(x, c)
    assert not torch.allclose(z, x)
    torch.testing.assert_close(flow.inverse(z, c), x, rtol=1e-9, atol=1e-9)


def test_flow_log_determinant_equals_autograd_jacobian():
    flow = _perturbed_flow()
    x, c = torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    _, log_det = flow(x, c)
    for i in range(len(x)):
        jac = torch.autograd.functional.jacobian(lambda row, i=i: flow(row[None], c[i : i + 1])[0][0], x[i])
        torch.testing.assert_close(log_det[i], torch.linalg.slogdet(jac)[1], rtol=1e-9, atol=1e-9)


def test_mixture_base_density_equals_scipy():
    from scipy.special import logsumexp
    from scipy.stats import norm

    flow = _perturbed_flow(n_components=3)
    z, c = torch.randn(7, 5, dtype=torch.float64), torch.randn(7, 3, dtype=torch.float64)
    base = flow.base
    raw = base.net(c).view(7, 3, 11).detach().numpy()
    log_w = raw[..., 0] - logsumexp(raw[..., 0], axis=1, keepdims=True)
    sd = np.exp(np.tanh(raw[..., 6:]) * 3.0)
    expected = logsumexp(log_w + norm.logpdf(z.numpy()[:, None, :], raw[..., 1:6], sd).sum(-1), axis=1)
    np.testing.assert_allclose(base.log_prob(z, c).detach().numpy(), expected, rtol=1e-10)


def test_flow_density_integrates_to_one_in_one_dimension():
    torch.manual_seed(1)
    flow = ConditionalFlow(1, 2, n_blocks=0, hidden=8, n_components=2).double()
    with torch.no_grad():
        for p in flow.parameters():
            p.add_(0.3 * torch.randn_like(p))
    grid = torch.linspace(-40, 40, 200001, dtype=torch.float64)[:, None]
    c = torch.tensor([[0.3, -1.2]], dtype=torch.float64).expand(len(grid), -1)
    density = flow.log_prob(grid, c).exp().detach().numpy()
    assert np.trapezoid(density, grid[:, 0].numpy()) == pytest.approx(1.0, abs=1e-6)


# -- the model, its training and its heatmaps -----------------------------------------------------------------------
def _synthetic(n=12, seed=0):
    """Patch-norm-like data whose scale depends on position (x axis) and on the image (its mean intensity)."""
    mask = _mask()
    rng = np.random.default_rng(seed)
    coords = np.argwhere(mask)
    level = rng.uniform(0.5, 1.5, n)
    images = rng.random((n, *SHAPE)).astype(np.float32) * 0.1 + level[:, None, None, None].astype(np.float32)
    scale = (1.0 + coords[:, 0])[None, :, None] * level[:, None, None]
    norms = (scale * np.exp(0.1 * rng.standard_normal((n, len(coords), 4)))).astype(np.float32)
    return images, norms, mask


def test_training_lowers_the_validation_nll_and_leaves_the_global_rng_alone():
    images, norms, mask = _synthetic()
    state = torch.get_rng_state()
    result = train_spatial_flow(TINY, images, norms, mask, range(9), [9, 10])
    assert torch.equal(torch.get_rng_state(), state)
    assert result.best_val_nll < result.history["val_loss"][0]
    again = train_spatial_flow(TINY, images, norms, mask, range(9), [9, 10])
    assert again.best_val_nll == result.best_val_nll  # seeded: the same fit twice


def test_heatmap_of_a_subject_does_not_depend_on_its_batch():
    images, norms, mask = _synthetic()
    model = train_spatial_flow(TINY, images, norms, mask, range(9), [9, 10]).model
    alone = compute_heatmaps(model, images, norms, [11])
    with_others = compute_heatmaps(model, images, norms, [3, 11, 0])
    np.testing.assert_allclose(alone[0], with_others[1], rtol=1e-6)
    batched = model.heatmaps(torch.as_tensor(images[[0, 11, 5]]), torch.as_tensor(norms[[0, 11, 5]])).numpy()
    np.testing.assert_allclose(patches_to_voxels(batched[1], mask, TINY.patch_size), alone[0], rtol=1e-5, atol=1e-5)
    assert alone.shape == (1, int(mask.sum())) and np.isfinite(alone).all()


def test_heatmap_is_the_density_of_the_raw_patch_norms():
    """NLL of s = NLL of u = (log s - c(p)) / a(p), plus the log-Jacobian sum(log s) + sum(log a(p))."""
    images, norms, mask = _synthetic()
    model = SpatialMSMA(dataclasses.replace(TINY, conditional=False), 4, mask)
    rng = np.random.default_rng(8)
    center = rng.normal(size=(int(mask.sum()), 4))
    scale = rng.uniform(0.5, 2.0, size=(int(mask.sum()), 4))
    with torch.no_grad():
        model.center.copy_(torch.as_tensor(center))
        model.scale.copy_(torch.as_tensor(scale))
    heat = model.heatmaps(torch.as_tensor(images[:1]), torch.as_tensor(norms[:1]))[0].numpy()
    from scipy.stats import norm

    u = (np.log(norms[0]) - center) / scale
    # untrained: the affine layer and couplings are the identity; the mixture base has spread means
    base = model.flow.base.log_prob(torch.as_tensor(u, dtype=torch.float32), torch.zeros(len(u), 0)).detach().numpy()
    expected = -(base - np.log(norms[0]).sum(1) - np.log(scale).sum(1))
    np.testing.assert_allclose(heat, expected, rtol=1e-4)
    single = SpatialMSMA(dataclasses.replace(TINY, conditional=False, n_components=1), 4, mask)
    heat1 = single.heatmaps(torch.as_tensor(images[:1]), torch.as_tensor(norms[:1]))[0].numpy()
    log_n = np.log(norms[0])
    np.testing.assert_allclose(heat1, -(norm.logpdf(log_n).sum(1) - log_n.sum(1)), rtol=1e-4)


def test_standardisation_is_per_voxel_and_shrunk_toward_the_global_moments():
    rng = np.random.default_rng(9)
    norms = np.exp(rng.normal(size=(12, 30, 4)) * rng.uniform(0.5, 2, size=(30, 4)) + rng.normal(size=(30, 4)))
    rows = [0, 2, 3, 5, 7, 8, 11]
    logs = np.log(norms[rows])
    center, scale = fit_standardisation(norms, rows, per_voxel=True, prior=0.0)
    np.testing.assert_allclose(center, logs.mean(axis=0), rtol=1e-10)
    np.testing.assert_allclose(scale, logs.std(axis=0), rtol=1e-10)
    flat = logs.reshape(-1, 4)
    center, scale = fit_standardisation(norms, rows, per_voxel=False)
    np.testing.assert_allclose(center, np.broadcast_to(flat.mean(axis=0), (30, 4)), rtol=1e-10)
    np.testing.assert_allclose(scale, np.broadcast_to(flat.std(axis=0), (30, 4)), rtol=1e-10)
    # With a prior of p subjects, the mean and the variance at a voxel are weighted n : p against their averages
    # over voxels (the variance against the mean within-voxel variance, not the variance of all values pooled).
    p = 4.0
    center, scale = fit_standardisation(norms, rows, per_voxel=True, prior=p)
    n = len(rows)
    mean, variance = logs.mean(axis=0), logs.var(axis=0)
    np.testing.assert_allclose(center, (n * mean + p * mean.mean(axis=0)) / (n + p), rtol=1e-10)
    np.testing.assert_allclose(scale**2, (n * variance + p * variance.mean(axis=0)) / (n + p), rtol=1e-10)
    assert (scale**2 <= np.maximum(variance, variance.mean(axis=0)) + 1e-12).all()


def test_trained_flow_standardises_per_voxel_unless_asked_for_global_moments():
    images, norms, mask = _synthetic()
    voxel = train_spatial_flow(TINY, images, norms, mask, range(9), [9, 10]).model
    expected, _ = fit_standardisation(norms, range(9), per_voxel=True, prior=TINY.standardisation_prior)
    np.testing.assert_allclose(voxel.center.numpy(), expected, rtol=1e-5)
    plain = train_spatial_flow(dataclasses.replace(TINY, standardisation="global"), images, norms, mask, range(9),
                               [9, 10]).model
    assert torch.equal(plain.center, plain.center[:1].expand_as(plain.center))
    with pytest.raises(ValueError, match="standardisation"):
        train_spatial_flow(dataclasses.replace(TINY, standardisation="local"), images, norms, mask, range(9), [9])


@pytest.mark.parametrize(
    ("settings", "needle"),
    [
        ({"eval_every": 0}, "eval_every must be an integer >= 1; received 0"),
        ({"context_channels": (4, 0)}, r"context_channels\[1\] must be an integer >= 1; received 0"),
        ({"standardisation_prior": -1.0}, "standardisation_prior must be >= 0"),
        ({"lr": 0.0}, "lr must be a positive finite number"),
    ],
)
def test_flow_config_refuses_settings_training_cannot_use(settings, needle):
    with pytest.raises(ValueError, match=needle):
        dataclasses.replace(TINY, **settings)


def test_calibrated_heatmaps_are_the_nll_in_standard_deviations_of_the_training_subjects():
    images, norms, mask = _synthetic()
    model = train_spatial_flow(TINY, images, norms, mask, range(9), [9, 10]).model
    nll = model.patch_nll(torch.as_tensor(images), torch.as_tensor(norms)).numpy().astype(np.float64)
    heat = model.heatmaps(torch.as_tensor(images), torch.as_tensor(norms)).numpy()
    reference = nll[:9]
    np.testing.assert_allclose(heat, (nll - reference.mean(0)) / reference.std(0), rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(heat[:9].mean(0), 0.0, atol=1e-3)
    np.testing.assert_allclose(heat[:9].std(0), 1.0, rtol=1e-3)
    plain = train_spatial_flow(dataclasses.replace(TINY, calibrate=False), images, norms, mask, range(9), [9, 10])
    np.testing.assert_array_equal(
        plain.model.heatmaps(torch.as_tensor(images[:2]), torch.as_tensor(norms[:2])).numpy(),
        plain.model.patch_nll(torch.as_tensor(images[:2]), torch.as_tensor(norms[:2])).numpy(),
    )


def test_conditioning_on_position_and_image_explains_what_the_unconditional_flow_cannot():
    images, norms, mask = _synthetic(n=24)
    config = dataclasses.replace(
        TINY, max_steps=400, eval_every=50, patience=8, hidden=32, voxels_per_subject=64, lr=1e-2
    )
    conditional = train_spatial_flow(config, images, norms, mask, range(18), range(18, 24))
    plain = train_spatial_flow(
        dataclasses.replace(config, conditional=False, standardisation="global", calibrate=False), images, norms,
        mask, range(18), range(18, 24),
    )
    assert conditional.best_val_nll < plain.best_val_nll - 1.0  # nats per voxel


def test_spatial_checkpoint_round_trip_and_refusal_of_other_kinds(tmp_path):
    images, norms, mask = _synthetic()
    model = train_spatial_flow(TINY, images, norms, mask, range(9), [9, 10]).model
    path = tmp_path / "spatial.pt"
    save_spatial_model(path, model, metadata={"steps": 30})
    loaded, info = load_spatial_model(path)
    assert info["metadata"] == {"steps": 30} and loaded.config == model.config
    torch.load(path, weights_only=True)
    np.testing.assert_array_equal(
        compute_heatmaps(loaded, images, norms, [4]), compute_heatmaps(model, images, norms, [4])
    )
    from models.score_model.network import ScoreNet, ScoreNetConfig
    from models.score_model.sde import VESchedule

    other = tmp_path / "score.pt"
    save_score_model(other, ScoreNet(ScoreNetConfig(channels=(4,), groups=2, embedding_dim=4), (4, 4, 4), rank=0),
                     VESchedule(0.1, 1.0), data_hash="x", metadata={})
    with pytest.raises(CheckpointError, match="Spatial-MSMA"):
        load_spatial_model(other)


def test_patch_scores_map_to_voxels_at_their_centre_or_as_the_minimum_over_covering_patches():
    mask = _mask()
    coords = np.argwhere(mask)
    rng = np.random.default_rng(5)
    patch = rng.standard_normal((2, len(coords)))
    voxels = patches_to_voxels(patch, mask, 3, "min")
    for s in range(2):
        for v, c in enumerate(coords):
            covering = np.abs(coords - c).max(axis=1) <= 1  # patches centred within one voxel (brain voxels only)
            assert voxels[s, v] == pytest.approx(patch[s, covering].min())
    # An anomaly at one voxel deep in the brain raises every patch containing it; the voxel map gives back that
    # one voxel (at the edge of the mask fewer patches cover a voxel, so the edge keeps more).
    deep = np.ones((9, 9, 9), dtype=bool)
    cube = np.argwhere(deep)
    raised = (np.abs(cube - [4, 4, 4]).max(axis=1) <= 1).astype(float)
    assert np.flatnonzero(patches_to_voxels(raised, deep, 3, "min")).tolist() == [4 * 81 + 4 * 9 + 4]
    np.testing.assert_array_equal(patches_to_voxels(patch, mask, 1, "min"), patch)
    np.testing.assert_array_equal(patches_to_voxels(patch, mask, 3, "centre"), patch)
    assert patches_to_voxels(raised, deep, 3).sum() == 27  # centre mapping: every patch holding the voxel
    with pytest.raises(ValueError, match="mapping"):
        patches_to_voxels(patch, mask, 3, "max")


def test_heatmap_file_names_never_leave_the_folder():
    names = heatmap_file_names(["sub-01", "../../etc/passwd", "a/b", "..", "ünï"])
    assert names[0] == "0000_sub-01.nii.gz"
    assert all("/" not in n and not n.startswith(".") for n in names)
    assert len(set(names)) == len(names)


# -- ROI scores ------------------------------------------------------------------------------------------------------
def test_roi_scores_are_label_means_and_percentiles_match_scipy():
    rng = np.random.default_rng(3)
    labels = np.array([1, 1, 2, 0, 2, 2, 5, 1])
    heat = rng.standard_normal((6, 8))
    names = pd.DataFrame({"index": [1, 2, 5, 9], "name": ["A", "B", "C", "absent"]})
    table = roi_scores(heat, labels, names, [f"s{i}" for i in range(6)])
    assert list(table.columns) == ["A", "B", "C"]
    np.testing.assert_allclose(table["A"], heat[:, [0, 1, 7]].mean(1))
    np.testing.assert_allclose(table["C"], heat[:, 6])
    table.loc["s5", "B"] = np.nan
    pct = percentile_of_reference(table, ["s0", "s1", "s2", "s5"])
    for sid in table.index:
        for roi in table.columns:
            ref = table.loc[["s0", "s1", "s2", "s5"], roi].dropna().to_numpy()
            value = table.loc[sid, roi]
            if np.isnan(value):
                assert np.isnan(pct.loc[sid, roi])
            else:
                assert pct.loc[sid, roi] == pytest.approx(percentileofscore(ref, value, kind="weak"))


# -- the manifest's lesion table -------------------------------------------------------------------------------------
def test_lesion_table_loads_with_groups(tmp_path):
    study = make_small_study(tmp_path, with_lesions=True)
    loaded = validate_study(load_manifest(study.manifest), progress=False)
    assert list(loaded.lesions.index) == ["s06", "s07"] and list(loaded.lesions["group"]) == ["faint", "bright"]
    assert "lesions: ground-truth masks of 2 subjects (bright: 1, faint: 1)" in loaded.summary()


def _broken(tmp_path, edit):
    study = make_small_study(tmp_path, with_lesions=True)
    edit(study)
    with pytest.raises(ManifestError) as info:
        validate_study(load_manifest(study.manifest), progress=False)
    return str(info.value)


def test_lesion_table_errors_name_the_file_and_field(tmp_path):
    def unknown_id(study):
        table = pd.read_csv(study.root / "lesions.csv")
        table.loc[0, "subject_id"] = "nobody"
        table.to_csv(study.root / "lesions.csv", index=False)

    message = _broken(tmp_path / "a", unknown_id)
    assert "lesions.csv" in message and "nobody" in message

    def not_binary(study):
        write_nifti(study.root / "lesions" / "s06.nii.gz", np.full((7, 8, 9), 2, dtype=np.uint8))

    message = _broken(tmp_path / "b", not_binary)
    assert "s06.nii.gz" in message and "binary" in message

    def outside_brain(study):
        lesion = np.zeros((7, 8, 9), dtype=np.uint8)
        lesion[0, 0, 0] = 1
        write_nifti(study.root / "lesions" / "s06.nii.gz", lesion)

    assert "inside the brain mask" in _broken(tmp_path / "c", outside_brain)

    def wrong_column(study):
        study.rewrite(lambda doc: doc["lesions"].update(mask_column="lesion_path"))

    message = _broken(tmp_path / "d", wrong_column)
    assert "lesions.mask_column" in message and "lesion_path" in message

    def off_grid(study):
        write_nifti(study.root / "lesions" / "s07.nii.gz", np.zeros((7, 8, 8), dtype=np.uint8))

    assert "s07.nii.gz" in _broken(tmp_path / "e", off_grid)


def test_unknown_lesion_keys_and_even_patch_sizes_are_manifest_errors(tmp_path):
    study = make_small_study(tmp_path, with_lesions=True)
    study.rewrite(lambda doc: doc["lesions"].update(masks="x"))
    with pytest.raises(ManifestError, match="lesions.masks"):
        load_manifest(study.manifest)
    study.rewrite(lambda doc: doc["model"].update(patch_size=4))
    with pytest.raises(ManifestError, match="model.patch_size"):
        load_manifest(study.manifest)
