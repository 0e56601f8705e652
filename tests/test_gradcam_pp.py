"""Grad-CAM++ and Smooth Grad-CAM++ against independent implementations and closed forms."""

import numpy as np
import pytest
import torch
from conftest import activations_and_gradients, assert_close_in_ulps, make_gapnet
from test_engine import assert_untouched, snapshot

from gradcam_lite import grad_cam_pp, smooth_grad_cam_pp

RAW = dict(size=None, normalize=False)


def reference_grad_cam_pp(A, g, total_activation=True):
    """numpy, one image and class: alpha_ij = g^2 / (2 g^2 + sum_ab A_ab g^3), w_k = sum alpha relu(g)."""
    A, g = A.numpy(), g.numpy()
    channel_total = A.sum(axis=(1, 2), keepdims=True)
    third = channel_total * g**3 if total_activation else (A * g**3).sum(axis=(1, 2), keepdims=True)
    denominator = 2 * g**2 + third
    alpha = np.divide(g**2, denominator, out=np.zeros_like(g), where=denominator != 0)
    weights = (alpha * np.maximum(g, 0)).sum(axis=(1, 2))
    return np.maximum((weights[:, None, None] * A).sum(axis=0), 0)


@pytest.mark.parametrize("layer", ["features.5.1", "features.8"])
def test_matches_independent_implementation_on_efficientnet(lite0, photos, layer):
    A, g = activations_and_gradients(lite0, photos, lite0.get_submodule(layer), lambda out: out[:, 285])
    got = grad_cam_pp(lite0, photos, 285, layer, **RAW)
    for b in range(photos.shape[0]):
        expected = torch.from_numpy(reference_grad_cam_pp(A[b], g[b]))
        # numpy and torch sum the channel totals (Z terms), the weights (Z) and the map (C) in their own orders
        assert_close_in_ulps(got[b], expected, ulps=2 * A.shape[-1] * A.shape[-2] + A.shape[1])


def test_total_activation_variant_differs_where_gradient_varies(lite0, photos):
    """Below the GAP head the gradient varies in space, so sum_ab A_ab * g_ij^3 != sum_ab A_ab g_ab^3."""
    A, g = activations_and_gradients(lite0, photos[:1], lite0.get_submodule("features.5.1"), lambda out: out[:, 285])
    paper = reference_grad_cam_pp(A[0], g[0])
    other = reference_grad_cam_pp(A[0], g[0], total_activation=False)
    got = grad_cam_pp(lite0, photos[:1], 285, "features.5.1", **RAW)[0].numpy()
    assert np.abs(paper - other).max() > 0.05 * paper.max()
    assert np.abs(got - paper).max() < np.abs(got - other).max()


def test_closed_form_below_a_gap_head():
    """With g = w/Z everywhere: alpha = 1 / (2 + S_k w_k / Z) and w'_k = Z relu(w_k/Z) alpha_k (S_k = channel total)."""
    model = make_gapnet()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    A = model.features(x).detach()
    Z = 25
    w = model.fc.weight.detach()[2] / Z
    total = A.sum(dim=(2, 3))
    alpha = torch.where(2 + total * w != 0, 1 / (2 + total * w), torch.zeros_like(total))
    weights = Z * w.clamp(min=0) * alpha
    expected = (weights[:, :, None, None] * A).sum(dim=1).clamp(min=0)
    assert_close_in_ulps(grad_cam_pp(model, x, 2, "features", **RAW), expected, ulps=2 * (Z + 6))


def test_smooth_with_zero_noise_is_grad_cam_pp():
    model = make_gapnet()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    # averaging three equal g^p (each divided by 3, then summed) is exact only up to a few roundings
    smooth = smooth_grad_cam_pp(model, x, [0, 4], "features.1", n_samples=3, sigma=0.0)
    assert_close_in_ulps(smooth, grad_cam_pp(model, x, [0, 4], "features.1"), ulps=16)


def noisy_samples(model, x, n, sigma, seed, target):
    """Independent: the same noise draws as the engine, each sample's score y_t and gradient g_t at features.1."""
    generator = torch.Generator().manual_seed(seed)
    noises = [torch.randn(x.shape, generator=generator, dtype=x.dtype) * sigma for _ in range(n)]
    grads = [activations_and_gradients(model, x + e, model.features[1], lambda out: out[:, target])[1][0].numpy() for e in noises]
    with torch.no_grad():
        scores = np.array([float(model(x + e)[0, target]) for e in noises])
    return noises, grads, scores


def formula(g1, g2, g3, A):
    total = A.sum(axis=(1, 2), keepdims=True)
    denominator = 2 * g2 + total * g3
    a = np.divide(g2, denominator, out=np.zeros_like(denominator), where=denominator != 0)
    weights = (a * np.maximum(g1, 0)).sum(axis=(1, 2))
    return np.maximum((weights[:, None, None] * A).sum(axis=0), 0)


@pytest.mark.parametrize("average", ["derivatives", "powers"])
def test_smooth_averages_derivatives_of_noisy_samples(average):
    """'derivatives': D^p = mean_t exp(y_t) g_t^p (Omeiza et al.); 'powers': mean_t g_t^p. Then the formula."""
    model = make_gapnet()
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    n, sigma = 4, 0.3
    _, grads, scores = noisy_samples(model, x, n, sigma, seed=7, target=3)
    weights = np.exp(scores) / n if average == "derivatives" else np.full(n, 1 / n)
    g1, g2, g3 = (sum(w * g**p for w, g in zip(weights, grads)) for p in (1, 2, 3))
    expected = formula(g1, g2, g3, model.features[:2](x)[0].detach().numpy())
    got = smooth_grad_cam_pp(model, x, 3, "features.1", n_samples=n, sigma=sigma, generator=torch.Generator().manual_seed(7), average=average, **RAW)
    # the engine divides the weights by their sum (a common factor), which rescales the raw map by that sum
    scale = weights.sum()
    assert_close_in_ulps(got[0] * scale, torch.from_numpy(expected), ulps=4 * (36 + 8 + n))  # Z = 36, C = 8, n samples
    assert not np.allclose(expected / scale, grad_cam_pp(model, x, 3, "features.1", **RAW)[0].numpy())


def test_smooth_average_of_maps_is_the_mean_of_noisy_grad_cam_pp_maps():
    model = make_gapnet()
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    generator = torch.Generator().manual_seed(5)
    noises = [torch.randn(x.shape, generator=generator, dtype=x.dtype) * 0.4 for _ in range(3)]
    expected = torch.stack([grad_cam_pp(model, x + e, [1, 2], "features.1") for e in noises]).mean(dim=0)
    low, high = expected.amin(dim=(1, 2), keepdim=True), expected.amax(dim=(1, 2), keepdim=True)
    got = smooth_grad_cam_pp(model, x, [1, 2], "features.1", n_samples=3, sigma=0.4, generator=torch.Generator().manual_seed(5), average="maps")
    assert_close_in_ulps(got, (expected - low) / (high - low), ulps=16)


def test_the_three_averages_differ_and_agree_without_noise():
    model = make_gapnet()
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    runs = {
        average: [smooth_grad_cam_pp(model, x, 3, "features.1", n_samples=4, sigma=sigma, generator=torch.Generator().manual_seed(2), average=average) for sigma in (0.0, 0.8)]
        for average in ("derivatives", "powers", "maps")
    }
    plain = grad_cam_pp(model, x, 3, "features.1")
    for average, (quiet, noisy) in runs.items():
        assert_close_in_ulps(quiet, plain, ulps=64)
    noisy = [runs[a][1] for a in runs]
    assert not torch.allclose(noisy[0], noisy[1]) and not torch.allclose(noisy[0], noisy[2])
    with pytest.raises(ValueError, match="average must be"):
        smooth_grad_cam_pp(model, x, 3, "features.1", average="mean")


def test_smooth_is_reproducible_with_a_generator_and_checks_arguments():
    model = make_gapnet()
    x = torch.randn(1, 3, 6, 6, dtype=torch.float64)
    first = smooth_grad_cam_pp(model, x, 1, "features.1", n_samples=3, sigma=0.5, generator=torch.Generator().manual_seed(1))
    again = smooth_grad_cam_pp(model, x, 1, "features.1", n_samples=3, sigma=0.5, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(first, again, rtol=0, atol=0)  # the same call with the same seed: one sequence of operations
    with pytest.raises(ValueError, match="n_samples"):
        smooth_grad_cam_pp(model, x, 1, "features.1", n_samples=0)
    with pytest.raises(ValueError, match="sigma"):
        smooth_grad_cam_pp(model, x, 1, "features.1", sigma=-1.0)


@pytest.mark.parametrize("fn", [grad_cam_pp, lambda *a, **k: smooth_grad_cam_pp(*a, n_samples=2, **k)])
def test_calls_leave_everything_as_it_was(fn):
    model = make_gapnet(inplace=True)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64)
    before = snapshot(model, x)
    assert fn(model, x, [[0, 1], [2, 3]], "features.1").shape == (2, 2, 6, 6)
    with pytest.raises(IndexError):
        fn(model, x, 9, "features.1")
    assert_untouched(model, x, before)
