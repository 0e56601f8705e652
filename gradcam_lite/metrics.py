r"""Scoring maps against ground truth.

The *box share* of a non-negative map :math:`L` is the fraction of its mass inside an object's box
:math:`B`:

.. math::

    \mathrm{share}(L, B) = \frac{\sum_{(i,j) \in B} L_{ij}}{\sum_{i,j} L_{ij}}.

A map spread evenly over the image scores the box's area fraction; a map entirely on the object
scores 1. A pixel belongs to the box when its centre does, after scaling the box from the
image's pixels to the map's.
"""

from __future__ import annotations

import torch
from torch import Tensor

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
