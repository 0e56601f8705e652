"""Baselines that know where the objects are, on hand-made scenes whose answers are counted by hand."""

import math

import pytest
import torch
from scipy import stats

from gradcam_lite.metrics import (attribute_detector, centroid_pixels, means_by, object_scores, paired_difference, pointer_hit, random_object_hit,
                                  tolerant_mask)


def square(top: int, left: int, side: int, size: int = 64) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[top:top + side, left:left + side] = True
    return mask


# three objects far apart (their tolerant masks, 4.3 px at 64, do not reach each other's centroids), and a fourth
# that touches the first
SCENE = torch.stack([square(10, 5, 10), square(10, 30, 10), square(40, 45, 12)])
NEAR = [tolerant_mask(m, 15 * 64 / 224) for m in SCENE]


def test_centroids_are_the_squares_centres():
    assert centroid_pixels(SCENE).tolist() == [[14, 10], [14, 34], [46, 50]]  # 14.5 rounds to even, 10 + 4.5 likewise
    with pytest.raises(ValueError, match="non-empty boolean masks"):
        centroid_pixels(torch.zeros(1, 8, 8, dtype=torch.bool))


def test_a_pointer_at_a_random_object_hits_one_time_in_m():
    assert random_object_hit(SCENE, NEAR[1]) == pytest.approx(1 / 3)
    assert random_object_hit(SCENE[:1], NEAR[0]) == 1.0  # one object: always
    touching = torch.stack([SCENE[0], square(10, 15, 8)])  # its centroid, column 18, lies 4 px from the first square
    assert random_object_hit(touching, tolerant_mask(touching[0], 15 * 64 / 224)) == 1.0
    with pytest.raises(ValueError, match="at least one object"):
        pointer_hit(SCENE, [], NEAR[0])


def test_an_attribute_detector_is_perfect_on_a_unique_attribute_and_splits_a_shared_one():
    assert attribute_detector(SCENE, [1], 1, NEAR[1]) == (1.0, 1.0)
    share, hit = attribute_detector(SCENE, [1, 2], 1, NEAR[1])
    assert share == pytest.approx(100 / (100 + 144)) and hit == 0.5  # lit area 100 + 144 pixels, two pointers
    with pytest.raises(ValueError, match="must be among the lit objects"):
        attribute_detector(SCENE, [0, 2], 1, NEAR[1])


def test_object_scores_of_maps_placed_by_hand():
    on_target = SCENE[1].float()
    split = SCENE[1].float() + 2 * SCENE[2].float()  # more mass, and the peak, on the other object
    scores = object_scores({"on": on_target, "split": split}, SCENE, target=1, lit=[1, 2])
    assert scores["on hit"] == 1.0 and scores["on share"] == 1.0 and scores["on own > others"] == 1.0
    assert scores["split hit"] == 0.0 and scores["split share"] == pytest.approx(100 / (100 + 288)) and scores["split own > others"] == 0.0
    assert scores["random object hit"] == pytest.approx(1 / 3) and scores["detector hit"] == 0.5
    assert scores["uniform share"] == pytest.approx(100 / 64**2)
    assert scores["random point hit"] == pytest.approx(float(NEAR[1].float().mean()))
    zero = object_scores({"zero": torch.zeros(64, 64)}, SCENE, target=1, lit=[1])
    assert zero["zero hit"] == 0.0 and zero["zero own > others"] == 0.0  # an empty map points nowhere


def test_means_by_clusters_by_scene_and_its_interval_is_t_based():
    values = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 0.0, 0.0])
    keys = ["a", "a", "b", "a", "b", "a", "b", "a"]
    scenes = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3])
    result = means_by(values, keys, scenes)
    assert list(result) == ["a", "b"]
    # "a": scene means 0.5, 1.0, 1.0, 0.0 (one item each in scenes 1 to 3)
    scene_means = torch.tensor([0.5, 1.0, 1.0, 0.0], dtype=torch.float64)
    assert result["a"].mean == pytest.approx(float(scene_means.mean())) and result["a"].count == 4
    assert result["a"].standard_error == pytest.approx(float(scene_means.std() / 2))
    low, high = result["a"].interval(0.95)
    assert high - result["a"].mean == pytest.approx(stats.t.ppf(0.975, 3) * result["a"].standard_error)
    assert result["b"].count == 3 and result["b"].mean == pytest.approx(1 / 3)


def test_the_t_interval_is_wider_than_the_normal_one_and_converges_to_it():
    few = paired_difference(torch.tensor([0.1, 0.5, 0.3]), torch.zeros(3))
    assert few.interval()[1] - few.mean == pytest.approx(stats.t.ppf(0.975, 2) * few.standard_error)
    assert stats.t.ppf(0.975, 2) > 4 > 1.96
    many = paired_difference(torch.randn(10_000, generator=torch.Generator().manual_seed(0)), torch.zeros(10_000))
    assert math.isclose(many.interval()[1] - many.mean, 1.96 * many.standard_error, rel_tol=1e-3)
