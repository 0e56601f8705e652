"""Taylor checks, deletion metrics, the split network and the widgets behind notebooks 01-04."""

import copy

import pytest
import torch
from conftest import assert_close_in_ulps

from gradcam_lite import data, grad_cam, models
from gradcam_lite.metrics import blurred, deletion_curve, logits_after_removal, mean_colour, random_smooth_map, remove_region, top_fraction_mask
from gradcam_lite.taylor import central_difference, channel_effects, channel_scaling, scaled_channel_scores, score_and_gradient
from gradcam_lite.widgets import gradcam_explorer, taylor_explorer

CAT = 285


@pytest.fixture(scope="module")
def chelsea():
    return models.preprocess(data.load_image("chelsea"))


def split_in_float64(model, x, stage):
    """The activations after ``features[stage]`` and a float64 copy of the network above them."""
    below, above = models.split(model, stage)
    with torch.no_grad():
        A = below(x).double()
    return A, copy.deepcopy(above).double()


def test_split_recomposes_the_network(lite0, chelsea):
    below, above = models.split(lite0, 7)
    with torch.no_grad():
        torch.testing.assert_close(above(below(chelsea)), lite0(chelsea), rtol=0, atol=0)
    with pytest.raises(ValueError, match="stage must be 0 to 8"):
        models.split(lite0, 9)


def test_head_above_features_8_is_linear_so_first_order_is_exact(lite0, chelsea):
    """Above features.8 come average pooling and a linear layer: y(A + dA) - y(A) = sum g dA exactly."""
    A, above = split_in_float64(lite0, chelsea, 8)
    predicted, actual = channel_scaling(above, A, CAT, eps=0.7, channels=range(0, 1280, 37))
    torch.testing.assert_close(predicted, actual, rtol=1e-9, atol=1e-9)


def test_autograd_matches_central_differences_in_float64(lite0, chelsea):
    A, above = split_in_float64(lite0, chelsea, 7)
    _, gradient = score_and_gradient(above, A, CAT)
    for index in [(0, 3, 2, 4), (0, 100, 0, 0), (0, 319, 6, 6)]:
        numeric = central_difference(lambda a: above(a)[0, CAT], A, index, h=1e-4)
        assert numeric == pytest.approx(float(gradient[index]), rel=1e-6, abs=1e-9)


def test_channel_scaling_against_direct_edit(lite0, chelsea):
    below, above = models.split(lite0, 7)
    with torch.no_grad():
        A = below(chelsea)
        edited = A.clone()
        edited[0, 5] *= 1.3
        expected = above(edited)[0, CAT] - above(A)[0, CAT]
    _, actual = channel_scaling(above, A, CAT, eps=0.3, channels=[5])
    torch.testing.assert_close(actual[0], expected, rtol=1e-5, atol=1e-5)
    curve = scaled_channel_scores(above, A, CAT, 5, [0.0, 0.3])
    torch.testing.assert_close(curve[1] - curve[0], expected, rtol=1e-5, atol=1e-5)


def test_top_fraction_mask_selects_the_highest_pixels():
    torch.manual_seed(0)
    saliency = torch.rand(10, 12)
    mask = top_fraction_mask(saliency, 0.2)
    assert mask.sum() == 24
    assert saliency[mask].min() >= saliency[~mask].max()
    assert top_fraction_mask(saliency, 0.0).sum() == 0 and top_fraction_mask(saliency, 1.0).all()
    with pytest.raises(ValueError, match="fraction"):
        top_fraction_mask(saliency, 1.5)


def test_baselines_and_removal():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    torch.testing.assert_close(mean_colour(x)[1, 2], torch.full((4, 4), float(x[1, 2].mean())))
    constant = torch.full((1, 3, 40, 40), 0.7)
    torch.testing.assert_close(blurred(constant, sigma=3.0), constant)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1, 2] = True
    removed = remove_region(x, mask, torch.zeros_like(x))
    assert (removed[:, :, 1, 2] == 0).all() and (removed.count_nonzero() == x.count_nonzero() - 6)


def test_deletion_curve_ends(lite0, chelsea):
    saliency = grad_cam(lite0, chelsea, CAT, "features.8")[0]
    baseline = mean_colour(chelsea)
    curve = deletion_curve(lite0, chelsea, saliency, CAT, torch.tensor([0.0, 1.0]), baseline)
    with torch.no_grad():
        logits = torch.cat([lite0(chelsea), lite0(baseline)])  # nothing removed; everything removed
    assert_close_in_ulps(curve.score, logits[:, CAT], ulps=2**10)  # a batch of 2 vs single images
    assert_close_in_ulps(curve.probability, logits.softmax(dim=1)[:, CAT], ulps=2**10)
    assert float(curve.score[0] - curve.score[1]) > 1  # the baseline has lost the cat


def test_logits_after_removal_matches_removing_each_region_by_hand(lite0, chelsea):
    maps = torch.stack([random_smooth_map((224, 224), generator=torch.Generator().manual_seed(s)) for s in range(3)])
    baseline = mean_colour(chelsea)
    logits = logits_after_removal(lite0, chelsea, maps, 0.2, baseline)
    with torch.no_grad():
        by_hand = torch.cat([lite0(torch.where(top_fraction_mask(m, 0.2), baseline, chelsea)) for m in maps])
    assert logits.shape == (3, 1000)
    assert_close_in_ulps(logits, by_hand, ulps=2**10)  # a batch of 3 vs single images
    assert not torch.allclose(logits[0], logits[1])  # different regions, different effects


def test_random_smooth_map_is_a_coarse_random_region():
    first = random_smooth_map((56, 56), resolution=7, generator=torch.Generator().manual_seed(1))
    again = random_smooth_map((56, 56), resolution=7, generator=torch.Generator().manual_seed(1))
    other = random_smooth_map((56, 56), resolution=7, generator=torch.Generator().manual_seed(2))
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert 0 <= float(first.min()) and float(first.max()) <= 1
    # bilinear upsampling by 8: neighbouring pixels differ by at most 1/8 of the coarse grid's step (<= 1)
    assert float((first[1:] - first[:-1]).abs().max()) <= 1 / 8 + 1e-6
    assert top_fraction_mask(first, 0.2).sum() == round(0.2 * 56 * 56)


def test_uniform_shift_changes_score_by_z_alpha_delta_where_head_is_affine(lite0, chelsea):
    """Above features.8 the score is affine in A: shifting channel k by delta changes y by Z alpha_k delta exactly."""
    A, above = split_in_float64(lite0, chelsea, 8)
    channels = range(0, 1280, 41)
    effects = channel_effects(above, A, CAT, torch.full_like(A, 0.5), channels)
    Z = 49
    alpha = lite0.classifier[1].weight.double()[CAT, list(channels)] / Z  # notebook 02: alpha_k = w_k / Z
    expected = Z * alpha * 0.5
    assert_close_in_ulps(effects.actual, expected, ulps=2 * (1280 + 49))
    assert_close_in_ulps(effects.average_slope, expected, ulps=2 * 49)
    assert_close_in_ulps(effects.first_order, expected, ulps=2 * 49)


def test_average_slope_differs_from_first_order_for_non_uniform_changes_below(lite0, chelsea):
    """Hand-made case: dA = one position only; first order = g at that position, average slope = alpha."""
    A, above = split_in_float64(lite0, chelsea, 7)
    _, gradient = score_and_gradient(above, A, CAT)
    perturbation = torch.zeros_like(A)
    perturbation[0, :, 3, 4] = 1e-3
    effects = channel_effects(above, A, CAT, perturbation, channels=[0, 7, 99])
    torch.testing.assert_close(effects.first_order, 1e-3 * gradient[0, [0, 7, 99], 3, 4], rtol=1e-12, atol=0)
    torch.testing.assert_close(effects.average_slope, 1e-3 * gradient[0, [0, 7, 99]].mean(dim=(1, 2)), rtol=1e-12, atol=0)
    assert not torch.allclose(effects.first_order, effects.average_slope)
    with pytest.raises(ValueError, match="same shape"):
        channel_effects(above, A, CAT, perturbation[:, :5])


def test_taylor_explorer_driven_headless(lite0, chelsea):
    below, above = models.split(lite0, 7)
    with torch.no_grad():
        A = below(chelsea)
    explorer = taylor_explorer(above, A, CAT)
    channel, eps = explorer.children[:2]
    channel.value, eps.value = 12, 0.5
    predicted, actual = channel_scaling(above, A, CAT, eps=0.5, channels=[12])
    assert explorer.result["predicted"] == pytest.approx(float(predicted[0]), rel=1e-5)
    assert explorer.result["actual"] == pytest.approx(float(actual[0]), rel=1e-4, abs=1e-5)


def test_gradcam_explorer_driven_headless(lite0):
    photos = {name: data.load_image(name) for name in ("chelsea", "coffee")}
    explorer = gradcam_explorer(lite0, photos, ["features.6", "features.8"])
    photo, rank, layer, _alpha = explorer.children[:4]
    photo.value, rank.value, layer.value = "coffee", 2, "features.6"
    x = models.preprocess(photos["coffee"])
    with torch.no_grad():
        second = int(lite0(x).topk(2).indices[0, 1])
    assert explorer.result["class_index"] == second
    torch.testing.assert_close(explorer.result["map"], grad_cam(lite0, x, second, "features.6")[0])
