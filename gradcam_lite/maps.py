r"""Class activation maps: Grad-CAM and CAM, from channel weights to a heat map.

Given a layer's activations :math:`A \in \mathbb{R}^{C \times H \times W}` and channel weights
:math:`\alpha^c` (see :mod:`gradcam_lite.weights`), the signed map is the weighted sum of the
feature maps, and Grad-CAM keeps its positive part (Selvaraju et al. 2017, eq. 2):

.. math::

    S^c = \sum_k \alpha^c_k A^k, \qquad L^c_{\text{Grad-CAM}} = \mathrm{ReLU}(S^c).

The *counterfactual* map negates the gradients, hence the weights:
:math:`L^c_{\text{cf}} = \mathrm{ReLU}(-S^c)`, the places whose evidence speaks against :math:`c`.
For display the map is upsampled bilinearly to the input's size and min-max normalised to
[0, 1]; an all-zero map stays zero.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .capture import capture
from .targets import Target, callable_scores, check_range, class_scores, parse_class_targets
from .weights import grad_cam_weights

Size = Literal["input"] | tuple[int, int] | None


def weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    r""":math:`S = \sum_k \alpha_k A^k`: weights (B, K, C) and activations (B, C, H, W) -> maps (B, K, H, W)."""
    return torch.einsum("bkc,bchw->bkhw", weights, activations)


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize (align_corners=False) of maps (..., H, W) to ``size``."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*lead, *size)


def normalize_maps(maps: Tensor) -> Tensor:
    """Min-max normalise each map (..., H, W) to [0, 1]; a constant map becomes all zeros, never NaN."""
    flat = maps.flatten(-2)
    low = flat.amin(dim=-1, keepdim=True)
    span = flat.amax(dim=-1, keepdim=True) - low
    scaled = torch.where(span > 0, (flat - low) / span.where(span > 0, torch.ones_like(span)), torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


def finish_maps(signed: Tensor, *, counterfactual: bool, relu: bool, size: Size, input_size: tuple[int, int], normalize: bool) -> Tensor:
    """Signed maps -> (counterfactual) -> ReLU -> resize -> normalise, each step optional."""
    maps = -signed if counterfactual else signed
    if relu:
        maps = maps.clamp(min=0)
    if size is not None:
        if size == "input":
            size = input_size
        elif not (isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
            raise ValueError(f"size must be 'input', None or a (height, width) pair of positive ints, got {size!r}")
        maps = upsample(maps, tuple(size))
    return normalize_maps(maps) if normalize else maps


def check_images(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor of images (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch of images (B, C, H, W), got shape {tuple(x.shape)}")


def warn_if_training(model: nn.Module) -> None:
    stochastic = (nn.modules.batchnorm._BatchNorm, nn.Dropout)
    if model.training and any(isinstance(m, stochastic) for m in model.modules()):
        warnings.warn(
            "model is in training mode: BatchNorm and Dropout make maps depend on the batch and on chance; call model.eval()",
            stacklevel=3,
        )


def layer_gradients(model: nn.Module, x: Tensor, target: Target, layer: nn.Module | str) -> tuple[Tensor, Tensor, bool]:
    """One forward pass; activations A (B, C, h, w), gradients dy/dA (B, K, C, h, w), and whether K was asked for.

    Gradients are taken with ``torch.autograd.grad`` down to the layer only. The K scores of a
    (B, K) target share the forward pass; each needs its own (small) backward through the layers
    above. Summing a score over the batch is exact because, in eval mode, image b's score depends on
    image b alone.
    """
    check_images(x)
    warn_if_training(model)
    batch_size = x.shape[0]
    parsed = None if callable(target) and not isinstance(target, Tensor) else parse_class_targets(target, batch_size)
    with capture(model, layer, stop_gradient=True) as cap, torch.enable_grad():
        output = model(x)
        activations = cap.require_activations()
        scores = callable_scores(target, output, batch_size) if parsed is None else class_scores(output, parsed)
        if not scores.requires_grad:
            raise ValueError(f"the target's scores do not depend on layer {cap.name!r}: there is no gradient to explain")
        gradients = []
        for k in range(scores.shape[1]):
            (gradient,) = torch.autograd.grad(scores[:, k].sum(), activations, retain_graph=k + 1 < scores.shape[1], allow_unused=True)
            if gradient is None:
                raise ValueError(f"the target's scores do not depend on layer {cap.name!r}: there is no gradient to explain")
            gradients.append(gradient)
    return activations.detach(), torch.stack(gradients, dim=1), parsed is not None and parsed.per_image_k


def grad_cam(
    model: nn.Module,
    x: Tensor,
    target: Target,
    layer: nn.Module | str,
    *,
    counterfactual: bool = False,
    relu: bool = True,
    size: Size = "input",
    normalize: bool = True,
) -> Tensor:
    r"""Grad-CAM maps of ``target`` at ``layer`` for the images ``x`` (B, C, H, W).

    Returns (B, H, W), or (B, K, H, W) for a (B, K) target. Defaults give maps at the input's size
    in [0, 1]; ``size=None, normalize=False`` gives the raw layer-resolution map
    :math:`\mathrm{ReLU}(\sum_k \alpha_k A^k)` exactly, and ``relu=False`` its signed version.
    ``counterfactual=True`` negates the gradients: :math:`\mathrm{ReLU}(-\sum_k \alpha_k A^k)`.

    The model's mode, parameters, their ``.grad`` and ``x`` are left as they were; no hook outlives
    the call. See :mod:`gradcam_lite.targets` for the forms of ``target``.
    """
    activations, gradients, per_image_k = layer_gradients(model, x, target, layer)
    signed = weighted_sum(grad_cam_weights(gradients), activations)
    maps = finish_maps(signed, counterfactual=counterfactual, relu=relu, size=size, input_size=tuple(x.shape[-2:]), normalize=normalize)
    return maps if per_image_k else maps[:, 0]


def cam(features: Tensor, fc_weight: Tensor, target: int | Sequence[int] | Sequence[Sequence[int]] | Tensor) -> Tensor:
    r"""Class Activation Map (Zhou et al. 2016): :math:`M^c = \sum_k w^c_k A^k`, signed, at the features' resolution.

    ``features`` (B, C, H, W) are the activations that global average pooling reduces, ``fc_weight``
    (num_classes, C) the following linear layer's weight. Returns (B, H, W), or (B, K, H, W) for a
    (B, K) target. Apply ``.clamp(min=0)`` for the positive part.
    """
    check_images(features)
    if fc_weight.dim() != 2 or fc_weight.shape[1] != features.shape[1]:
        raise ValueError(f"fc_weight must be (num_classes, {features.shape[1]}) to match the features' channels, got {tuple(fc_weight.shape)}")
    parsed = parse_class_targets(target, features.shape[0])
    check_range(parsed.indices, fc_weight.shape[0])
    maps = weighted_sum(fc_weight[parsed.indices.to(fc_weight.device)], features)
    return maps if parsed.per_image_k else maps[:, 0]
