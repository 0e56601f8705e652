import numpy as np
import pytest
import torch
from matplotlib import colormaps
from scipy.stats import bootstrap, spearmanr

from gradcam_lite.metrics import box_coverage, box_mask, box_share, rank_correlation, rank_correlation_interval, rank_trend_within_groups
from gradcam_lite.plotting import DEFAULT_CMAP, gradient_image, overlay, plot_maps, show_signed


def test_uniform_map_share_is_box_area_fraction():
    share = box_share(torch.ones(224, 224), (0, 150, 300, 450), image_size=(600, 600))
    assert share == pytest.approx(300 * 300 / 600**2, abs=0.01)


def test_map_inside_box_has_share_one_and_outside_zero():
    saliency = torch.zeros(10, 20)
    saliency[2:5, 4:8] = 1.0
    assert box_share(saliency, (8, 4, 16, 10), image_size=(20, 40)) == 1.0
    assert box_share(saliency, (20, 0, 40, 20), image_size=(20, 40)) == 0.0


def test_box_mask_scales_box_to_map():
    mask = box_mask((0, 0, 50, 100), image_size=(100, 100), map_size=(4, 4))
    assert mask.tolist() == [[True, True, False, False]] * 4


def test_box_share_errors():
    with pytest.raises(ValueError, match="all zero"):
        box_share(torch.zeros(4, 4), (0, 0, 2, 2), (4, 4))
    with pytest.raises(ValueError, match="non-negative"):
        box_share(-torch.ones(4, 4), (0, 0, 2, 2), (4, 4))
    with pytest.raises(ValueError, match="inside an image"):
        box_share(torch.ones(4, 4), (0, 0, 5, 2), (4, 4))


def test_overlay_blends_image_and_colormap():
    image = np.full((8, 6, 3), 0.25)
    saliency = torch.linspace(0, 1, 8 * 6).reshape(8, 6)
    np.testing.assert_allclose(overlay(image, saliency, alpha=0.0), image)
    for cmap in (DEFAULT_CMAP, "jet"):
        heat = colormaps[cmap](saliency.numpy())[..., :3]
        np.testing.assert_allclose(overlay(image, saliency, alpha=1.0, cmap=cmap), heat, atol=1e-6)
        np.testing.assert_allclose(overlay(image, saliency, alpha=0.5, cmap=cmap), 0.5 * image + 0.5 * heat, atol=1e-6)
    assert DEFAULT_CMAP != "jet"
    with pytest.raises(ValueError, match="alpha"):
        overlay(image, saliency, alpha=2)


def test_plot_maps_grid():
    image = np.zeros((16, 16, 3))
    fig = plot_maps(image, torch.rand(5, 4, 4), titles=list("abcde"), ncols=3)
    *panels, colorbar = fig.get_axes()
    assert len(panels) == 6 and [a.get_title() for a in panels[:5]] == list("abcde") and not panels[5].images
    assert colorbar.get_ylim() == (0.0, 1.0)
    assert len(plot_maps(image, torch.rand(5, 4, 4), ncols=3, colorbar=False).get_axes()) == 6
    with pytest.raises(ValueError, match="2 images for 5 maps"):
        plot_maps([image, image], torch.rand(5, 4, 4))


def test_signed_map_is_centred_at_zero_on_one_scale_for_both_signs():
    import matplotlib.pyplot as plt

    signed = torch.tensor([[-1.0, 0.0], [2.0, 4.0]])
    fig, ax = plt.subplots()
    show_signed(ax, np.zeros((2, 2, 3)), signed)
    norm = ax.images[1].norm  # one scale for both signs: -1 is a quarter as deep a blue as 4 is a red
    assert (norm.vmin, norm.vmax) == (-4.0, 4.0)
    assert float(norm(0.0)) == 0.5 and float(norm(-1.0)) == 0.375 and float(norm(4.0)) == 1.0
    plt.close(fig)
    with pytest.raises(ValueError, match="one \\(H, W\\) map"):
        show_signed(ax, np.zeros((2, 2, 3)), signed[None])


def test_box_coverage_counts_box_pixels_above_threshold():
    saliency = torch.zeros(10, 10)
    saliency[0:5, 0:5] = 0.8  # the box (0, 0, 10, 10) in a 20 x 20 image is the map's top-left quarter
    saliency[0:5, 0:2] = 0.2
    assert box_coverage(saliency, (0, 0, 10, 10), image_size=(20, 20)) == pytest.approx(15 / 25)
    assert box_coverage(torch.zeros(10, 10), (0, 0, 10, 10), image_size=(20, 20)) == 0.0


def test_gradient_image_is_grey_at_zero_and_scaled_by_percentile():
    g = torch.zeros(3, 10, 10)
    g[0, :, :] = torch.linspace(-1, 1, 100).reshape(10, 10)
    picture = gradient_image(g, percentile=100)
    assert picture.shape == (10, 10, 3)
    np.testing.assert_allclose(picture[..., 1], 0.5)
    np.testing.assert_allclose(picture[..., 0], 0.5 + g[0].numpy() / 2, atol=1e-6)
    np.testing.assert_allclose(gradient_image(torch.zeros(3, 4, 4)), 0.5)


def test_rank_correlation_interval_agrees_with_a_bootstrap_and_names_bad_input():
    """On 400 pairs with a true correlation near 0.5, the Fisher-transform interval's ends lie within 0.03 of scipy's
    bootstrap percentile interval (2000 resamples: Monte Carlo error about 0.01); rho is the closed-form Spearman of untied ranks."""
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(400, generator=generator, dtype=torch.float64)
    y = 0.6 * x + 0.8 * torch.randn(400, generator=generator, dtype=torch.float64)
    result = rank_correlation_interval(x, y)
    rx, ry = x.argsort().argsort().double(), y.argsort().argsort().double()
    assert result.rho == pytest.approx(1 - 6 * float(((rx - ry) ** 2).sum()) / (400 * (400**2 - 1)), abs=1e-12)
    boot = bootstrap((x.numpy(), y.numpy()), lambda a, b: spearmanr(a, b).statistic, paired=True, vectorized=False,
                     n_resamples=2000, method="percentile", rng=np.random.default_rng(0)).confidence_interval
    assert result.low < result.rho < result.high and result.count == 400
    assert abs(result.low - boot.low) < 0.03 and abs(result.high - boot.high) < 0.03
    assert rank_correlation_interval(x, -x).rho == pytest.approx(-1.0)
    with pytest.raises(ValueError, match="at least 4 pairs"):
        rank_correlation_interval(x[:3], y[:3])
    with pytest.raises(ValueError, match="constant"):
        rank_correlation_interval(torch.ones(10), y[:10])
    with pytest.raises(ValueError, match="one length"):
        rank_correlation_interval(x, y[:5])
    with pytest.raises(ValueError, match="finite"):
        rank_correlation_interval(torch.tensor([1.0, float("nan"), 2.0, 3.0]), torch.arange(4.0))


def test_rank_trend_within_groups_against_exact_enumeration():
    """Two groups of four: the permutation p-value is within Monte Carlo error (3 SE) of the exact one, found by
    enumerating all 24 x 24 orders of y within the groups; a perfect trend in both gives mean rho 1."""
    import itertools

    x = torch.tensor([1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0])
    y = torch.tensor([0.1, 0.3, 0.2, 0.9, 2.0, 1.0, 3.0, 4.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    result = rank_trend_within_groups(x, y, groups, permutations=20_000)
    within = [spearmanr(x[:4], p).statistic for p in itertools.permutations([1, 2, 3, 4])]
    observed = (spearmanr(x[:4], y[:4]).statistic + spearmanr(x[4:], y[4:]).statistic) / 2
    exact = np.mean([abs((a + b) / 2) >= abs(observed) - 1e-12 for a in within for b in within])
    assert result.rho == pytest.approx(observed, abs=1e-12) and result.groups == 2
    assert abs(result.p_value - exact) < 3 * np.sqrt(exact * (1 - exact) / 20_000)
    assert rank_trend_within_groups(x, x, groups).rho == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least 3 items"):
        rank_trend_within_groups(x[:5], y[:5], groups[:5])
    with pytest.raises(ValueError, match="one length"):
        rank_trend_within_groups(x, y[:5], groups)


def test_rank_correlation_closed_forms():
    a = torch.tensor([[0.1, 0.5], [0.3, 2.0]])
    assert rank_correlation(a, a.exp()) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    # ranks (1, 3, 2, 4) vs (1, 2, 3, 4): rho = 1 - 6 * sum d^2 / (n (n^2 - 1)) = 1 - 6 * 2 / 60
    assert rank_correlation(a, torch.tensor([[1.0, 2.0], [3.0, 4.0]])) == pytest.approx(0.8)
    assert rank_correlation(torch.zeros(2, 2), a) == 0.0
    with pytest.raises(ValueError, match="different shapes"):
        rank_correlation(a, torch.zeros(3))


def test_mask_share_and_pointing_game_by_hand():
    from gradcam_lite.metrics import mask_share, pointing_hit, pointing_tolerance, tolerant_mask

    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[2:4, 2:4] = True
    saliency = torch.zeros(10, 10)
    saliency[2, 2], saliency[8, 8] = 3.0, 1.0
    assert mask_share(saliency, mask) == 0.75 and mask_share(torch.zeros(10, 10), mask) == 0.0
    assert pointing_hit(saliency, mask, tolerance=0)
    far = torch.zeros(10, 10)
    far[6, 3] = 1.0  # 3 rows below the mask's last row
    assert not pointing_hit(far, mask, tolerance=2.9) and pointing_hit(far, mask, tolerance=3.0)
    assert not pointing_hit(torch.ones(10, 10), mask, tolerance=5)  # a constant map points nowhere
    assert pointing_tolerance(224) == 15 and pointing_tolerance(64) == pytest.approx(15 * 64 / 224)
    # within distance 1 of a 2 x 2 square: the square and its 4 x 2 edge neighbours (corners are sqrt(2) away)
    assert int(tolerant_mask(mask, 1.0).sum()) == 4 + 8
    with pytest.raises(ValueError, match="boolean mask"):
        mask_share(saliency, mask.float())
    with pytest.raises(ValueError, match="empty"):
        tolerant_mask(torch.zeros(3, 3, dtype=torch.bool), 1.0)


def test_localisation_scores_against_hand_computed_baselines():
    from gradcam_lite.metrics import localisation_scores

    mask = torch.zeros(16, 16, dtype=torch.bool)
    mask[0:4, 0:4] = True  # a corner object, 4 x 4 of a 16 x 16 image
    saliency = torch.zeros(16, 16)
    saliency[1, 1] = 1.0
    scores = localisation_scores(saliency, mask, resolution=4)
    assert scores["Grad-CAM hit"] and scores["Grad-CAM share"] == 1.0
    assert scores["uniform share"] == 16 / 256
    assert not scores["centre hit"]  # the centre (8, 8) is 4 * sqrt(2) > 15 * 16 / 224 px from the object
    # within ~1.07 px of the 4 x 4 square: the square and its 4 x 4 edge neighbours (corners are sqrt(2) away)
    assert scores["random hit"] == (16 + 4 + 4) / 256
    # one 4 x 4 cell of a 4 x 4 grid, upsampled bilinearly back to 16 x 16: the cell keeps a share between 1/4 and 1
    assert 0.25 < scores["4 x 4 reference"] < 1.0
