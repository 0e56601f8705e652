r"""How a class's confidence changes when the image is altered by its map: the Grad-CAM++ paper's Average Drop and
Increase in Confidence, and ROAD.

**Average Drop and Increase in Confidence** (Chattopadhyay et al., WACV 2018, section 5.1). The *explanation
image* multiplies the map into the model's input, :math:`E = L^c \odot I`, with :math:`L^c` scaled to [0, 1].
With :math:`Y_i = p(c \mid I_i)` and :math:`O_i = p(c \mid E_i)` over N images,

.. math::

    \text{Average Drop} = \frac{100}{N} \sum_i \frac{\max(0,\ Y_i - O_i)}{Y_i}, \qquad
    \text{Increase in Confidence} = \frac{100}{N} \sum_i [\,O_i > Y_i\,].

What is multiplied is the model's *input*: for the ImageNet models that is the normalised tensor, so a pixel the
map ignores moves towards the data set's mean colour (0 after normalisation), not towards black; for the shapes
world's models it is the pixel image, and it moves towards black. The two are different perturbations.

**ROAD** (Rong et al., *A Consistent and Efficient Evaluation Strategy for Attribution Methods*, ICML 2022). Remove
a fraction :math:`f` of the pixels, the most relevant first (MoRF) or the least relevant first (LeRF), and fill
them by *noisy linear imputation*: each removed pixel :math:`x_i` is the weighted mean of its eight neighbours
(weights 1/6 for the four sharing a side, 1/12 for the four diagonal ones, renormalised at the border),

.. math::

    \Big(\sum_{n \in N(i)} w_n\Big)\, x_i - \sum_{n \in N(i)\ \text{removed}} w_n\, x_n = \sum_{n \in N(i)\ \text{kept}} w_n\, x_n,

a sparse linear system solved per channel, plus Gaussian noise of standard deviation ``noise``. Filling from
the neighbours leaves no sharp hole whose shape could tell the model where the removed pixels were. Which pixels
are removed follows pytorch-grad-cam's percentile rule: MoRF at :math:`f` removes the pixels with
:math:`L \ge q_{1-f}(L)`, LeRF the pixels with :math:`L \le q_f(L)`, :math:`q` the linearly interpolated quantile;
where values tie we remove the same count, ties ranked at random (:func:`road_mask`), where the rule would take
every tied pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import numpy as np
import torch
from scipy.sparse import coo_matrix
from scipy.sparse.linalg import spsolve
from torch import Tensor

from .checks import check_finite

# (row offset, column offset) -> weight of that neighbour in the linear imputation
NEIGHBOUR_WEIGHTS = {(-1, 0): 1 / 6, (1, 0): 1 / 6, (0, -1): 1 / 6, (0, 1): 1 / 6,
                     (-1, -1): 1 / 12, (-1, 1): 1 / 12, (1, -1): 1 / 12, (1, 1): 1 / 12}


class Confidence(NamedTuple):
    """:math:`Y = p(c \\mid I)` and :math:`O = p(c \\mid E)` per image, and the logits :math:`y^c` beside them."""

    before: Tensor
    after: Tensor
    logit_before: Tensor
    logit_after: Tensor

    @property
    def drop(self) -> Tensor:
        """:math:`\\max(0, Y - O) / Y` per image."""
        return (self.before - self.after).clamp(min=0) / self.before

    @property
    def increased(self) -> Tensor:
        """:math:`O > Y` per image."""
        return self.after > self.before


def check_maps(x: Tensor, maps: Tensor, targets: Sequence[int]) -> None:
    if x.dim() != 4 or maps.shape != (x.shape[0], *x.shape[2:]):
        raise ValueError(f"maps must be (N, H, W) for images (N, C, H, W): got images {tuple(x.shape)} and maps {tuple(maps.shape)}")
    if len(targets) != len(x):
        raise ValueError(f"{len(targets)} targets for {len(x)} images: give one class per image")
    check_finite(maps, "the maps")


@torch.no_grad()
def explanation_confidence(model: torch.nn.Module, x: Tensor, maps: Tensor, targets: Sequence[int]) -> Confidence:
    """:math:`p(c)` and :math:`y^c` of each image (N, C, H, W) and of its explanation image :math:`E = L^c \\odot I`,
    the maps (N, H, W) at the input's size with values in [0, 1] (normalise a map by its maximum first)."""
    check_maps(x, maps, targets)
    if float(maps.min()) < 0 or float(maps.max()) > 1:
        raise ValueError(f"the maps must lie in [0, 1] (divide each by its maximum): they span [{float(maps.min()):.3g}, {float(maps.max()):.3g}]")
    rows = torch.arange(len(x))
    logits = model(torch.cat([x, x * maps[:, None]]))
    probabilities = logits.softmax(dim=1)
    chosen = torch.as_tensor(list(targets))
    before, after = probabilities[: len(x)][rows, chosen], probabilities[len(x):][rows, chosen]
    return Confidence(before, after, logits[: len(x)][rows, chosen], logits[len(x):][rows, chosen])


def average_drop(model: torch.nn.Module, x: Tensor, maps: Tensor, targets: Sequence[int]) -> float:
    """The Grad-CAM++ paper's Average Drop, in percent (lower is better)."""
    return 100 * float(explanation_confidence(model, x, maps, targets).drop.mean())


def increase_in_confidence(model: torch.nn.Module, x: Tensor, maps: Tensor, targets: Sequence[int]) -> float:
    """The Grad-CAM++ paper's Increase in Confidence, in percent (higher is better)."""
    return 100 * float(explanation_confidence(model, x, maps, targets).increased.float().mean())


def linear_imputation(image: Tensor, removed: Tensor, noise: float = 0.0, generator: torch.Generator | None = None) -> Tensor:
    """An image (C, H, W) with the pixels of ``removed`` (H, W, bool) filled by (noisy) linear imputation from their
    neighbours (see the module's docstring); the kept pixels are returned unchanged."""
    if image.dim() != 3 or removed.shape != image.shape[1:] or removed.dtype != torch.bool:
        raise ValueError(f"expected an image (C, H, W) and a boolean mask (H, W): got {tuple(image.shape)} and {tuple(removed.shape)} {removed.dtype}")
    height, width = removed.shape
    gone = removed.numpy().ravel()
    unknown = np.flatnonzero(gone)
    if len(unknown) == 0:
        return image.clone()
    if len(unknown) == gone.size:
        raise ValueError("every pixel is removed: there is nothing to impute from")
    variable = np.full(gone.size, -1)
    variable[unknown] = np.arange(len(unknown))
    values = image.reshape(image.shape[0], -1).double().numpy()
    rows, columns = np.divmod(unknown, width)
    diagonal = np.zeros(len(unknown))
    right_side = np.zeros((len(unknown), image.shape[0]))
    entries, entry_rows, entry_columns = [], [], []
    for (dr, dc), weight in NEIGHBOUR_WEIGHTS.items():
        r, c = rows + dr, columns + dc
        inside = (r >= 0) & (r < height) & (c >= 0) & (c < width)
        neighbour = np.where(inside, r * width + c, 0)
        diagonal += weight * inside
        known = inside & ~gone[neighbour]
        right_side[known] += weight * values[:, neighbour[known]].T
        missing = inside & gone[neighbour]
        entry_rows.append(np.flatnonzero(missing))
        entry_columns.append(variable[neighbour[missing]])
        entries.append(np.full(int(missing.sum()), -weight))
    system = coo_matrix((np.concatenate([diagonal, *entries]),
                         (np.concatenate([np.arange(len(unknown)), *entry_rows]), np.concatenate([np.arange(len(unknown)), *entry_columns]))),
                        shape=(len(unknown), len(unknown))).tocsc()
    solved = torch.from_numpy(np.asarray(spsolve(system, right_side)).reshape(len(unknown), -1).T).to(image.dtype)
    if noise:
        solved = solved + noise * torch.randn(solved.shape, generator=generator, dtype=image.dtype)
    filled = image.reshape(image.shape[0], -1).clone()
    filled[:, torch.from_numpy(unknown)] = solved
    return filled.reshape(image.shape)


def road_mask(saliency: Tensor, fraction: float, order: Literal["most", "least"], generator: torch.Generator | None = None,
              within: Tensor | None = None) -> Tensor:
    """The pixels (H, W, bool) that ROAD removes at ``fraction``, as many as pytorch-grad-cam's percentile rule removes
    from a map without ties: the most relevant first, the :math:`N - \lceil (N - 1)(1 - f) \rceil` largest values
    (those with :math:`L \ge q_{1-f}(L)`), or the least relevant first, the :math:`\lfloor (N - 1) f \rfloor + 1` smallest
    (:math:`L \le q_f(L)`). Tied values are ranked in a random order drawn from ``generator``, so that a flat map
    (a constant one, or one that is 0 over half the image) still loses the stated count and never all of its pixels.

    With ``within`` (H, W, bool), only its :math:`N` pixels are ranked and removed: a composition's photo tiles, say,
    whose flat padding would otherwise be "removed" first by LeRF at no cost to the score."""
    if not 0 < fraction < 1:
        raise ValueError(f"the fraction removed must lie strictly between 0 and 1, got {fraction}")
    if order not in ("most", "least"):
        raise ValueError(f"order must be 'most' or 'least', got {order!r}")
    if within is not None and (within.shape != saliency.shape or within.dtype != torch.bool or not within.any()):
        raise ValueError(f"within must be a non-empty boolean mask of the map's shape {tuple(saliency.shape)}, got {within.dtype} {tuple(within.shape)}")
    candidates = torch.arange(saliency.numel()) if within is None else within.flatten().nonzero()[:, 0]
    values = saliency.flatten()[candidates]
    count = len(values)
    shuffled = torch.randperm(count, generator=generator)
    ascending = shuffled[torch.argsort(values[shuffled], stable=True)]  # ties in a random order
    if order == "most":
        chosen = ascending[math.ceil((count - 1) * (1 - fraction)):]
    else:
        chosen = ascending[: math.floor((count - 1) * fraction) + 1]
    removed = torch.zeros(saliency.numel(), dtype=torch.bool)
    removed[candidates[chosen]] = True
    return removed.reshape(saliency.shape)


class RoadCurve(NamedTuple):
    """:math:`y^c` and :math:`p(c)` after each removal, (N images, F fractions)."""

    score: Tensor
    probability: Tensor


@torch.no_grad()
def road(model: torch.nn.Module, x: Tensor, maps: Tensor, targets: Sequence[int], fractions: Sequence[float],
         order: Literal["most", "least"], noise: float = 0.01, generator: torch.Generator | None = None,
         within: Tensor | None = None) -> RoadCurve:
    """ROAD: for each image (N, C, H, W) and fraction, remove the pixels of :func:`road_mask`, fill them by
    :func:`linear_imputation`, and read the target's logit :math:`y^c` and :math:`p(c)`; ``generator`` draws the ties' order
    and the imputation's noise; ``within`` (N, H, W, bool), if given, the pixels each image's fractions count. MoRF
    (``order="most"``): a faithful map makes the score fall fast; LeRF (``"least"``): slowly."""
    check_maps(x, maps, targets)
    if within is not None and within.shape != maps.shape:
        raise ValueError(f"within must be (N, H, W) like the maps {tuple(maps.shape)}, got {tuple(within.shape)}")
    regions = [None] * len(x) if within is None else within
    images = torch.stack([linear_imputation(image, road_mask(saliency, f, order, generator, region), noise, generator)
                          for image, saliency, region in zip(x, maps, regions) for f in fractions])
    logits = model(images).reshape(len(x), len(fractions), -1)
    chosen = torch.as_tensor(list(targets))[:, None, None].expand(-1, len(fractions), 1)
    return RoadCurve(logits.gather(2, chosen)[..., 0], logits.softmax(dim=2).gather(2, chosen)[..., 0])
