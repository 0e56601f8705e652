r"""Scoring maps against ground truth.

The *box share* of a non-negative map :math:`L` is the fraction of its mass inside an object's box
:math:`B`:

.. math::

    \mathrm{share}(L, B) = \frac{\sum_{(i,j) \in B} L_{ij}}{\sum_{i,j} L_{ij}}.

A map spread evenly over the image scores the box's area fraction; a map entirely on the object
scores 1. A pixel belongs to the box when its centre does, after scaling the box from the
image's pixels to the map's. With a pixel mask :math:`M` instead of a box, the *mask share* is the same
fraction over :math:`M`.

The *pointing game* (Zhang et al., *Top-down Neural Attention by Excitation Backprop*, 2016) scores a
hit when the map's maximum lies on the object, within a tolerance of 15 pixels at 224 x 224
(:func:`pointing_tolerance` scales it to other sizes). Its baselines that ignore the objects: the image's
centre point, and a uniformly random point, which hits with probability equal to the tolerant mask's area
fraction. Those that know where the objects are: a pointer at a random object of the scene
(:func:`random_object_hit`), and a detector of the word's or answer's attribute that lights every object
having it (:func:`attribute_detector`). A map has shown that it finds *the* object only when it beats these.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt
from scipy.stats import spearmanr
from scipy.stats import norm as normal_distribution
from scipy.stats import rankdata
from scipy.stats import t as t_distribution
from skimage.measure import label
from torch import Tensor
from torchvision.ops import box_iou
from torchvision.transforms.v2.functional import gaussian_blur

from .checks import check_images, check_model_matches, warn_if_training
from .targets import ClassTargets, class_scores, parse_class_targets

Box = tuple[int, int, int, int]


def box_mask(box: Box, image_size: tuple[int, int], map_size: tuple[int, int]) -> Tensor:
    """Boolean (H, W) mask of the map pixels whose centres fall in ``box`` = (x0, y0, x1, y1).

    ``image_size`` and ``map_size`` are (height, width); the box is in the image's pixels.
    """
    x0, y0, x1, y1 = box
    (image_h, image_w), (map_h, map_w) = image_size, map_size
    if not (0 <= x0 < x1 <= image_w and 0 <= y0 < y1 <= image_h):
        raise ValueError(f"box {box} is not a non-empty box inside an image of height {image_h} and width {image_w}")
    ys = (torch.arange(map_h) + 0.5) * image_h / map_h
    xs = (torch.arange(map_w) + 0.5) * image_w / map_w
    return ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]


def box_share(saliency: Tensor, box: Box, image_size: tuple[int, int]) -> float:
    """Fraction of a non-negative map's (H, W) mass inside ``box``; the box is in pixels of an image of ``image_size``."""
    if saliency.dim() != 2:
        raise ValueError(f"box_share takes one (H, W) map, got shape {tuple(saliency.shape)}")
    if (saliency < 0).any():
        raise ValueError("box_share needs a non-negative map (apply the ReLU first)")
    total = saliency.sum()
    if total == 0:
        raise ValueError("the map is all zero: its share inside a box is undefined")
    mask = box_mask(box, image_size, tuple(saliency.shape))
    return float(saliency[mask.to(saliency.device)].sum() / total)


# --- deletion: remove the top of a map and watch the class score ---------------------------------


def mask_share(saliency: Tensor, mask: Tensor) -> float:
    """The fraction of a non-negative map's mass (H, W) inside a boolean mask of the same size; 0 for an all-zero map."""
    if saliency.shape != mask.shape or mask.dtype != torch.bool:
        raise ValueError(f"mask_share needs a boolean mask of the map's shape {tuple(saliency.shape)}, got {mask.dtype} {tuple(mask.shape)}")
    if bool((saliency < 0).any()):
        raise ValueError("mask_share needs a non-negative map")
    total = float(saliency.sum())
    return float(saliency[mask].sum()) / total if total > 0 else 0.0


def pointing_tolerance(size: int) -> float:
    """The pointing game's tolerance, 15 pixels at 224, scaled to an image of ``size`` pixels."""
    return 15 * size / 224


def tolerant_mask(mask: Tensor, tolerance: float) -> Tensor:
    """The pixels within ``tolerance`` (Euclidean distance) of a boolean mask (H, W)."""
    if not bool(mask.any()):
        raise ValueError("the mask is empty: there is no object to point at")
    distance = distance_transform_edt(~mask.cpu().numpy())
    return torch.from_numpy(distance <= tolerance).to(mask.device)


def pointing_hits(maps: Tensor, near: Tensor) -> Tensor:
    """For maps (N, H, W) and the tolerant masks of their objects (N, H, W, see :func:`tolerant_mask`): does each map's
    maximum (the first, if several) lie in its mask? A constant map points nowhere: a miss."""
    if maps.shape != near.shape or maps.dim() != 3:
        raise ValueError(f"maps {tuple(maps.shape)} and masks {tuple(near.shape)} must both be (N, H, W)")
    if near.dtype != torch.bool:
        raise TypeError(f"the tolerant masks must be boolean, got {near.dtype}")
    flat = maps.flatten(1)
    peak = flat.argmax(dim=1)
    return near.flatten(1).gather(1, peak[:, None])[:, 0] & (flat.amax(dim=1) > flat.amin(dim=1))


def pointing_hit(saliency: Tensor, mask: Tensor, tolerance: float) -> bool:
    """Does the map's maximum (the first, if several) lie within ``tolerance`` pixels of the mask? A constant map points nowhere: a miss."""
    if saliency.shape != mask.shape:
        raise ValueError(f"map {tuple(saliency.shape)} and mask {tuple(mask.shape)} differ in shape")
    return bool(pointing_hits(saliency[None], tolerant_mask(mask, tolerance)[None])[0])


# --- baselines that know where the objects are ---------------------------------------------------


def centroid_pixels(masks: Tensor) -> Tensor:
    """The pixel (row, column) nearest the centroid of each of M masks (M, H, W): where a pointer at the object points."""
    if masks.dim() != 3 or masks.dtype != torch.bool or not bool(masks.flatten(1).any(dim=1).all()):
        raise ValueError(f"centroid_pixels needs non-empty boolean masks (M, H, W), got {masks.dtype} {tuple(masks.shape)}")
    rows, cols = torch.meshgrid(torch.arange(masks.shape[1]), torch.arange(masks.shape[2]), indexing="ij")
    area = masks.flatten(1).sum(dim=1)
    return torch.stack([(masks * rows).flatten(1).sum(dim=1) / area, (masks * cols).flatten(1).sum(dim=1) / area], dim=1).round().long()


def pointer_hit(masks: Tensor, lit: Sequence[int], near: Tensor) -> float:
    """The expected pointing hit of a pointer at the centroid of one of the objects ``lit`` (indices into masks
    (M, H, W)), drawn uniformly: the fraction of their centroids inside ``near`` (H, W), the tolerant mask of the
    object asked about (:func:`tolerant_mask`)."""
    if not lit:
        raise ValueError("the pointer needs at least one object to point at")
    points = centroid_pixels(masks[list(lit)])
    return float(near[points[:, 0], points[:, 1]].float().mean())


def random_object_hit(masks: Tensor, near: Tensor) -> float:
    """The random-object pointer: a pointer at one of the scene's M objects (masks (M, H, W)) drawn uniformly.

    It knows where the objects are, not which one is meant: it always hits in a one-object scene and about
    1 / M of the time among M objects apart. A map that finds *an* object, not the asked one, scores this."""
    return pointer_hit(masks, range(len(masks)), near)


def attribute_detector(masks: Tensor, lit: Sequence[int], target: int, near: Tensor) -> tuple[float, float]:
    """A detector of the word's or answer's attribute: a map lighting the objects ``lit`` (those with the
    attribute) uniformly. Returns its share on object ``target`` (the mask's area over the lit area) and its
    pointing hit, taken as a pointer at one of the lit objects drawn uniformly (its maximum is a plateau).

    It knows what the attribute looks like, not which object is meant: it is perfect when the attribute is
    unique in the scene and splits its mass when another object shares it."""
    if target not in lit:
        raise ValueError(f"the object asked about ({target}) must be among the lit objects {list(lit)}: it has the attribute")
    lit_area = masks[list(lit)].any(dim=0)
    return float((masks[target] & lit_area).sum() / lit_area.sum()), pointer_hit(masks, lit, near)


def object_shares(saliency: Tensor, masks: Tensor) -> Tensor:
    """A non-negative map's (H, W) share on each of M objects' masks (M, H, W); zeros for an all-zero map."""
    return torch.tensor([mask_share(saliency, m) for m in masks])


def object_scores(maps: dict[str, Tensor], masks: Tensor, target: int, lit: Sequence[int]) -> dict[str, float]:
    """How each map (H, W) of ``maps`` localises object ``target`` among a scene's objects (masks (M, H, W)), beside
    every baseline, all with the pointing game's tolerance (:func:`pointing_tolerance`):

    - per map: ``"<name> hit"`` (pointing game), ``"<name> share"`` (mask share), ``"<name> own > others"``
      (its share on the target exceeds its share on every other object);
    - knowing where the objects are: ``"random object hit"`` (:func:`random_object_hit`), ``"detector hit"`` and
      ``"detector share"`` (:func:`attribute_detector`, lighting the objects ``lit``);
    - ignoring them: ``"random point hit"`` (the tolerant mask's area fraction) and ``"uniform share"``.
    """
    near = tolerant_mask(masks[target], pointing_tolerance(masks.shape[-1]))
    others = torch.arange(len(masks)) != target
    scores = {}
    for name, saliency in maps.items():
        shares = object_shares(saliency, masks)
        scores[f"{name} hit"] = float(pointing_hits(saliency[None], near[None])[0])
        scores[f"{name} share"] = float(shares[target])
        scores[f"{name} own > others"] = float(not bool(others.any()) or bool(shares[target] > shares[others].max()))
    detector_share, detector_hit = attribute_detector(masks, lit, target, near)
    return {**scores, "random object hit": random_object_hit(masks, near), "detector hit": detector_hit, "detector share": detector_share,
            "random point hit": float(near.float().mean()), "uniform share": float(masks[target].float().mean())}


def cluster_mean(values: Tensor, groups: Tensor | None = None) -> PairedDifference:
    """The mean of ``values`` (one per item) with its standard error clustered by ``groups`` (:func:`paired_difference`
    against 0): its ``interval()`` is t-based with the number of groups less one degrees of freedom."""
    if values.dim() != 1 or not bool(torch.isfinite(values).all()):
        bad = torch.nonzero(~torch.isfinite(values)).flatten().tolist() if values.dim() == 1 else "-"
        raise ValueError(f"cluster_mean takes finite values, one per item (1-d), got shape {tuple(values.shape)}, non-finite at {bad}")
    return paired_difference(values, torch.zeros_like(values), groups)


def group_ids(keys: Sequence) -> Tensor:
    """One integer per item, the same for items with equal keys (numbered in order of first appearance): the ``groups``
    of :func:`paired_difference` and :func:`cluster_mean` from names, say each case's image."""
    first_seen = {key: n for n, key in enumerate(dict.fromkeys(keys))}
    return torch.tensor([first_seen[key] for key in keys], dtype=torch.long)


def means_by(values: Tensor, keys: Sequence, groups: Tensor) -> dict:
    """For each distinct key, the mean of ``values`` over the items with that key and its standard error clustered by
    ``groups`` (:func:`paired_difference` against 0), in the order the keys first appear."""
    if len(keys) != len(values):
        raise ValueError(f"means_by needs one key per value: {len(keys)} keys, {len(values)} values")
    chosen = {key: torch.tensor([k == key for k in keys]) for key in dict.fromkeys(keys)}
    return {key: paired_difference(values[c], torch.zeros(int(c.sum()), dtype=values.dtype), groups[c]) for key, c in chosen.items()}


def centre_blob(size: int) -> Tensor:
    """A Gaussian blob at the centre of a size x size image (standard deviation size / 6): the centre baseline as a map."""
    centre = (size - 1) / 2
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    return torch.exp(-((rows - centre) ** 2 + (cols - centre) ** 2) / (2 * (size / 6) ** 2))


def localisation_scores(saliency: Tensor, mask: Tensor, resolution: int) -> dict[str, float]:
    """How a map (S, S) localises one object's mask, beside its baselines, for a map computed at ``resolution``.

    Pointing game (with :func:`pointing_tolerance`) for the map, the centre point and a uniformly random
    point (its hit probability); mask share for the map, the :func:`centre_blob` and a uniform map; and,
    as a reference, the share of the mask itself averaged down to ``resolution`` and upsampled like a map.
    """
    size = saliency.shape[-1]
    tolerance = pointing_tolerance(size)
    near = tolerant_mask(mask, tolerance)
    blurred_mask = F.interpolate(F.adaptive_avg_pool2d(mask[None, None].float(), resolution), size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    return {"Grad-CAM hit": pointing_hit(saliency, mask, tolerance), "centre hit": bool(near[size // 2, size // 2]),
            "random hit": float(near.float().mean()), "Grad-CAM share": mask_share(saliency, mask),
            "centre share": mask_share(centre_blob(size), mask), "uniform share": float(mask.float().mean()),
            f"{resolution} x {resolution} reference": mask_share(blurred_mask, mask)}


def top_fraction_mask(saliency: Tensor, fraction: float, within: Tensor | None = None) -> Tensor:
    """Boolean mask (H, W) of the ``round(fraction * n)`` highest pixels of a map (ties by position), among the ``n``
    pixels of ``within`` (a boolean mask, e.g. a composition's photo tiles: its flat padding is then never chosen), or
    among all pixels."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must lie in [0, 1], got {fraction}")
    if within is not None and (within.shape != saliency.shape or within.dtype != torch.bool):
        raise ValueError(f"within must be a boolean mask of the map's shape {tuple(saliency.shape)}, got {within.dtype} {tuple(within.shape)}")
    allowed = torch.ones_like(saliency, dtype=torch.bool) if within is None else within
    count = round(fraction * int(allowed.sum()))
    ranked = torch.where(allowed, saliency, torch.full_like(saliency, -torch.inf)).flatten()
    order = torch.argsort(ranked, descending=True, stable=True)
    mask = torch.zeros(saliency.numel(), dtype=torch.bool, device=saliency.device)
    mask[order[:count]] = True
    return mask.reshape(saliency.shape)


def random_smooth_map(size: tuple[int, int], resolution: int = 7, generator: torch.Generator | None = None) -> Tensor:
    """A control map (H, W): uniform noise on a ``resolution`` x ``resolution`` grid, upsampled bilinearly.

    Its top fraction is a random region as large and as coarse as the top of a Grad-CAM map of that
    resolution, so removing it controls for *how much* and *how blob-like* a removal is, not *where*.
    """
    coarse = torch.rand(1, 1, resolution, resolution, generator=generator)
    return F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)[0, 0]


def blurred(x: Tensor, sigma: float = 10.0) -> Tensor:
    """A Gaussian-blurred copy of images (B, C, H, W); blur commutes with the per-channel normalisation."""
    kernel = 2 * round(3 * sigma) + 1
    return gaussian_blur(x, [kernel, kernel], [sigma, sigma])


def mean_colour(x: Tensor) -> Tensor:
    """Each image replaced by its own mean colour (B, C, H, W)."""
    return x.mean(dim=(2, 3), keepdim=True).expand_as(x)


def remove_region(x: Tensor, mask: Tensor, baseline: Tensor) -> Tensor:
    """Images (B, C, H, W) with the pixels of ``mask`` (H, W) or (B, H, W) taken from ``baseline``."""
    mask = mask if mask.dim() == 3 else mask[None]
    return torch.where(mask[:, None], baseline, x)


@torch.no_grad()
def logits_after_removal(model: torch.nn.Module, x: Tensor, saliency: Tensor, fraction: float, baseline: Tensor,
                         within: Tensor | None = None) -> Tensor:
    """The logits (N, classes) of one image (1, C, H, W) after removing the top ``fraction`` of each of N maps (N, H, W),
    the fraction counted among the pixels of ``within`` when given (see :func:`top_fraction_mask`)."""
    masks = torch.stack([top_fraction_mask(m, fraction, within) for m in saliency])
    return model(remove_region(x.expand(len(masks), -1, -1, -1), masks, baseline.expand(len(masks), -1, -1, -1)))


class DeletionCurve(NamedTuple):
    """The class score :math:`y^c` (the logit Grad-CAM explains) and :math:`p(c)` beside it, one value per fraction."""

    score: Tensor
    probability: Tensor


@torch.no_grad()
def deletion_curve(model: torch.nn.Module, x: Tensor, saliency: Tensor, target: int, fractions: Tensor, baseline: Tensor,
                   within: Tensor | None = None) -> DeletionCurve:
    """:math:`y^c` and :math:`p(c)` after removing the top ``f`` of the map, for each f in ``fractions``: one image (1, C, H, W).

    Grad-CAM explains the logit :math:`y^c`, so that is the effect to read; :math:`p(c)` also moves
    when *other* classes' logits move (a competitor removed raises :math:`p(c)` with :math:`y^c` unchanged).
    With ``within`` (a boolean mask), the fractions count the pixels of ``within`` only (see :func:`top_fraction_mask`).
    """
    masks = torch.stack([top_fraction_mask(saliency, float(f), within) for f in fractions])
    images = remove_region(x.expand(len(masks), -1, -1, -1), masks, baseline.expand(len(masks), -1, -1, -1))
    logits = model(images)
    return DeletionCurve(logits[:, target], logits.softmax(dim=1)[:, target])


def box_coverage(saliency: Tensor, box: Box, image_size: tuple[int, int], threshold: float = 0.5) -> float:
    """Fraction of the box's pixels where a map normalised to [0, 1] reaches ``threshold``: how much of an object the map covers."""
    if saliency.dim() != 2:
        raise ValueError(f"box_coverage takes one (H, W) map, got shape {tuple(saliency.shape)}")
    mask = box_mask(box, image_size, tuple(saliency.shape)).to(saliency.device)
    return float((saliency[mask] >= threshold).float().mean())


def rank_correlation(first: Tensor, second: Tensor) -> float:
    r"""Spearman's rank correlation :math:`\rho` of two maps' pixels (``scipy.stats.spearmanr``).

    :math:`\rho` is Pearson's correlation of the pixels' *ranks*: 1 when the two maps order the pixels
    alike (whatever their scales), 0 when their orders are unrelated, -1 when one reverses the other.

    A constant map (an all-zero Grad-CAM, say) has no order to compare: its correlation is 0.
    """
    if first.shape != second.shape:
        raise ValueError(f"maps of different shapes: {tuple(first.shape)} and {tuple(second.shape)}")
    a, b = first.detach().flatten().cpu().numpy(), second.detach().flatten().cpu().numpy()
    if a.min() == a.max() or b.min() == b.max():
        return 0.0
    return float(spearmanr(a, b).statistic)


class Correlation(NamedTuple):
    rho: float  # Spearman's rank correlation
    low: float  # the interval's ends
    high: float
    count: int  # n, the pairs


def rank_correlation_interval(first: Tensor, second: Tensor, level: float = 0.95) -> Correlation:
    r"""Spearman's :math:`\rho` of paired values, one pair per independent item, with its interval from Fisher's
    transform: :math:`\tanh\big(\operatorname{artanh}\rho \pm z_{(1+\text{level})/2}\,\sigma\big)`,
    :math:`\sigma^2 = (1 + \rho^2/2)/(n - 3)` (Bonett and Wright 2000's variance for the rank correlation).

    Items must be independent (people, trained models); pairs clustered in groups need a clustered interval instead.
    """
    if first.dim() != 1 or first.shape != second.shape:
        raise ValueError(f"rank_correlation_interval takes two 1-d tensors of one length, got {tuple(first.shape)} and {tuple(second.shape)}")
    if len(first) < 4:
        raise ValueError(f"rank_correlation_interval needs at least 4 pairs, got {len(first)}")
    a, b = first.detach().double().cpu().numpy(), second.detach().double().cpu().numpy()
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("rank_correlation_interval takes finite values")
    if a.min() == a.max() or b.min() == b.max():
        raise ValueError("one of the two is constant: it has no order to correlate")
    rho = float(spearmanr(a, b).statistic)
    half = normal_distribution.ppf(0.5 + level / 2) * math.sqrt((1 + rho**2 / 2) / (len(a) - 3))
    centre = math.atanh(min(max(rho, -1 + 1e-12), 1 - 1e-12))
    return Correlation(rho, math.tanh(centre - half), math.tanh(centre + half), len(a))


class RankTrend(NamedTuple):
    rho: float  # the mean over groups of Spearman's rank correlation within each group
    p_value: float  # two-sided, from permutations within the groups
    groups: int


def rank_trend_within_groups(x: Tensor, y: Tensor, groups: Tensor, permutations: int = 20_000, seed: int = 0) -> RankTrend:
    r"""A trend of ``y`` in ``x`` tested when the items come in groups that share something (models trained on the same
    people, say), so that items are not independent: :math:`\bar\rho = \frac1G \sum_g \rho_g`, Spearman's :math:`\rho`
    within each group, and its two-sided p-value under the null that ``y``'s order within every group is random
    (``y`` permuted within each group, ``permutations`` times, seeded): :math:`(1 + \#\{|\bar\rho^*| \ge |\bar\rho|\}) / (1 + \text{permutations})`.
    """
    if not (x.dim() == y.dim() == groups.dim() == 1 and len(x) == len(y) == len(groups)):
        raise ValueError(f"rank_trend_within_groups takes three 1-d tensors of one length, got {tuple(x.shape)}, {tuple(y.shape)}, {tuple(groups.shape)}")
    generator, observed, permuted = torch.Generator().manual_seed(seed), [], []
    for group in torch.unique(groups).tolist():
        members = groups == group
        rx = torch.from_numpy(rankdata(x[members].double().numpy())).double()
        ry = torch.from_numpy(rankdata(y[members].double().numpy())).double()
        if len(rx) < 3 or rx.std() == 0 or ry.std() == 0:
            raise ValueError(f"group {group} needs at least 3 items and neither x nor y constant within it")
        rx, ry = rx - rx.mean(), ry - ry.mean()
        rx, ry = rx / rx.norm(), ry / ry.norm()
        observed.append(float(rx @ ry))
        order = torch.rand(permutations, len(ry), generator=generator).argsort(dim=1)
        permuted.append(ry[order] @ rx)
    rho, null = sum(observed) / len(observed), torch.stack(permuted).mean(dim=0)
    p_value = (1 + int((null.abs() >= abs(rho) - 1e-12).sum())) / (1 + permutations)
    return RankTrend(rho, p_value, len(observed))


class PairedDifference(NamedTuple):
    mean: float  # mean of first - second
    standard_error: float  # its standard error, s / sqrt(n)
    count: int  # n, the pairs or the groups averaged: the standard error has n - 1 degrees of freedom

    def interval(self, level: float = 0.95) -> tuple[float, float]:
        r"""The t-based interval :math:`\bar d \pm t_{n-1} \mathrm{SE}` (``scipy.stats.t``): wider than the normal one when the groups are few."""
        half = t_distribution.ppf(0.5 + level / 2, self.count - 1) * self.standard_error
        return self.mean - half, self.mean + half

    def equivalent(self, low: float, high: float, level: float = 0.95) -> bool:
        r"""The equivalence test (two one-sided t-tests, TOST): is the mean shown to lie inside the margin [``low``, ``high``]
        at ``level``? Both one-sided tests reject at :math:`1 - \text{level}` exactly when the :math:`2\,\text{level} - 1`
        interval (90 % for 95 %) lies inside the margin. Fewer groups make it harder: a wide interval proves nothing."""
        if not low < high:
            raise ValueError(f"an equivalence margin needs low < high, got [{low}, {high}]")
        lower, upper = self.interval(2 * level - 1)
        return low < lower and upper < high

    def describe(self, level: float = 0.95, digits: int = 2) -> str:
        """The mean, its t-based interval at ``level`` and the count of pairs or groups, as text: ``0.36 [0.25, 0.47], n = 7``."""
        lower, upper = self.interval(level)
        return f"{self.mean:.{digits}f} [{lower:.{digits}f}, {upper:.{digits}f}], n = {self.count}"

    @property
    def z(self) -> float:
        """How many standard errors the mean lies from 0 (infinite when every difference is the same non-zero number)."""
        if self.standard_error == 0:
            return math.copysign(math.inf, self.mean) if self.mean else 0.0
        return self.mean / self.standard_error


def paired_difference(first: Tensor, second: Tensor, groups: Tensor | None = None) -> PairedDifference:
    r"""Mean and standard error of the per-item differences :math:`d_i = a_i - b_i` of two measurements on the same items.

    :math:`\bar d = \frac1n \sum_i d_i`, :math:`\mathrm{SE} = s_d / \sqrt n` with :math:`s_d` the sample
    standard deviation (:math:`n - 1` in its denominator): pairing removes the spread between items
    that both measurements share (two models on the same test people, say).

    Items that are not independent (several maps of one image) can be ``groups`` (one integer per item):
    the differences are first averaged within each group, and the mean and its standard error are those
    of the :math:`G` group means (a cluster-level standard error, with :math:`G - 1` degrees of freedom).
    """
    if first.shape != second.shape or first.dim() != 1:
        raise ValueError(f"paired_difference needs two 1-d tensors of one length, got {tuple(first.shape)} and {tuple(second.shape)}")
    d = first.double() - second.double()
    if groups is not None and len(d) > 0:
        if groups.shape != first.shape or groups.is_floating_point() or groups.is_complex():
            raise ValueError(f"groups must give one integer group per item ({len(first)}), got {groups.dtype} of shape {tuple(groups.shape)}")
        d = torch.stack([d[groups == g].mean() for g in torch.unique(groups)])
    if len(d) < 2:
        raise ValueError(f"paired_difference needs at least 2 pairs (or groups) to estimate a standard error, got {len(d)}")
    return PairedDifference(float(d.mean()), float(d.std() / len(d) ** 0.5), len(d))


# --- weak localisation: a box from a map -----------------------------------------------------------


def box_from_map(saliency: Tensor, threshold: float = 0.15) -> Box:
    """The paper's weakly supervised box: threshold the map (H, W) at ``threshold`` times its maximum, keep the
    largest 8-connected component (``skimage.measure.label``), and return its bounding box (x0, y0, x1, y1),
    ends exclusive, in the map's pixels."""
    if saliency.dim() != 2:
        raise ValueError(f"box_from_map takes one (H, W) map, got shape {tuple(saliency.shape)}")
    if not 0 < threshold <= 1:
        raise ValueError(f"threshold is a fraction of the map's maximum in (0, 1], got {threshold}")
    peak = float(saliency.max())
    if peak <= 0:
        raise ValueError("the map has no positive value: there is no region to put a box around")
    return largest_component_box(saliency.cpu().numpy() >= threshold * peak)


def largest_component_box(region: np.ndarray) -> Box:
    """The bounding box (x0, y0, x1, y1), ends exclusive, of the largest 8-connected component of a boolean array (H, W)
    that holds at least one True (the first largest, if several tie)."""
    components = label(region, connectivity=2)
    largest = int(np.argmax(np.bincount(components.ravel())[1:])) + 1
    rows, cols = np.nonzero(components == largest)
    return int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1


def iou(first: Box, second: Box) -> float:
    """Intersection over union of two boxes (x0, y0, x1, y1) (``torchvision.ops.box_iou``)."""
    return float(box_iou(torch.tensor([first], dtype=torch.float64), torch.tensor([second], dtype=torch.float64))[0, 0])


def box_hits(maps: Tensor, boxes: Sequence[Box], thresholds: Sequence[float], iou_threshold: float = 0.5) -> Tensor:
    r"""Per threshold :math:`\tau` and map (N, H, W): does the map's box (:func:`box_from_map` at :math:`\tau` times the map's
    maximum) overlap its object's box with IoU at least ``iou_threshold``? Returns bool (len(thresholds), N). A map with
    no positive value has no box: a miss."""
    if maps.dim() != 3 or len(boxes) != len(maps):
        raise ValueError(f"box_hits takes maps (N, H, W) and one box each, got {tuple(maps.shape)} and {len(boxes)} boxes")
    if not 0 < iou_threshold <= 1:
        raise ValueError(f"iou_threshold must lie in (0, 1], got {iou_threshold}")
    hits = torch.zeros(len(thresholds), len(maps), dtype=torch.bool)
    for n, (saliency, box) in enumerate(zip(maps, boxes)):
        peak = float(saliency.max())
        if peak > 0:  # box_from_map's boxes at every threshold, the map read into numpy once and the IoUs in one call
            values = saliency.cpu().numpy()
            found = [largest_component_box(values >= float(threshold) * peak) for threshold in thresholds]
            hits[:, n] = box_iou(torch.tensor(found, dtype=torch.float64), torch.tensor([box], dtype=torch.float64))[:, 0] >= iou_threshold
    return hits


def box_accuracy(maps: Tensor, boxes: Sequence[Box], thresholds: Sequence[float], iou_threshold: float = 0.5) -> Tensor:
    r"""BoxAcc (Choe et al., *Evaluating Weakly Supervised Object Localization Methods Right*, CVPR 2020) at each threshold
    :math:`\tau` of ``thresholds``: the fraction of maps whose box hits (:func:`box_hits`). Returns (len(thresholds),).
    MaxBoxAcc is its maximum over the thresholds, chosen on the data it is reported on; choosing the threshold on other
    data (validation) and reporting on the rest is the stricter variant.
    """
    return box_hits(maps, boxes, thresholds, iou_threshold).float().mean(dim=1)


def perfect_map(mask: Tensor, resolution: int) -> Tensor:
    """The best map a layer of ``resolution`` x ``resolution`` positions can give for an object's mask (H, W): the mask
    averaged over each position's cell and upsampled bilinearly like a map. Its scores are a coarse map's ceiling."""
    if mask.dim() != 2 or mask.dtype != torch.bool:
        raise ValueError(f"perfect_map takes one boolean mask (H, W), got {mask.dtype} {tuple(mask.shape)}")
    cells = F.adaptive_avg_pool2d(mask[None, None].float(), resolution)
    return F.interpolate(cells, size=tuple(mask.shape), mode="bilinear", align_corners=False)[0, 0]


def tile_pointing(maps: Tensor, own: Tensor, other: Tensor) -> Tensor:
    """The pointing game on two-tile images that a map can lose: is each map's (N, H, W) maximum over the two tiles
    ``own`` and ``other`` (boolean (N, H, W), disjoint; leave a band around the seam out of both) inside its own tile?
    A two-way choice: chance is 1/2 for a map that ignores the tiles' content."""
    if not maps.shape == own.shape == other.shape or maps.dim() != 3:
        raise ValueError(f"maps {tuple(maps.shape)} and tiles {tuple(own.shape)}, {tuple(other.shape)} must all be (N, H, W)")
    if bool((own & other).any()):
        raise ValueError("the two tiles overlap")
    peak_own, peak_other = (torch.where(tile, maps, torch.full_like(maps, -torch.inf)).flatten(1).amax(dim=1) for tile in (own, other))
    return peak_own > peak_other


# --- insertion, and the area under a curve -----------------------------------------------------------


def insertion_curve(model: torch.nn.Module, x: Tensor, saliency: Tensor, target: int, fractions: Tensor, baseline: Tensor,
                    within: Tensor | None = None) -> DeletionCurve:
    """:math:`y^c` and :math:`p(c)` of the baseline with the top ``f`` of the map put back from the image, for each f in ``fractions``.

    The mirror of :func:`deletion_curve` (Petsiuk et al., RISE, 2018): a faithful map makes the score rise early.
    Putting the top of ``x`` into the baseline is deleting it from the baseline with ``x`` as the filling.
    """
    return deletion_curve(model, baseline, saliency, target, fractions, x, within)


def curve_area(fractions: Tensor, values: Tensor) -> float:
    """Area under a curve sampled at increasing ``fractions`` (trapezoid rule, ``torch.trapezoid``)."""
    if fractions.shape != values.shape or fractions.dim() != 1 or len(fractions) < 2:
        raise ValueError(f"curve_area needs two 1-d tensors of one length >= 2, got {tuple(fractions.shape)} and {tuple(values.shape)}")
    if not bool((fractions[1:] > fractions[:-1]).all()):
        raise ValueError("fractions must increase")
    return float(torch.trapezoid(values.double(), fractions.double()))


# --- occlusion sensitivity -----------------------------------------------------------------------------


def occlusion_windows(height: int, width: int, window: int, stride: int) -> Tensor:
    """Boolean masks (N, H, W) of the square windows occlusion slides over an image, in captum's order and places.

    Along each side the windows start at 0, s, 2s, ..., :math:`\\lceil (H - w) / s \\rceil s`: the last
    one is clipped at the border, so every pixel lies under at least one window.
    """
    if window < 1 or stride < 1:
        raise ValueError(f"window and stride must be positive pixel counts, got window={window}, stride={stride}")
    if window > min(height, width):
        raise ValueError(f"a window of {window} px does not fit in a {height} x {width} image")
    if stride > window:
        raise ValueError(f"stride {stride} > window {window} would leave pixels that no window covers")
    rows = [i * stride for i in range(math.ceil((height - window) / stride) + 1)]
    cols = [j * stride for j in range(math.ceil((width - window) / stride) + 1)]
    masks = torch.zeros(len(rows) * len(cols), height, width, dtype=torch.bool)
    for k, (top, left) in enumerate((top, left) for top in rows for left in cols):
        masks[k, top : top + window, left : left + window] = True
    return masks


@torch.no_grad()
def occlusion_drops(model: torch.nn.Module, x: Tensor, target: int | Sequence[int] | Tensor, *, window: int, stride: int,
                    baseline: float | Tensor = 0.0, batch_size: int = 4) -> Tensor:
    r"""The drop of the target's score when each window :math:`p` of :func:`occlusion_windows` is hidden, (B, P):
    :math:`d_p = y^c(x) - y^c(x \text{ with } p \text{ set to the baseline})`, over all channels.

    ``baseline`` is a value, a tensor broadcast to one image (C, H, W), or one fill per image (B, C, H, W), e.g. each
    scene's own background, which hides an object without drawing anything new. ``batch_size`` occluded copies go
    through the model at once. (On 2 CPU cores and the course's EfficientNet-Lite0 at 224 x 224, 4 at once was
    fastest: larger batches ran slower per image.)
    """
    check_images(x)
    check_model_matches(model, x)
    warn_if_training(model)
    targets = parse_class_targets(target, len(x))
    if targets.per_image_k:
        raise ValueError("occlusion takes one class per image (an int or B ints), not a (B, K) table")
    masks = occlusion_windows(x.shape[2], x.shape[3], window, stride).to(x.device)
    fill = torch.as_tensor(baseline, dtype=x.dtype, device=x.device)
    if fill.dim() == 4 and fill.shape != x.shape:
        raise ValueError(f"a baseline per image must have the images' shape {tuple(x.shape)}, got {tuple(fill.shape)}")
    fills = fill if fill.dim() == 4 else fill.expand_as(x[0]).expand_as(x)
    drops = []
    for image, fill, c in zip(x, fills, targets.indices[:, 0].tolist()):
        clean = class_scores(model(image[None]), ClassTargets(torch.tensor([[c]]), False))[0, 0]
        drops.append(torch.cat([clean - model(torch.where(chunk[:, None], fill, image))[:, c] for chunk in masks.split(batch_size)]))
    return torch.stack(drops)


def occlusion_map(model: torch.nn.Module, x: Tensor, target: int | Sequence[int] | Tensor, *, window: int, stride: int,
                  baseline: float | Tensor = 0.0, batch_size: int = 4) -> Tensor:
    r"""Occlusion sensitivity (Zeiler and Fergus, 2014) of the target score, one map (B, H, W) per image.

    A pixel's value is the mean drop (:func:`occlusion_drops`, whose arguments these are) over the windows that cover
    it, :math:`O_{ij} = \sum_p [ij \in p]\, d_p / \sum_p [ij \in p]`: positive where hiding the pixel lowers the score.
    This is ``captum.attr.Occlusion`` with ``sliding_window_shapes=(C, window, window)`` and
    ``strides=(C, stride, stride)``, batched.
    """
    drops = occlusion_drops(model, x, target, window=window, stride=stride, baseline=baseline, batch_size=batch_size)
    return occlusion_from_drops(drops, occlusion_windows(x.shape[2], x.shape[3], window, stride).to(x.device))


def occlusion_from_drops(drops: Tensor, windows: Tensor) -> Tensor:
    r"""The occlusion maps (B, H, W) of drops (B, P) over the windows (P, H, W, bool) they hid:
    :math:`O_{ij} = \sum_p [ij \in p]\, d_p / \sum_p [ij \in p]`."""
    masks = windows.to(drops.dtype)
    return torch.einsum("bp,phw->bhw", drops, masks) / masks.sum(dim=0)
