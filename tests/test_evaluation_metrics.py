"""Metrics that evaluate explanations: occlusion sensitivity, weak localisation boxes, insertion curves and their areas."""

import pytest
import torch
from captum.attr import Occlusion
from conftest import make_gapnet
from torch import nn

from gradcam_lite.metrics import box_from_map, curve_area, deletion_curve, insertion_curve, iou, occlusion_drops, occlusion_map, occlusion_windows


class PixelSum(nn.Module):
    """y^0 = sum of w * x over one channel's pixels, y^1 = 0: occlusion drops are sums of w * x over the window."""

    def __init__(self, weights: torch.Tensor) -> None:
        super().__init__()
        self.weights = nn.Parameter(weights)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([(x[:, 0] * self.weights).sum(dim=(1, 2)), torch.zeros(len(x), dtype=x.dtype)], dim=1)


def test_occlusion_of_a_linear_score_is_the_mean_of_its_window_sums():
    """Window 2, stride 1 on a 3 x 3 image: four windows; pixel (i, j) averages the sums w * x of the windows over it."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 1, 3, 3, generator=generator, dtype=torch.float64)
    w = torch.rand(3, 3, generator=generator, dtype=torch.float64)
    wx = (w * x[0, 0]).tolist()
    window_sum = {(r, c): sum(wx[i][j] for i in (r, r + 1) for j in (c, c + 1)) for r in (0, 1) for c in (0, 1)}
    expected = torch.zeros(3, 3, dtype=torch.float64)
    for i in range(3):
        for j in range(3):
            covering = [v for (r, c), v in window_sum.items() if r <= i <= r + 1 and c <= j <= c + 1]
            expected[i, j] = sum(covering) / len(covering)
    with torch.no_grad():
        actual = occlusion_map(PixelSum(w).eval(), x, 0, window=2, stride=1)
    torch.testing.assert_close(actual[0], expected, rtol=0, atol=1e-14)
    # the drops themselves, one per window in occlusion_windows' order (row by row)
    drops = occlusion_drops(PixelSum(w).eval(), x, 0, window=2, stride=1)
    torch.testing.assert_close(drops[0], torch.tensor([window_sum[r, c] for r in (0, 1) for c in (0, 1)], dtype=torch.float64), rtol=0, atol=1e-14)


def test_occlusion_windows_cover_every_pixel_with_the_last_one_clipped():
    masks = occlusion_windows(10, 7, window=4, stride=3)
    # rows start at 0, 3, 6 (ceil(6/3) + 1 = 3), columns at 0, 3 (ceil(3/3) + 1 = 2)
    assert masks.shape == (6, 10, 7) and masks.sum(dim=0).min() >= 1
    assert masks[-1].nonzero().min(dim=0).values.tolist() == [6, 3] and masks[-1].sum() == 4 * 4
    clipped = occlusion_windows(9, 9, window=4, stride=3)[-1]  # starts at 6: rows 6-8 only
    assert clipped.sum() == 3 * 3
    for bad, message in (({"window": 0, "stride": 1}, "positive"), ({"window": 12, "stride": 1}, "does not fit"), ({"window": 2, "stride": 3}, "no window covers")):
        with pytest.raises(ValueError, match=message):
            occlusion_windows(10, 10, **bad)


@pytest.mark.parametrize("size, window, stride", [(16, 4, 2), (15, 5, 3)])
def test_occlusion_equals_captums(size, window, stride):
    """Same windows, same baseline, same averaging: captum's Occlusion, one perturbation per forward pass, in float64.

    The two differ only in how many occluded images share a forward pass; each logit of this two-layer net is a sum of
    at most 8 * 9 = 72 products, so the two orders agree within about 72 ulps of the largest logit (Higham's bound),
    and each drop and each average keeps that bound. Captum returns float32 (it casts the summed drops before
    dividing by the counts): two more float32 roundings of the map's values.
    """
    model = make_gapnet(seed=1)
    generator = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, size, size, generator=generator, dtype=torch.float64)
    ours = occlusion_map(model, x, [1, 3], window=window, stride=stride, baseline=0.25, batch_size=7)
    theirs = Occlusion(model).attribute(x, target=[1, 3], sliding_window_shapes=(3, window, window), strides=(3, stride, stride), baselines=0.25)
    assert torch.equal(theirs[:, 0], theirs[:, 2])  # captum spreads each drop over all channels alike
    with torch.no_grad():
        scale = float(model(x).abs().max())
    tolerance = 2 * 72 * torch.finfo(torch.float64).eps * scale + 2 * torch.finfo(torch.float32).eps * float(ours.abs().max())
    assert theirs.dtype == torch.float32 and float((ours - theirs[:, 0].double()).abs().max()) <= tolerance


def test_occlusion_with_a_fill_per_image_equals_captums():
    """Each image hidden by its own fill (a scene's background, say): captum's Occlusion with a baseline per input."""
    model = make_gapnet(seed=1)
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 12, 12, generator=generator, dtype=torch.float64)
    fills = torch.rand(2, 3, 12, 12, generator=generator, dtype=torch.float64)
    ours = occlusion_map(model, x, [1, 3], window=4, stride=4, baseline=fills, batch_size=9)
    theirs = Occlusion(model).attribute(x, target=[1, 3], sliding_window_shapes=(3, 4, 4), strides=(3, 4, 4), baselines=fills)
    with torch.no_grad():
        scale = float(model(x).abs().max())
    # the bound of the test above; each of captum's 9 windows is one forward pass, ours all 9 in one
    tolerance = 2 * 72 * torch.finfo(torch.float64).eps * scale + 2 * torch.finfo(torch.float32).eps * float(ours.abs().max())
    assert float((ours - theirs[:, 0].double()).abs().max()) <= tolerance
    shared = occlusion_map(model, x[:1], 1, window=4, stride=4, baseline=fills[0])
    assert torch.equal(shared[0], occlusion_map(model, x, [1, 3], window=4, stride=4, baseline=fills)[0])
    with pytest.raises(ValueError, match="a baseline per image must have the images' shape"):
        occlusion_map(model, x, [1, 3], window=4, stride=4, baseline=fills[:1])


def test_occlusion_checks_its_input():
    model = make_gapnet()
    x = torch.rand(1, 3, 8, 8, dtype=torch.float64)
    with pytest.raises(ValueError, match="one class per image"):
        occlusion_map(model, x, [[0, 1]], window=2, stride=2)
    with pytest.raises(IndexError, match="out of range"):
        occlusion_map(model, x, 9, window=2, stride=2)
    with pytest.raises(TypeError, match="floating"):
        occlusion_map(model, x.to(torch.uint8), 0, window=2, stride=2)


def test_box_from_map_keeps_the_largest_component_above_the_threshold():
    saliency = torch.zeros(10, 12)
    saliency[1:4, 1:3] = 1.0  # 6 pixels, the peak
    saliency[5:9, 6:11] = 0.2  # 20 pixels above 15 % of the peak: the largest component
    saliency[0, 11] = 0.1  # below the threshold
    assert box_from_map(saliency) == (6, 5, 11, 9)
    assert box_from_map(saliency, threshold=0.5) == (1, 1, 3, 4)
    diagonal = torch.eye(5)  # 8-connected: one component
    assert box_from_map(diagonal) == (0, 0, 5, 5)
    with pytest.raises(ValueError, match="no positive value"):
        box_from_map(torch.zeros(4, 4))


def test_iou_of_hand_made_boxes():
    assert iou((0, 0, 2, 2), (1, 1, 3, 3)) == pytest.approx(1 / 7)
    assert iou((0, 0, 4, 2), (0, 0, 4, 2)) == 1.0 and iou((0, 0, 1, 1), (2, 2, 3, 3)) == 0.0


def test_insertion_of_a_linear_score_adds_the_inserted_pixels():
    """Baseline zero and y^0 = sum w * x: inserting the top pixels of a map gives the sum of w * x over them."""
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(1, 1, 4, 5, generator=generator, dtype=torch.float64)
    w = torch.rand(4, 5, generator=generator, dtype=torch.float64)
    saliency = torch.rand(4, 5, generator=generator, dtype=torch.float64)
    fractions = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    order = saliency.flatten().argsort(descending=True)
    expected = torch.stack([(w * x[0, 0]).flatten()[order[: round(float(f) * 20)]].sum() for f in fractions])
    model = PixelSum(w).eval()
    inserted = insertion_curve(model, x, saliency, 0, fractions, torch.zeros_like(x))
    torch.testing.assert_close(inserted.score, expected, rtol=0, atol=1e-14)
    deleted = deletion_curve(model, x, saliency, 0, fractions, torch.zeros_like(x))
    torch.testing.assert_close(inserted.score + deleted.score, expected[-1].expand(4), rtol=0, atol=1e-14)  # what is inserted is not deleted


def test_curve_area_is_the_trapezoid_rule():
    fractions = torch.tensor([0.0, 0.5, 1.0])
    assert curve_area(fractions, torch.tensor([0.0, 0.5, 1.0])) == pytest.approx(0.5)  # the diagonal
    assert curve_area(torch.tensor([0.0, 0.2, 1.0]), torch.tensor([1.0, 1.0, 0.0])) == pytest.approx(0.2 + 0.4)
    with pytest.raises(ValueError, match="increase"):
        curve_area(torch.tensor([0.0, 1.0, 0.5]), torch.zeros(3))
