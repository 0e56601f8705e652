"""Average Drop, Increase in Confidence and ROAD: closed forms on tiny models and images, and pytorch-grad-cam as an oracle."""

import math

import numpy as np
import pytest
import torch
from pytorch_grad_cam.metrics.cam_mult_image import CamMultImageConfidenceChange
from pytorch_grad_cam.metrics.perturbation_confidence import PerturbationConfidenceMetric, RemoveLeastRelevantFirst, RemoveMostRelevantFirst
from pytorch_grad_cam.metrics.road import NoisyLinearImputer
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget, ClassifierOutputTarget
from torch import nn

from gradcam_lite.perturbation import (NEIGHBOUR_WEIGHTS, average_drop, explanation_confidence, increase_in_confidence, linear_imputation, road,
                                       road_mask)

EPS = torch.finfo(torch.float32).eps


class MeanBrightness(nn.Module):
    """Logits (a m, -a m) of the image's mean m: p(0) = sigmoid(2 a m), in closed form."""

    def __init__(self, a: float):
        super().__init__()
        self.a = a

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([self.a * m, -self.a * m], dim=1)


def small_net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 8, 3, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()


def sigmoid(v):
    return 1 / (1 + math.exp(-v))


def test_average_drop_and_increase_in_confidence_in_closed_form():
    model = MeanBrightness(3.0)
    x = torch.stack([torch.full((1, 4, 4), 0.5), torch.full((1, 4, 4), -0.5)])
    maps = torch.full((2, 4, 4), 0.5)  # halves every input value, so halves the mean
    confidence = explanation_confidence(model, x, maps, [0, 0])
    expected_before = [sigmoid(2 * 3.0 * 0.5), sigmoid(-2 * 3.0 * 0.5)]
    expected_after = [sigmoid(3.0 * 0.5), sigmoid(-3.0 * 0.5)]
    torch.testing.assert_close(confidence.before, torch.tensor(expected_before), rtol=0, atol=4 * EPS)
    torch.testing.assert_close(confidence.after, torch.tensor(expected_after), rtol=0, atol=4 * EPS)
    torch.testing.assert_close(confidence.logit_after, torch.tensor([0.75, -0.75]), rtol=0, atol=4 * EPS)
    # image 0 loses confidence, image 1 gains it
    drop = (expected_before[0] - expected_after[0]) / expected_before[0]
    assert abs(average_drop(model, x, maps, [0, 0]) - 100 * drop / 2) < 1e-4
    assert increase_in_confidence(model, x, maps, [0, 0]) == 50.0


def test_explanation_confidence_agrees_with_pytorch_grad_cam():
    model = small_net()
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(3, 3, 16, 16, generator=generator)
    maps = torch.rand(3, 16, 16, generator=generator)
    targets = [0, 3, 4]
    confidence = explanation_confidence(model, x, maps, targets)
    theirs = CamMultImageConfidenceChange()(x, maps.numpy(), [ClassifierOutputSoftmaxTarget(c) for c in targets], model)  # O - Y
    # the same probabilities, computed in batches of another composition: a few float32 ulps of the logits
    torch.testing.assert_close(confidence.after - confidence.before, torch.from_numpy(theirs), rtol=0, atol=32 * EPS)
    assert not torch.allclose(confidence.after, confidence.before)  # the maps did change something


def test_linear_imputation_of_one_pixel_is_its_neighbours_weighted_mean():
    generator = torch.Generator().manual_seed(2)
    image = torch.rand(2, 5, 6, generator=generator)
    removed = torch.zeros(5, 6, dtype=torch.bool)
    removed[2, 3] = True  # interior: all eight neighbours known
    removed[0, 0] = True  # corner: three neighbours, weights 1/6, 1/6, 1/12 renormalised
    filled = linear_imputation(image, removed)
    interior = sum(w * image[:, 2 + dr, 3 + dc] for (dr, dc), w in NEIGHBOUR_WEIGHTS.items())  # the weights sum to 1
    corner = (image[:, 0, 1] / 6 + image[:, 1, 0] / 6 + image[:, 1, 1] / 12) / (5 / 12)
    torch.testing.assert_close(filled[:, 2, 3], interior, rtol=0, atol=4 * EPS)
    torch.testing.assert_close(filled[:, 0, 0], corner, rtol=0, atol=4 * EPS)
    assert torch.equal(filled[:, ~removed], image[:, ~removed])  # kept pixels untouched


def test_linear_imputation_of_two_neighbours_solves_their_coupled_equations():
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(1, 4, 4, generator=generator).double()
    removed = torch.zeros(4, 4, dtype=torch.bool)
    removed[1, 1] = removed[1, 2] = True  # side by side, each the other's neighbour with weight 1/6

    def known_sum(r, c):
        return sum(w * image[0, r + dr, c + dc] for (dr, dc), w in NEIGHBOUR_WEIGHTS.items() if not removed[r + dr, c + dc])

    # x_a - x_b / 6 = known(a), -x_a / 6 + x_b = known(b): both interior, their weights sum to 1
    solution = np.linalg.solve([[1, -1 / 6], [-1 / 6, 1]], [float(known_sum(1, 1)), float(known_sum(1, 2))])
    filled = linear_imputation(image, removed)
    torch.testing.assert_close(filled[0, 1, 1:3], torch.from_numpy(solution), rtol=0, atol=1e-12)


def test_linear_imputation_agrees_with_pytorch_grad_cam_without_noise():
    generator = torch.Generator().manual_seed(4)
    image = torch.rand(3, 12, 14, generator=generator)
    removed = torch.rand(12, 14, generator=generator) < 0.4
    theirs = NoisyLinearImputer(noise=0.0)(image, (~removed).float())  # theirs: 1 where kept
    torch.testing.assert_close(linear_imputation(image, removed), theirs, rtol=0, atol=1e-6)  # both solve in float64


def test_imputation_noise_is_seeded_and_has_its_standard_deviation():
    image, removed = torch.zeros(1, 40, 40), torch.ones(40, 40, dtype=torch.bool)
    removed[0, 0] = False  # one known pixel: the noiseless fill is 0 everywhere
    noisy = [linear_imputation(image, removed, 0.5, torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(noisy[0], noisy[1])
    assert abs(float(noisy[0][0][removed].std()) - 0.5) < 0.05  # 1599 draws: the SE of a standard deviation is 0.5 / sqrt(2 * 1599) ~ 0.009


@pytest.mark.parametrize("order, theirs", [("most", RemoveMostRelevantFirst), ("least", RemoveLeastRelevantFirst)])
def test_road_agrees_with_pytorch_grad_cam_without_noise(order, theirs):
    model = small_net(6)
    generator = torch.Generator().manual_seed(7)
    x = torch.randn(2, 3, 16, 16, generator=generator)
    maps = torch.rand(2, 16, 16, generator=generator)
    targets = [1, 2]
    ours = road(model, x, maps, targets, [0.2, 0.7], order, noise=0.0)
    for k, f in enumerate([0.2, 0.7]):
        kept = 100 * (1 - f)  # their percentile is the share kept: the pixels below it (of L for MoRF, of 1 - L for LeRF)
        metric = PerturbationConfidenceMetric(theirs(kept, NoisyLinearImputer(noise=0.0)))
        scores = metric(x, maps.numpy(), [ClassifierOutputTarget(c) for c in targets], model, return_diff=False)
        # the same pixels imputed to float64 round-off, then forward passes in batches of another composition: float32 ulps
        torch.testing.assert_close(ours.score[:, k], torch.from_numpy(scores), rtol=0, atol=32 * EPS)


def test_road_removes_the_stated_fraction_from_the_stated_end():
    saliency = torch.arange(100.0).reshape(10, 10)
    most, least = road_mask(saliency, 0.25, "most"), road_mask(saliency, 0.25, "least")
    # q_0.75 of 0..99 interpolated is 74.25: 75..99 removed; q_0.25 is 24.75: 0..24 removed
    assert most.sum() == 25 and bool(most.flatten()[75:].all())
    assert least.sum() == 25 and bool(least.flatten()[:25].all())


def test_road_removes_the_stated_count_from_a_flat_map_in_a_seeded_random_order():
    flat = torch.zeros(10, 10)
    flat[:2] = 1.0  # 20 pixels at the top, 80 tied at 0
    first, second, other = (road_mask(flat, 0.5, "least", torch.Generator().manual_seed(s)) for s in (0, 0, 1))
    assert first.sum() == 50 and not bool(first[:2].any())  # 50 of the 80 tied pixels, none of the top
    assert torch.equal(first, second) and not torch.equal(first, other)
    assert road_mask(torch.ones(4, 4), 0.75, "most").sum() == 12  # a constant map: 16 - ceil(15 * 0.25) pixels, not all 16


def test_road_within_a_region_ranks_and_removes_only_its_pixels():
    saliency = torch.arange(100.0).reshape(10, 10)
    band = torch.zeros(10, 10, dtype=torch.bool)
    band[3:7] = True  # 40 pixels, values 30..69
    most, least = road_mask(saliency, 0.25, "most", within=band), road_mask(saliency, 0.25, "least", within=band)
    # the rule on the 40 pixels: 40 - ceil(39 * 0.75) = 10 largest (60..69), floor(39 * 0.25) + 1 = 10 smallest (30..39)
    assert torch.equal(most.flatten().nonzero().flatten(), torch.arange(60, 70))
    assert torch.equal(least.flatten().nonzero().flatten(), torch.arange(30, 40))
    everywhere = torch.ones(10, 10, dtype=torch.bool)
    assert torch.equal(road_mask(saliency, 0.4, "most", within=everywhere), road_mask(saliency, 0.4, "most"))
    model, x = small_net(), torch.randn(1, 3, 10, 10, generator=torch.Generator().manual_seed(3))
    outside = road(model, x, saliency[None], [0], [0.5], "least", noise=0.0, within=band[None])
    kept_outside = linear_imputation(x[0], road_mask(saliency, 0.5, "least", within=band))
    with torch.no_grad():
        assert torch.equal(outside.score[0, 0], model(kept_outside[None])[0, 0])


def test_bad_inputs_are_named():
    model, x = small_net(), torch.randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        explanation_confidence(model, x, torch.full((2, 8, 8), 2.0), [0, 1])
    with pytest.raises(ValueError, match=r"maps must be \(N, H, W\)"):
        average_drop(model, x, torch.rand(2, 4, 4), [0, 1])
    with pytest.raises(ValueError, match="3 targets for 2 images"):
        increase_in_confidence(model, x, torch.rand(2, 8, 8), [0, 1, 2])
    with pytest.raises(ValueError, match="the maps hold NaN"):
        road(model, x, torch.full((2, 8, 8), float("nan")), [0, 1], [0.5], "most")
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        road_mask(torch.rand(8, 8), 1.0, "most")
    with pytest.raises(ValueError, match="order must be 'most' or 'least'"):
        road_mask(torch.rand(8, 8), 0.5, "top")
    with pytest.raises(ValueError, match="within must be a non-empty boolean mask"):
        road_mask(torch.rand(8, 8), 0.5, "most", within=torch.zeros(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"within must be \(N, H, W\)"):
        road(model, x, torch.rand(2, 8, 8), [0, 1], [0.5], "most", within=torch.ones(8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="every pixel is removed"):
        linear_imputation(torch.rand(3, 4, 4), torch.ones(4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="boolean mask"):
        linear_imputation(torch.rand(3, 4, 4), torch.ones(4, 4))
