r"""The first-order Taylor expansion of a class score in a layer's activations.

Write the network above a layer as :math:`y^c = f(A)`. Near the actual activations,

.. math::

    y^c(A + \Delta A) \approx y^c(A) + \sum_{k,i,j} \frac{\partial y^c}{\partial A^k_{ij}} \, \Delta A^k_{ij}.

Scaling one channel by :math:`1 + \varepsilon` is the change :math:`\Delta A^k = \varepsilon A^k`
(other channels fixed), whose first-order prediction is
:math:`\varepsilon \sum_{ij} g^k_{ij} A^k_{ij}` with :math:`g = \partial y^c / \partial A`.
Grad-CAM's weight :math:`\alpha^c_k = \frac{1}{Z}\sum_{ij} g^k_{ij}` is the *average* slope of
:math:`y^c` along channel :math:`k`: shifting the whole channel by :math:`\delta` changes the score by
:math:`Z \alpha^c_k \delta` to first order (exactly, where :math:`f` is affine in :math:`A`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn


def score_and_gradient(above: nn.Module, activations: Tensor, target: int) -> tuple[Tensor, Tensor]:
    """:math:`y^c` (B,) and :math:`\\partial y^c / \\partial A` (B, C, H, W) for activations A (B, C, H, W)."""
    A = activations.detach().requires_grad_()
    with torch.enable_grad():
        score = above(A)[:, target]
        (gradient,) = torch.autograd.grad(score.sum(), A)
    return score.detach(), gradient


def channel_slopes(above: nn.Module, activations: Tensor, target: int) -> tuple[Tensor, Tensor]:
    r""":math:`y^c` and, per channel, :math:`\sum_{ij} g^k_{ij} A^k_{ij}`: the slope of the score along
    scaling channel k by ``1 + t`` at t = 0, for one image's activations (1, C, H, W) -> (1,), (C,)."""
    score, gradient = score_and_gradient(above, activations, target)
    return score, (gradient[0] * activations[0]).sum(dim=(1, 2))


def central_difference(f: Callable[[Tensor], Tensor], activations: Tensor, index: tuple[int, ...], h: float) -> float:
    """:math:`(f(A + h e) - f(A - h e)) / 2h` for the unit vector :math:`e` at ``index``; ``f`` returns a scalar."""
    step = torch.zeros_like(activations)
    step[index] = h
    with torch.no_grad():
        return float((f(activations + step) - f(activations - step)) / (2 * h))


def scaled_channel_scores(above: nn.Module, activations: Tensor, target: int, channel: int, factors: Sequence[float]) -> Tensor:
    """:math:`y^c` with channel ``channel`` of one image's A (1, C, H, W) scaled by ``1 + t``, for each t in ``factors``."""
    if activations.shape[0] != 1:
        raise ValueError(f"pass the activations of one image (1, C, H, W), got shape {tuple(activations.shape)}")
    scale = torch.ones(len(factors), activations.shape[1], 1, 1, dtype=activations.dtype, device=activations.device)
    scale[:, channel, 0, 0] += torch.as_tensor(factors, dtype=activations.dtype, device=activations.device)
    with torch.no_grad():
        return above(activations * scale)[:, target]


class ChannelEffects(NamedTuple):
    """Per channel k: the true change of :math:`y^c`, its first-order prediction, and Grad-CAM's."""

    actual: Tensor
    first_order: Tensor
    average_slope: Tensor


def channel_effects(
    above: nn.Module, activations: Tensor, target: int, perturbation: Tensor, channels: Sequence[int] | None = None, chunk: int = 64
) -> ChannelEffects:
    r"""Perturb one channel at a time, :math:`A^k \to A^k + \Delta A^k`, and compare three numbers per channel.

    - ``actual``: :math:`f(A + \Delta A^k) - f(A)`, the network's answer;
    - ``first_order``: :math:`\sum_{ij} g^k_{ij} \Delta A^k_{ij}`, the Taylor prediction;
    - ``average_slope``: :math:`\alpha^c_k \sum_{ij} \Delta A^k_{ij}`, the prediction that keeps only
      Grad-CAM's one number per channel. It equals the first-order term when the gradient is the same
      at every position or the perturbation is uniform (:math:`\Delta A^k = \delta`:
      :math:`Z \alpha^c_k \delta`).

    One image's activations and perturbation (1, C, H, W); ``chunk`` channels are evaluated per batch.
    """
    if activations.shape[0] != 1 or perturbation.shape != activations.shape:
        raise ValueError(f"pass one image's activations (1, C, H, W) and a perturbation of the same shape, got {tuple(activations.shape)} and {tuple(perturbation.shape)}")
    channels = list(range(activations.shape[1])) if channels is None else list(channels)
    score, gradient = score_and_gradient(above, activations, target)
    delta, slopes = perturbation[0, channels], gradient[0, channels]
    first_order = (slopes * delta).sum(dim=(1, 2))
    average_slope = slopes.mean(dim=(1, 2)) * delta.sum(dim=(1, 2))
    actual = []
    with torch.no_grad():
        for start in range(0, len(channels), chunk):
            part = torch.arange(start, min(start + chunk, len(channels)))
            batch = activations.repeat(len(part), 1, 1, 1)
            batch[torch.arange(len(part)), [channels[i] for i in part]] += delta[part]
            actual.append(above(batch)[:, target] - score)
    return ChannelEffects(torch.cat(actual), first_order, average_slope)


def channel_scaling(above: nn.Module, activations: Tensor, target: int, eps: float, channels: Sequence[int] | None = None) -> tuple[Tensor, Tensor]:
    """Predicted (first-order) and actual change of :math:`y^c` when each channel in turn is scaled by ``1 + eps``.

    One image's activations (1, C, H, W); returns two tensors of shape (len(channels),).
    """
    effects = channel_effects(above, activations, target, eps * activations, channels)
    return effects.first_order, effects.actual
