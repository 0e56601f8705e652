"""Weak localisation by threshold sweeps, the perfect map's ceiling, a pointing game that can fail, removals within a
region, and the intervals and equivalence tests the evaluation notebooks read their figures with."""

import pytest
import torch
from scipy.stats import ttest_1samp

from gradcam_lite.metrics import (box_accuracy, box_from_map, box_hits, cluster_mean, group_ids, iou, logits_after_removal, perfect_map, tile_pointing,
                                  top_fraction_mask)


def blob(size: int, box: tuple[int, int, int, int], inside: float = 1.0, outside: float = 0.0) -> torch.Tensor:
    x0, y0, x1, y1 = box
    saliency = torch.full((size, size), outside)
    saliency[y0:y1, x0:x1] = inside
    return saliency


def test_box_accuracy_at_each_threshold_counted_by_hand():
    # map 1: the object (value 1) on a background of 0.3: at threshold 0.2 the box is the whole image, at 0.5 the object
    # map 2: all zero, no box: a miss at every threshold
    boxes = [(2, 2, 6, 6), (2, 2, 6, 6)]
    maps = torch.stack([blob(16, boxes[0], 1.0, 0.3), torch.zeros(16, 16)])
    accuracy = box_accuracy(maps, boxes, [0.2, 0.5])
    assert iou(box_from_map(maps[0], 0.2), boxes[0]) == pytest.approx(16 / 256)  # the whole image: 16 of 256 pixels
    assert accuracy.tolist() == [0.0, 0.5]
    assert box_accuracy(maps, boxes, [0.5], iou_threshold=0.99).tolist() == [0.5]
    with pytest.raises(ValueError, match="one box each"):
        box_accuracy(maps, boxes[:1], [0.5])


def test_the_perfect_map_of_a_mask_and_its_ceiling():
    mask = torch.zeros(64, 64, dtype=torch.bool)
    mask[10:20, 30:40] = True  # 10 x 10 pixels, not aligned with 8 x 8 cells
    fine = perfect_map(mask, 64)
    torch.testing.assert_close(fine, mask.float(), rtol=0, atol=1e-6)  # at full resolution it is the mask itself
    coarse = perfect_map(mask, 8)
    assert float(coarse.sum()) == pytest.approx(100.0, rel=0.02)  # averaging and bilinear upsampling keep the mass
    box = (30, 10, 40, 20)
    assert iou(box_from_map(fine, 0.5), box) == 1.0
    assert iou(box_from_map(coarse, 0.15), box) < 0.5  # blurred over 8 x 8 cells, the 15 % box overshoots the object
    with pytest.raises(ValueError, match="one boolean mask"):
        perfect_map(mask.float(), 8)


def test_tile_pointing_is_decided_between_the_two_tiles_only():
    own = torch.zeros(1, 8, 8, dtype=torch.bool)
    other = torch.zeros(1, 8, 8, dtype=torch.bool)
    own[0, :, :3], other[0, :, 5:] = True, True  # columns 3 and 4: the seam band, in neither tile
    saliency = torch.zeros(1, 8, 8)
    saliency[0, 2, 4] = 9.0  # the global peak sits on the seam: it does not count
    saliency[0, 1, 1], saliency[0, 6, 6] = 2.0, 1.0
    assert tile_pointing(saliency, own, other).tolist() == [True]
    assert tile_pointing(saliency, other, own).tolist() == [False]
    with pytest.raises(ValueError, match="overlap"):
        tile_pointing(saliency, own, own)


def test_top_fraction_within_a_region_never_leaves_it_and_counts_its_pixels():
    within = torch.zeros(10, 10, dtype=torch.bool)
    within[:, :5] = True  # 50 pixels
    saliency = torch.arange(100.0).reshape(10, 10)  # the right half holds the highest values
    chosen = top_fraction_mask(saliency, 0.2, within)
    assert int(chosen.sum()) == 10 and not bool((chosen & ~within).any())
    expected = torch.zeros(10, 10, dtype=torch.bool)
    expected[8:, :5] = True  # the 10 highest of the left half: its last two rows
    assert torch.equal(chosen, expected)  # a ranking of distinct values: no arithmetic that another CPU could round otherwise
    assert torch.equal(top_fraction_mask(saliency, 0.2), top_fraction_mask(saliency, 0.2, torch.ones(10, 10, dtype=torch.bool)))
    with pytest.raises(ValueError, match="boolean mask of the map's shape"):
        top_fraction_mask(saliency, 0.2, within.float())


def test_box_hits_per_case_average_to_box_accuracy():
    boxes = [(2, 2, 6, 6), (8, 8, 12, 12), (0, 0, 4, 4)]
    maps = torch.stack([blob(16, boxes[0], 1.0, 0.3), blob(16, boxes[0]), torch.zeros(16, 16)])  # right, wrong place, empty
    hits = box_hits(maps, boxes, [0.2, 0.5])
    assert hits.tolist() == [[False, False, False], [True, False, False]]
    torch.testing.assert_close(box_accuracy(maps, boxes, [0.2, 0.5]), hits.float().mean(dim=1))
    with pytest.raises(ValueError, match="iou_threshold must lie in"):
        box_hits(maps, boxes, [0.5], iou_threshold=0.0)


def test_the_equivalence_test_is_two_one_sided_t_tests():
    generator = torch.Generator().manual_seed(3)
    for shift, spread, n in [(0.02, 0.05, 12), (0.08, 0.05, 12), (0.0, 0.2, 6), (-0.05, 0.03, 30)]:
        values = shift + spread * torch.randn(n, generator=generator, dtype=torch.float64)
        summary = cluster_mean(values)
        below = ttest_1samp(values.numpy(), -0.1, alternative="greater").pvalue  # H0: mean <= -0.1
        above = ttest_1samp(values.numpy(), 0.1, alternative="less").pvalue  # H0: mean >= 0.1
        assert summary.equivalent(-0.1, 0.1) == (max(below, above) < 0.05), (shift, spread, n)
    assert cluster_mean(torch.tensor([0.5, 1.5, 1.0])).describe() == "1.00 [-0.24, 2.24], n = 3"  # t(2) = 4.303, SE = 0.289
    with pytest.raises(ValueError, match="low < high"):
        summary.equivalent(0.1, -0.1)
    with pytest.raises(ValueError, match="non-finite at \\[1\\]"):
        cluster_mean(torch.tensor([0.5, float("nan"), 1.0]))


def test_removal_within_a_region_spends_the_fraction_there_only():
    class Sum(torch.nn.Module):  # one logit: the sum of the image's pixels
        def forward(self, x):
            return x.flatten(1).sum(dim=1, keepdim=True)

    x = torch.ones(1, 1, 4, 4)
    within = torch.zeros(4, 4, dtype=torch.bool)
    within[:, :2] = True  # 8 pixels; the top half of 8 is 4
    saliency = torch.arange(16.0).reshape(4, 4)  # highest on the right, outside the region
    after = logits_after_removal(Sum(), x, saliency[None], 0.5, torch.zeros_like(x), within)
    assert float(after[0, 0]) == 12.0  # 4 of 16 pixels removed, all inside the region
    assert float(logits_after_removal(Sum(), x, saliency[None], 0.5, torch.zeros_like(x))[0, 0]) == 8.0  # 8 of 16 anywhere


def test_group_ids_number_equal_keys_alike_in_order_of_first_appearance():
    assert group_ids(["b + a", "b + a", "c", "b + a", "a"]).tolist() == [0, 0, 1, 0, 2]
    values, keys = torch.tensor([1.0, 3.0, 2.0, 6.0]), ["x", "x", "y", "y"]
    by_hand = cluster_mean(torch.tensor([2.0, 4.0]))  # one mean per group: the clustered SE is the SE of the group means
    clustered = cluster_mean(values, group_ids(keys))
    assert clustered.count == 2 and abs(clustered.mean - 3.0) < 1e-12 and abs(clustered.standard_error - by_hand.standard_error) < 1e-12
