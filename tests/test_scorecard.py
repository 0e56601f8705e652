"""Notebook 13's pieces: the sanity checks (weight randomisation, the shuffled-label models), every method on a pooled
head, the pixel-input wrapper, and the shipped photo scorecard."""

import math

import pytest
import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from gradcam_lite import evaluation, models, presence, sanity, scorecard, train
from gradcam_lite.encoders import PooledClassifier
from gradcam_lite.worlds import shapes

EPS = torch.finfo(torch.float32).eps


def label_frequencies() -> torch.Tensor:
    """The probability that a varied scene holds each label: with n objects (1 to 4, uniform), a given shape is absent with
    probability (2/3)^n, a given colour (3/4)^n."""
    counts = range(1, shapes.MAX_VARIED_OBJECTS + 1)
    shape_p, colour_p = (1 - sum(q**n for n in counts) / len(counts) for q in (2 / 3, 3 / 4))
    return torch.tensor([shape_p] * len(shapes.SHAPES) + [colour_p] * len(shapes.COLOURS))


def test_randomise_weights_draws_he_normal_weights_and_keeps_batch_norm():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(64, 128, 3), nn.BatchNorm2d(128), nn.Linear(512, 10))
    net[1].running_mean.fill_(0.3)
    with torch.no_grad():  # trained-looking BatchNorm parameters, not its defaults, so a reset would show
        net[1].weight.fill_(1.7)
        net[1].bias.fill_(-0.4)
    sanity.randomise_weights(net, torch.Generator().manual_seed(1))
    weights = net[0].weight.detach()
    # 73,728 normal draws: their standard deviation is within 1 % of sqrt(2 / 576) with overwhelming probability (SE 0.26 %)
    assert float(weights.std()) == pytest.approx(math.sqrt(2 / (64 * 9)), rel=0.01)
    assert float(net[2].weight.std()) == pytest.approx(math.sqrt(2 / 512), rel=0.05)
    assert not net[0].bias.any() and not net[2].bias.any()
    assert bool((net[1].running_mean == 0.3).all()) and bool((net[1].weight == 1.7).all()) and bool((net[1].bias == -0.4).all())
    again = sanity.randomised(net, 1)
    assert torch.equal(again[0].weight, sanity.randomised(net, 1)[0].weight) and not torch.equal(again[0].weight, sanity.randomised(net, 2)[0].weight)


def test_map_agreement_is_one_for_a_monotone_copy_and_minus_one_for_a_reversed_one():
    maps = torch.rand(3, 5, 5, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sanity.map_agreement(maps, maps.exp()), torch.ones(3), atol=1e-12)
    assert torch.allclose(sanity.map_agreement(maps, -maps), -torch.ones(3), atol=1e-12)
    assert sanity.map_agreement(maps[:1], torch.zeros(1, 5, 5)).tolist() == [0.0]  # a constant map has no order
    with pytest.raises(ValueError, match="two stacks of maps"):
        sanity.map_agreement(maps, maps[:2])
    with pytest.raises(ValueError, match="the second maps hold NaN"):
        sanity.map_agreement(maps, torch.full_like(maps, float("nan")))


def test_pixel_input_standardises_as_torchvision_does():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)).eval()
    pixels = torch.rand(2, 3, 9, 9, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = net(TF.normalize(pixels, models.IMAGENET_MEAN, models.IMAGENET_STD))
        # the same subtraction and division, in torchvision's code: float32 round-off at most
        torch.testing.assert_close(models.PixelInput(net)(pixels), expected, rtol=0, atol=16 * EPS)


def test_unit_maps_divides_by_the_maximum_and_keeps_zero_maps():
    maps = torch.tensor([[[1.0, 4.0]], [[0.0, 0.0]]])
    assert scorecard.unit_maps(maps).tolist() == [[[0.25, 1.0]], [[0.0, 0.0]]]
    with pytest.raises(ValueError, match="negative values"):
        scorecard.unit_maps(-maps)
    with pytest.raises(ValueError, match=r"a stack of maps \(N, H, W\)"):
        scorecard.unit_maps(maps[0])
    with pytest.raises(ValueError, match="the maps hold NaN"):
        scorecard.unit_maps(torch.full((1, 2, 2), float("nan")))


def test_on_a_pooled_head_the_gradient_methods_coincide():
    """Below global average pooling the gradient is w^c_k / Z at every position and does not depend on the image: Grad-CAM,
    HiResCAM (equal to it) and CAM (Z times it) give one map after normalising, and Smooth Grad-CAM++, which averages the
    derivatives over noisy copies, gives Grad-CAM++'s."""
    torch.manual_seed(0)
    model = PooledClassifier(5).eval()
    x = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    methods = evaluation.every_method("features")
    maps = {name: methods[name](model, x, [0, 3, 4]) for name in ("Grad-CAM", "HiResCAM", "CAM", "Grad-CAM++", "Smooth Grad-CAM++")}
    for name in ("HiResCAM", "CAM"):
        torch.testing.assert_close(maps[name], maps["Grad-CAM"], rtol=0, atol=1000 * EPS)
    torch.testing.assert_close(maps["Smooth Grad-CAM++"], maps["Grad-CAM++"], rtol=0, atol=1000 * EPS)


def test_a_short_run_memorises_shuffled_labels():
    # Shuffled labels keep each label's frequency among the scenes, and the image says nothing about them: a model that did
    # not memorise the scenes cannot beat the binary entropy of those frequencies.
    torch.set_num_threads(2)
    _, labels = train.fixed_training_set(64, shuffle_labels=True)
    p = labels.mean(dim=0).clamp(1e-6, 1 - 1e-6)
    frequency_loss = float((-(p * p.log() + (1 - p) * (1 - p).log())).mean())
    model, losses = train.train_presence_fixed(True, scenes=64, steps=150, progress=False)
    images, _ = train.fixed_training_set(64, shuffle_labels=True)
    with torch.no_grad():
        fitted = ((model(images) > 0) == labels.bool()).float().mean()
    assert sum(losses[-10:]) / 10 < frequency_loss / 4 and float(fitted) > 0.95


def test_shuffling_permutes_whole_label_vectors():
    images, true = train.fixed_training_set(32)
    shuffled_images, shuffled = train.fixed_training_set(32, shuffle_labels=True)
    assert torch.equal(images, shuffled_images)
    assert sorted(map(tuple, true.tolist())) == sorted(map(tuple, shuffled.tolist())) and not torch.equal(true, shuffled)


def test_the_shipped_shuffled_label_model_fits_its_scenes_and_knows_nothing_else():
    model = presence.load_presence(checkpoint="presence_shuffled_labels")
    images, labels = train.fixed_training_set(shuffle_labels=True)
    with torch.no_grad():
        assert float(((model(images) > 0) == labels.bool()).all(dim=1).float().mean()) > 0.99
    n = 1000
    accuracy = presence.accuracy_by_label(model, shapes.split_scenes("test", n, start=5000, maker=shapes.varied_scene))
    majority = torch.maximum(label_frequencies(), 1 - label_frequencies())
    for label, best_guess in zip(presence.LABELS, majority.tolist()):
        # no better than always guessing the more frequent answer, within 4 standard errors of a rate over n scenes
        assert accuracy[label] < best_guess + 4 * math.sqrt(best_guess * (1 - best_guess) / n)
    for checkpoint in ("presence_fixed_scenes", "presence_fixed_scenes_seed1"):  # the true-label controls learned the task
        control = presence.accuracy_by_label(presence.load_presence(checkpoint=checkpoint), shapes.split_scenes("test", n, start=5000, maker=shapes.varied_scene))
        assert control["exact"] > 0.85 and min(control[label] for label in presence.LABELS) > 0.95
    with pytest.raises(ValueError, match="no presence checkpoint 'presence_random'"):
        presence.load_presence(checkpoint="presence_random")


def test_shipped_scorecard_covers_every_map_and_case_and_one_record_is_reproduced(lite0_cases):
    model, cases = lite0_cases
    stored = scorecard.load_photo_scorecard()
    assert stored.cases == [c.name for c in cases] and tuple(stored.maps) == scorecard.MAP_NAMES
    first = stored.maps["Grad-CAM"]
    for records in stored.maps.values():
        # the clean image's score is one forward pass whatever the map: equal up to the batch it shared
        torch.testing.assert_close(records["y_before"], first["y_before"], rtol=0, atol=1e-4)
        assert records["road_most_score"].shape == (len(cases), len(scorecard.ROAD_FRACTIONS))
        assert bool((records["map_mean"] > 0).all() and (records["map_mean"] <= 1).all())
    # a deletion curve starts from the image; on a whole photo the insertion curve ends there (a composition's padding stays blurred)
    whole = [i for i, c in enumerate(cases) if c.whole]
    torch.testing.assert_close(first["deletion_score"][:, 0], first["y_before"], rtol=0, atol=1e-3)
    torch.testing.assert_close(first["insertion_score"][whole, -1], first["y_before"][whole], rtol=0, atol=1e-3)
    index = next(i for i, c in enumerate(cases) if c.name == "chelsea + coffee: Egyptian cat")
    saliency = scorecard.photo_maps(model, [cases[index]], "Grad-CAM")[0]
    again = scorecard.case_record(model, cases[index], index, saliency)
    for field in scorecard.FIELDS:
        # logits of size ~10 through another summation order: far below 1e-3
        torch.testing.assert_close(torch.tensor(again[field]), stored.maps["Grad-CAM"][field][index], rtol=0, atol=1e-3)
    # the pixel-image explanation, by hand: E = L * pixels, standardised by torchvision, through the model
    pixels_explained = TF.normalize(models.to_display(cases[index].image)[0] * saliency, models.IMAGENET_MEAN, models.IMAGENET_STD)
    with torch.no_grad():
        by_hand = model(pixels_explained[None]).softmax(dim=1)[0, cases[index].target]
    assert float(by_hand) == pytest.approx(float(stored.maps["Grad-CAM"]["p_after_pixels"][index]), abs=1e-4)
    with pytest.raises(ValueError, match="no map named 'Score-CAM'"):
        scorecard.photo_maps(model, cases[:1], "Score-CAM")
