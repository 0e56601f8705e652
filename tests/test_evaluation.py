"""The experiments of notebooks 10-12: the varied shapes world, the presence classifier, scoring, attacks, the photo cases and shipped results."""

import json
import math
import re

import numpy as np
import pytest
import torch
from scipy import stats
from torch import nn

from gradcam_lite import data, evaluation, grad_cam, models, presence, train
from gradcam_lite.encoders import PooledClassifier
from gradcam_lite.metrics import box_mask, paired_difference, pointing_hit, pointing_hits, tolerant_mask
from gradcam_lite.worlds import shapes

EPS = torch.finfo(torch.float32).eps
CAPTION_WORDS = re.compile(r"a (small|large) (\w+) (\w+)")


@pytest.fixture(scope="module")
def varied():
    return shapes.make_scenes(200, seed=77, maker=shapes.varied_scene)


def test_varied_scenes_have_one_to_four_objects_of_any_side(varied):
    counts = {len(s.objects) for s in varied}
    assert counts == set(range(1, shapes.MAX_VARIED_OBJECTS + 1))
    sides = {o.box[2] - o.box[0] for s in varied for o in s.objects}
    assert sides <= set(shapes.VARIED_SIDES) and len(sides) > len(shapes.SIZES)
    for scene in varied:
        assert int(torch.stack([o.mask for o in scene.objects]).sum(dim=0).max()) == 1  # no overlap


def test_the_captioned_world_is_unchanged_by_the_varied_one():
    scene = shapes.make_scene(11)
    assert all(o.box[2] - o.box[0] == shapes.SIZES[o.size] for o in scene.objects)
    assert shapes.split_scenes("test", 3)[0].seed == shapes.SPLITS["test"][0]


def test_instances_scene_holds_distinct_sides_of_one_shape():
    for seed in range(30):
        count = 2 + seed % 3
        scene = shapes.instances_scene(seed, "triangle", count)
        assert len(scene.objects) == count and {o.shape for o in scene.objects} == {"triangle"}
        assert len({o.box[2] - o.box[0] for o in scene.objects}) == count
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        shapes.instances_scene(0, "hexagon", 2)
    with pytest.raises(ValueError, match="count must lie in 1..4, got 5"):
        shapes.instances_scene(0, "circle", 5)


def test_several_instances_scenes_cycle_shapes_and_counts():
    scenes = evaluation.several_instances_scenes(18)
    pairs = {(s.objects[0].shape, len(s.objects)) for s in scenes}
    assert pairs == {(shape, n) for shape in shapes.SHAPES for n in (2, 3, 4)}  # every shape with every count


def test_targets_and_masks_agree_with_the_captions(varied):
    targets = presence.targets(varied)
    for scene, row in zip(varied, targets):
        words = {w for _, colour, shape in CAPTION_WORDS.findall(scene.caption) for w in (colour, shape)}
        assert {label for label, present in zip(presence.LABELS, row) if present} == words
        for label in words & set(shapes.COLOURS):
            mask = presence.label_mask(scene, label)
            mean = scene.image[:, mask].mean(dim=1)
            assert min(shapes.COLOURS, key=lambda c: float(((mean - torch.tensor(shapes.COLOURS[c])) ** 2).sum())) == label
    assert not presence.label_mask(varied[0], next(label for label, p in zip(presence.LABELS, targets[0]) if not p)).any()
    with pytest.raises(ValueError, match="unknown label 'purple'"):
        presence.label_mask(varied[0], "purple")


def test_present_labels_all_or_one_per_scene(varied):
    every = presence.present_labels(varied)
    assert len(every) == int(presence.targets(varied).sum())
    one = presence.present_labels(varied, seed=0)
    assert [c.scene for c in one] == list(range(len(varied)))
    assert all(presence.targets([varied[c.scene]])[0, c.label] == 1 for c in one)
    for case in every:
        carriers = [o for o in varied[case.scene].objects if presence.LABELS[case.label] in (o.shape, o.colour)]
        assert (case.box is None) == (len(carriers) > 1)


def test_a_short_training_run_learns_beyond_the_label_frequencies():
    # A model that knows only how often each label is present scores the binary entropy of that frequency.
    # With n objects (1 to 4, uniform), a given shape is absent with probability (2/3)^n, a colour (3/4)^n.
    def entropy(p):
        return -(p * math.log(p) + (1 - p) * math.log(1 - p))

    counts = range(1, shapes.MAX_VARIED_OBJECTS + 1)
    shape_p, colour_p = (1 - sum(q**n for n in counts) / len(counts) for q in (2 / 3, 3 / 4))
    constant_loss = (3 * entropy(shape_p) + 4 * entropy(colour_p)) / 7
    torch.set_num_threads(2)
    _, losses = train.train_presence(steps=60, progress=False)
    assert sum(losses[-10:]) / 10 < constant_loss - 0.1


def test_shipped_presence_classifier_on_fresh_test_scenes():
    accuracy = presence.accuracy_by_label(presence.load_presence(), shapes.split_scenes("test", 1000, start=5000, maker=shapes.varied_scene))
    assert accuracy["exact"] > 0.9 and min(accuracy[label] for label in presence.LABELS) > 0.97


def test_cam_equals_grad_cam_at_the_pooled_features():
    torch.manual_seed(0)
    model = PooledClassifier(5).eval()
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    targets = [0, 3, 4, 1]
    # below a global average the gradient is w^c / Z everywhere, so Grad-CAM is CAM up to 1/Z, which normalising removes
    torch.testing.assert_close(evaluation.class_activation_map(model, x, targets), grad_cam(model, x, targets, "features"), rtol=0, atol=1000 * EPS)
    with pytest.raises(ValueError, match="no linear layer"):
        evaluation.final_linear(nn.Sequential(nn.Conv2d(3, 3, 1)))


def test_pixel_map_is_the_largest_absolute_colour_value():
    g = torch.tensor([[[[1.0, -3.0]], [[-2.0, 0.5]], [[0.0, 2.0]]]])  # (1, 3, 1, 2)
    assert torch.equal(evaluation.pixel_map(g), torch.tensor([[[2.0, 3.0]]]))


def test_pointing_hits_agree_with_a_direct_argmax():
    generator = torch.Generator().manual_seed(3)
    maps = torch.rand(20, 16, 16, generator=generator)
    masks = torch.rand(20, 16, 16, generator=generator) > 0.8
    near = torch.stack([tolerant_mask(m, 1.5) for m in masks])
    expected = [bool(n.numpy().ravel()[int(np.argmax(m.numpy()))]) for m, n in zip(maps, near)]
    assert pointing_hits(maps, near).tolist() == expected
    assert [pointing_hit(m, k, 1.5) for m, k in zip(maps, masks)] == expected
    assert not pointing_hits(torch.zeros(1, 16, 16), torch.ones(1, 16, 16, dtype=torch.bool))[0]  # constant: points nowhere
    with pytest.raises(ValueError, match="must both be"):
        pointing_hits(maps, near[:, :8])


def test_instance_shares_of_a_map_on_the_smallest_instance():
    scene = shapes.instances_scene(5, "square", 3)
    by_area = sorted(scene.objects, key=lambda o: int(o.mask.sum()))
    union = torch.stack([o.mask for o in scene.objects]).any(dim=0)
    maps = torch.stack([by_area[0].mask.float(), (~union).float(), torch.ones(64, 64), union.float()])
    shares = evaluation.instance_shares(maps, [scene] * 4)
    areas = [int(o.mask.sum()) for o in by_area]
    assert shares.smallest.tolist() == [1.0, 0.0, pytest.approx(areas[0] / 64**2), pytest.approx(areas[0] / sum(areas))]
    assert shares.outside.tolist()[:2] == [0.0, 1.0] and shares.largest.tolist()[:2] == [0.0, 0.0]
    assert shares.instances.tolist() == [1.0, 0.0, pytest.approx(sum(areas) / 64**2), 1.0]
    # how the map divides its mass on the instances: all on the smallest; none there; by area for a flat map (twice)
    assert shares.smallest_among_instances.tolist() == [1.0, 0.0, pytest.approx(areas[0] / sum(areas)), pytest.approx(areas[0] / sum(areas))]
    with pytest.raises(ValueError, match="4 maps for 1 scenes"):
        evaluation.instance_shares(maps, [scene])


def test_count_passes_counts_images_through_a_module():
    model = nn.Sequential(nn.Linear(4, 3), nn.Linear(3, 2))
    passes, seconds = evaluation.count_passes(model[0], lambda: (model(torch.zeros(3, 4)), model[0](torch.zeros(5, 4)), model[1](torch.zeros(7, 3))))
    assert passes == 8 and seconds >= 0  # the 7 that skipped model[0] are not counted
    assert not model[0]._forward_hooks  # the counter is gone


def test_paired_difference_by_groups_is_that_of_the_group_means():
    generator = torch.Generator().manual_seed(5)
    first, second = torch.rand(12, generator=generator), torch.rand(12, generator=generator)
    groups = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, 3, 4, 4])
    means = np.array([float((first - second)[groups == g].mean()) for g in range(5)])
    result = paired_difference(first, second, groups)
    assert result.mean == pytest.approx(means.mean()) and result.standard_error == pytest.approx(means.std(ddof=1) / math.sqrt(5))
    assert result.z == pytest.approx(stats.ttest_1samp(means, 0.0).statistic)
    with pytest.raises(ValueError, match="one integer group per item"):
        paired_difference(first, second, groups[:5])
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_difference(first, second, torch.zeros(12, dtype=torch.long))


class TwoClassLinear(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(2, 3 * size * size, generator=torch.Generator().manual_seed(0)) * 0.01)

    def forward(self, x):
        return x.flatten(1) @ self.weight.T


def grey_pixels(size: int, level: int = 128) -> torch.Tensor:
    """A preprocessed image (1, 3, size, size) of one grey level, on the 8-bit grid."""
    std, mean = (torch.tensor(v)[:, None, None] for v in (models.IMAGENET_STD, models.IMAGENET_MEAN))
    return ((torch.full((1, 3, size, size), level / 255) - mean) / std)


def test_one_targeted_step_on_a_linear_model_matches_its_closed_form():
    # Two classes: the gradient of the target's cross-entropy is -(1 - p_t)(w_t - w_other), so one step moves every pixel
    # value by one grey level towards sign(w_t - w_other), already on the 8-bit grid from grey 128, and raises
    # y_t - y_other by exactly sum_i |w_t - w_other|_i / (255 std_i) in the network's standardised units.
    size = 4
    model = TwoClassLinear(size)
    std = torch.tensor(models.IMAGENET_STD)[:, None, None]
    x = grey_pixels(size)
    attack = evaluation.targeted_pgd(model, x, 1, 0, epsilon=2 / 255, max_steps=1)
    difference = (model.weight[1] - model.weight[0]).detach()
    expected = float((difference.abs() / (255 * std).expand(3, size, size).flatten()).sum())
    margin = lambda image: float((model(image)[0, 1] - model(image)[0, 0]).detach())  # noqa: E731
    assert attack.steps == 1 and attack.grey_levels == 1
    assert margin(attack.image) - margin(x) == pytest.approx(expected, rel=1e-4)
    with torch.no_grad():
        p = model(attack.image).softmax(dim=1)[0]
    assert attack.target_probability == pytest.approx(float(p[1]), abs=1e-6) and attack.true_probability == pytest.approx(float(p[0]), abs=1e-6)
    assert attack.succeeded == (attack.target_probability > evaluation.TARGETED_SUCCESS)


def test_targeted_pgd_stays_on_the_8_bit_grid_in_budget_and_in_range():
    size = 6
    model = TwoClassLinear(size)
    std, mean = (torch.tensor(v)[:, None, None] for v in (models.IMAGENET_STD, models.IMAGENET_MEAN))
    levels = torch.randint(0, 256, (1, 3, size, size), generator=torch.Generator().manual_seed(4)).float()
    levels[0, 0, 0, 0], levels[0, 1, 0, 0] = 0.0, 255.0  # at the ends of the range: the attack must not leave it
    x = (levels / 255 - mean) / std
    for epsilon, budget in [(3 / 255, 3), (2.5 / 255, 2)]:  # a budget between two grey levels is the lower one
        attack = evaluation.targeted_pgd(model, x, 1, 0, epsilon=epsilon, max_steps=10)
        attacked = (attack.image * std + mean) * 255
        assert float((attacked - attacked.round()).abs().max()) < 1e-3  # an image a file can hold
        assert float((attacked - levels).abs().max()) <= budget + 1e-3 and attack.grey_levels <= budget
        assert float(attacked.min()) >= -1e-3 and float(attacked.max()) <= 255 + 1e-3
    unmoved = evaluation.targeted_pgd(model, x, 1, 0, epsilon=1 / 255, max_steps=0)  # no step: the clean image, rounded
    assert unmoved.steps == 0 and torch.allclose(unmoved.image, evaluation.to_8_bits(x))


def test_to_8_bits_rounds_to_the_grid_and_clamps_to_the_range():
    std, mean = (torch.tensor(v)[:, None, None] for v in (models.IMAGENET_STD, models.IMAGENET_MEAN))
    pixels = torch.tensor([0.1234, 1.3, -0.2, 0.5]).reshape(1, 1, 1, 4).expand(1, 3, 1, 4)
    rounded = evaluation.to_8_bits((pixels - mean) / std) * std + mean
    expected = torch.tensor([round(0.1234 * 255) / 255, 1.0, 0.0, 128 / 255]).reshape(1, 1, 1, 4).expand(1, 3, 1, 4)  # 127.5 rounds to even
    torch.testing.assert_close(rounded, expected, rtol=0, atol=1e-6)


def test_far_class_is_half_the_class_list_away():
    assert [evaluation.far_class(c) for c in (0, 285, 499, 500, 999)] == [500, 785, 999, 0, 499]
    assert all(evaluation.far_class(c, 10) == (c + 5) % 10 != c for c in range(10))


def test_random_sign_noise_moves_every_pixel_by_epsilon_within_the_range():
    std, mean = (torch.tensor(v)[:, None, None] for v in (models.IMAGENET_STD, models.IMAGENET_MEAN))
    pixels = torch.full((1, 3, 8, 8), 0.5)
    noisy = evaluation.random_sign_noise((pixels - mean) / std, 2 / 255, torch.Generator().manual_seed(0)) * std + mean
    torch.testing.assert_close((noisy - pixels).abs(), torch.full_like(pixels, 2 / 255), rtol=0, atol=1e-6)
    assert 0.3 < float((noisy > pixels).float().mean()) < 0.7  # both signs, about half each (192 coin flips)


def test_occlusion_cells_round_trip_and_refuse_a_map_that_is_not_cellwise_constant():
    cells = torch.arange(16.0).reshape(4, 4)
    occlusion = cells.repeat_interleave(8, 0).repeat_interleave(8, 1)
    assert torch.equal(evaluation.occlusion_cells(occlusion, 8), cells)
    occlusion[3, 5] += 1
    with pytest.raises(ValueError, match="not constant on 8 x 8 cells"):
        evaluation.occlusion_cells(occlusion, 8)


def test_photo_cases_scale_the_object_boxes_to_the_input(lite0_cases):
    _, cases = lite0_cases
    by_name = {c.name: c for c in cases}
    # chelsea is 451 x 300: its box (15, 0, 410, 300) resized per axis to 224 x 224
    assert by_name["chelsea"].object_box == (round(15 * 224 / 451), 0, round(410 * 224 / 451), 224) and by_name["chelsea"].whole
    assert by_name["astronaut"].object_box is None
    # in a composition the 600 x 600 canvas holds 300 px tiles at rows 150-450: rows 56-168 at 224
    cat = by_name["chelsea + coffee: Egyptian cat"]
    assert cat.box == (0, 56, 112, 168) and not cat.whole
    assert cat.photo_pixels.sum() == 224 * 112 and bool(cat.photo_pixels[56:168].all())
    assert cat.image_name == by_name["chelsea + coffee: espresso"].image_name == "chelsea + coffee" and by_name["chelsea"].image_name == "chelsea"
    for c in cases:
        if c.box is not None:  # a composition's object lies in its own tile
            assert c.box[0] <= c.object_box[0] < c.object_box[2] <= c.box[2] and c.box[1] <= c.object_box[1] < c.object_box[3] <= c.box[3]


@pytest.mark.parametrize("window", [64, 32])
def test_shipped_occlusion_maps_cover_the_cases_and_are_reproduced(lite0_cases, window):
    model, cases = lite0_cases
    stride = dict(evaluation.OCCLUSION_SETTINGS)[window]
    stored = evaluation.load_photo_occlusion(window)
    assert list(stored) == [c.name for c in cases]
    chelsea = next(c for c in cases if c.name == "chelsea")
    recomputed = evaluation.compute_photo_occlusion(model, [chelsea], window, stride)["chelsea"]
    # each value is a mean of float32 logit differences of size ~10; another summation order (BLAS, threads)
    # moves a logit by a few hundred ulps at most, far below 1e-3
    torch.testing.assert_close(recomputed, stored["chelsea"], rtol=0, atol=1e-3)
    with pytest.raises(ValueError, match="no shipped occlusion maps with a window of 48"):
        evaluation.load_photo_occlusion(48)


def test_shipped_attacks_cover_the_cases_and_one_is_reproduced(lite0_cases):
    model, cases = lite0_cases
    records = evaluation.load_photo_attacks()
    boxed = [c.name for c in cases if c.object_box is not None]
    assert [(r["case"], r["budget"]) for r in records] == [(name, b) for name in boxed for b in evaluation.ATTACK_BUDGETS]
    for r in records:
        assert r["succeeded"] == (r["p_target"] > evaluation.TARGETED_SUCCESS) and r["grey_levels"] <= r["budget"]
        assert all(0 <= r[key] <= 1 for key in ("share_clean", "share_attacked", "share_noise", "share_target"))
    shown = next(c for c in cases if c.name == "chelsea + coffee: Egyptian cat")
    record = next(r for r in records if r["case"] == shown.name and r["budget"] == 2)
    again = evaluation.attack_record(model, shown, 2, "features.8")
    # the steps follow signs of gradients, which another CPU may break differently near 0: compare the outcome
    assert again["succeeded"] == record["succeeded"] and again["target"] == record["target"]
    assert again["y_true_clean"] == pytest.approx(record["y_true_clean"], abs=1e-3)
    assert again["share_clean"] == pytest.approx(record["share_clean"], abs=1e-4)


def test_a_missing_occlusion_file_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    monkeypatch.setattr(data, "MANIFEST", tmp_path / "SHA256SUMS")
    (tmp_path / "SHA256SUMS").write_text("")
    monkeypatch.setattr(evaluation, "OCCLUSION_FILE", tmp_path / "results" / "photo_occlusion.json")
    with pytest.raises(FileNotFoundError, match="python -m gradcam_lite.evaluation"):
        evaluation.load_photo_occlusion()


def test_bad_inputs_are_named():
    model = TwoClassLinear(4)
    x = grey_pixels(4)
    with pytest.raises(ValueError, match="epsilon >= 1/255"):
        evaluation.targeted_pgd(model, x, 1, 0, epsilon=0.5 / 255)
    with pytest.raises(ValueError, match="max_steps >= 0"):
        evaluation.targeted_pgd(model, x, 1, 0, epsilon=1 / 255, max_steps=-1)
    with pytest.raises(ValueError, match="two different classes in 0..1, got 1 and 1"):
        evaluation.targeted_pgd(model, x, 1, 1, epsilon=1 / 255)
    with pytest.raises(ValueError, match="two different classes in 0..1, got 2 and 0"):
        evaluation.targeted_pgd(model, x, 2, 0, epsilon=1 / 255)
    with pytest.raises(ValueError, match="not a preprocessed photo"):
        evaluation.targeted_pgd(model, x + 5, 1, 0, epsilon=1 / 255)
    with pytest.raises(ValueError, match="one image"):
        evaluation.targeted_pgd(model, x.expand(2, -1, -1, -1), 1, 0, epsilon=1 / 255)
    with pytest.raises(ValueError, match=r"\(B, C, H, W\), got shape \(3, 8, 5\)"):
        evaluation.pixel_map(torch.randn(3, 8, 5))
    masks = torch.ones(1, 8, 8, dtype=torch.bool)
    with pytest.raises(TypeError, match="must be boolean"):
        pointing_hits(torch.rand(1, 8, 8), masks.float())
    with pytest.raises(ValueError, match="do not hold instances of one shape"):
        evaluation.instance_shares(torch.rand(1, 64, 64), [next(s for s in shapes.make_scenes(50, 0, shapes.varied_scene) if len({o.shape for o in s.objects}) > 1)])
    with pytest.raises(ValueError, match="one integer group per item"):
        paired_difference(torch.rand(4), torch.rand(4), torch.tensor([0.0, 0.5, 1.0, 1.0]))
    with pytest.raises(ValueError, match="needs a box of its side"):
        shapes.draw_scene(0, np.random.default_rng(0), [("circle", "red", 10)] * 2, [(1, 1, 11, 11)])
    with pytest.raises(ValueError, match="no scenes given"):
        presence.logits(presence.presence_classifier().eval(), [])
    with pytest.raises(ValueError, match="n >= 1"):
        evaluation.baseline_maps(0, 16)


def test_a_constant_cam_is_all_zero_like_grad_cam():
    model = PooledClassifier(2).eval()
    with torch.no_grad():
        model.head.weight.fill_(-1.0)  # with non-negative features every position is negative: ReLU leaves a constant 0
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    assert not evaluation.class_activation_map(model, x, [0, 1]).any()
    assert torch.equal(evaluation.class_activation_map(model, x, [0, 1]), grad_cam(model, x, [0, 1], "features"))
