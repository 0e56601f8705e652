r"""Class activation maps: Grad-CAM and CAM, from channel weights to a heat map.

Given a layer's activations :math:`A \in \mathbb{R}^{C \times H \times W}` and channel weights
:math:`\alpha^c` (see :mod:`gradcam_lite.weights`), the signed map is the weighted sum of the
feature maps, and Grad-CAM keeps its positive part (Selvaraju et al. 2017, eq. 2):

.. math::

    S^c = \sum_k \alpha^c_k A^k, \qquad L^c_{\text{Grad-CAM}} = \mathrm{ReLU}(S^c).

The *counterfactual* map negates the gradients, hence the weights:
:math:`L^c_{\text{cf}} = \mathrm{ReLU}(-S^c)`, the places whose evidence speaks against :math:`c`.
For display the map is upsampled bilinearly to the input's size and min-max normalised to
[0, 1]; a map that is constant at the layer's resolution (all zero: no positive evidence) comes
out all zero.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .capture import capture
from .checks import check_call, check_finite, check_images, warn_if_no_gradient
from .layouts import Layout, as_feature_maps, resolve_layout
from .targets import Target, asks_k_per_image, check_range, parse_class_targets, parse_target, score_gradients, target_scores
from .weights import grad_cam_pp_weights, grad_cam_weights, hires_cam_weights

Size = Literal["input"] | tuple[int, int] | None


def weighted_sum(weights: Tensor, activations: Tensor) -> Tensor:
    r""":math:`S = \sum_k \alpha_k A^k`: weights (B, K, C) and activations (B, C, H, W) -> maps (B, K, H, W).

    Weights with a value per position (B, K, C, H, W), as HiResCAM's, give :math:`\sum_k G^k \odot A^k`.
    """
    if weights.dim() == 5:
        return torch.einsum("bkchw,bchw->bkhw", weights, activations)
    return torch.einsum("bkc,bchw->bkhw", weights, activations)


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear resize (align_corners=False) of maps (..., H, W) to ``size``."""
    lead = maps.shape[:-2]
    flat = maps.reshape(-1, 1, *maps.shape[-2:])
    return F.interpolate(flat, size=size, mode="bilinear", align_corners=False).reshape(*lead, *size)


def is_constant(maps: Tensor) -> Tensor:
    """Whether each map (..., H, W) holds one value everywhere: a bool tensor of shape (...)."""
    flat = maps.flatten(-2)
    return flat.amax(dim=-1) == flat.amin(dim=-1)


def normalize_maps(maps: Tensor, constant: Tensor | None = None) -> Tensor:
    """Min-max normalise each map (..., H, W) to [0, 1]; a constant map becomes all zeros, never NaN.

    ``constant`` (shape (...)) says which maps to treat as constant when that was decided before
    resizing (see :func:`maps_from_weights`); by default it is decided on ``maps`` themselves.
    """
    flat = maps.flatten(-2)
    low = flat.amin(dim=-1, keepdim=True)
    span = flat.amax(dim=-1, keepdim=True) - low
    keep = (span > 0) & ~(is_constant(maps) if constant is None else constant)[..., None]
    scaled = torch.where(keep, (flat - low) / span.where(span > 0, torch.ones_like(span)), torch.zeros_like(flat))
    return scaled.reshape(maps.shape)


def maps_from_weights(
    weights: Tensor, activations: Tensor, x: Tensor, per_image_k: bool, *, counterfactual: bool = False, relu: bool, size: Size, normalize: bool
) -> Tensor:
    """Weights (B, K, C) and activations -> signed map -> (counterfactual) -> ReLU -> resize -> normalise.

    Returns (B, H, W), or (B, K, H, W) if K maps per image were asked for. Whether a map is
    constant (all zero, say) is decided at the layer's resolution: bilinear weights that sum to 1
    in exact arithmetic do not in floating point, so resizing a constant map adds differences of
    one unit in the last place, which min-max normalisation would stretch into [0, 1].
    """
    signed = weighted_sum(weights, activations)
    maps = -signed if counterfactual else signed
    if relu:
        maps = maps.clamp(min=0)
    constant = is_constant(maps)
    if size is not None:
        if size == "input":
            size = tuple(x.shape[-2:])
        elif not (isinstance(size, Sequence) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
            raise ValueError(f"size must be 'input', None or a (height, width) pair of positive ints, got {size!r}")
        maps = upsample(maps, tuple(size))
    if normalize:
        maps = normalize_maps(maps, constant)
    return maps if per_image_k else maps[:, 0]


class LayerGradients(NamedTuple):
    """What one forward pass and K small backward passes give at a layer, read as maps (:mod:`gradcam_lite.layouts`)."""

    activations: Tensor  # A (B, C, h, w)
    gradients: Tensor  # dy/dA (B, K, C, h, w)
    scores: Tensor  # y (B, K), the scores explained
    per_image_k: bool  # whether the caller asked for K maps per image


def layer_gradients(model: nn.Module, x: Tensor, target: Target, layer: nn.Module | str, layout: Layout = None) -> LayerGradients:
    """One forward pass; activations A, the gradients of the scores y with respect to A, and y itself.

    Gradients are taken with ``torch.autograd.grad`` down to the layer only. The K scores of a
    (B, K) target share the forward pass; each needs its own (small) backward through the layers above.
    Channels-last and token outputs are read as (B, C, h, w) maps by ``layout`` (inferred if None); a
    gradient that is exactly zero at every position is warned about (:func:`~gradcam_lite.checks.warn_if_no_gradient`).
    """
    check_call(model, x)
    parsed = parse_target(target, x.shape[0])
    with capture(model, layer, stop_gradient=True) as cap, torch.enable_grad():
        output = model(x)
        activations = cap.require_activations()
        if activations.shape[0] != x.shape[0]:
            raise ValueError(f"layer {cap.name!r} returned shape {tuple(activations.shape)}, whose first dimension is not the batch of "
                             f"{x.shape[0]} images (a sequence-first layer, such as nn.MultiheadAttention without batch_first?)")
        layout = resolve_layout(tuple(activations.shape), layout, tuple(x.shape[-2:]), cap.name)
        scores = target_scores(parsed, output, x.shape[0])
        gradients = score_gradients(scores, activations, f"layer {cap.name!r}")
    check_finite(activations, f"the activations of layer {cap.name!r}")
    check_finite(gradients, f"the gradients at layer {cap.name!r}")
    maps = as_feature_maps(activations.detach(), layout)
    grid_gradients = as_feature_maps(gradients.flatten(0, 1), layout)
    per_k = gradients.shape[:2]
    prefix = None if grid_gradients.prefix is None else grid_gradients.prefix.unflatten(0, per_k)
    warn_if_no_gradient(grid_gradients.maps.unflatten(0, per_k), prefix, cap.name)
    return LayerGradients(maps.maps, grid_gradients.maps.unflatten(0, per_k), scores.detach(), asks_k_per_image(parsed))


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
    layout: Layout = None,
) -> Tensor:
    r"""Grad-CAM maps of ``target`` at ``layer`` for the images ``x`` (B, C, H, W).

    Returns (B, H, W), or (B, K, H, W) for a (B, K) target. Defaults give maps at the input's size
    in [0, 1]; ``size=None, normalize=False`` gives the raw layer-resolution map
    :math:`\mathrm{ReLU}(\sum_k \alpha_k A^k)` exactly, and ``relu=False`` its signed version.
    ``counterfactual=True`` negates the gradients: :math:`\mathrm{ReLU}(-\sum_k \alpha_k A^k)`.

    ``layout`` says how to read the layer's output: channels first (B, C, h, w), ``"channels_last"``
    (B, h, w, C), or tokens (B, N, C) as a :class:`~gradcam_lite.layouts.TokenGrid`; by default it is
    inferred, by the rule of :mod:`gradcam_lite.layouts`.

    The model's mode, parameters, their ``.grad`` and ``x`` are left as they were; no hook outlives
    the call. See :mod:`gradcam_lite.targets` for the forms of ``target``.
    """
    return gradient_weighted_map(grad_cam_weights, model, x, target, layer, counterfactual=counterfactual, relu=relu, size=size,
                                 normalize=normalize, layout=layout)


def hires_cam(
    model: nn.Module,
    x: Tensor,
    target: Target,
    layer: nn.Module | str,
    *,
    counterfactual: bool = False,
    relu: bool = True,
    size: Size = "input",
    normalize: bool = True,
    layout: Layout = None,
) -> Tensor:
    r"""HiResCAM maps (Draelos and Carin 2020): :math:`\mathrm{ReLU}(\sum_k G^{kc} \odot A^k)`, Grad-CAM without the average.

    One line apart from :func:`grad_cam`: each position keeps its own gradient
    (:func:`~gradcam_lite.weights.hires_cam_weights`), so the signed map (``relu=False``) summed over positions
    is the first-order Taylor term :math:`\sum_{kij} G^{kc}_{ij} A^k_{ij}`. Same targets, shapes, options,
    layouts and contract as :func:`grad_cam`.
    """
    return gradient_weighted_map(hires_cam_weights, model, x, target, layer, counterfactual=counterfactual, relu=relu, size=size,
                                 normalize=normalize, layout=layout)


def gradient_weighted_map(
    rule: Callable[[Tensor], Tensor], model: nn.Module, x: Tensor, target: Target, layer: nn.Module | str, *, counterfactual: bool,
    relu: bool, size: Size, normalize: bool, layout: Layout,
) -> Tensor:
    """What the gradient-weighted maps share: one forward, a backward to the layer per target, weights from the gradients by ``rule``."""
    activations, gradients, _, per_image_k = layer_gradients(model, x, target, layer, layout)
    return maps_from_weights(rule(gradients), activations, x, per_image_k, counterfactual=counterfactual, relu=relu, size=size, normalize=normalize)


def grad_cam_pp(
    model: nn.Module, x: Tensor, target: Target, layer: nn.Module | str, *, relu: bool = True, size: Size = "input", normalize: bool = True,
    layout: Layout = None,
) -> Tensor:
    r"""Grad-CAM++ maps: :math:`\mathrm{ReLU}(\sum_k \beta^c_k A^k)` with the weights of :func:`~gradcam_lite.weights.grad_cam_pp_weights`.

    Same targets, shapes and options as :func:`grad_cam`.
    """
    activations, gradients, _, per_image_k = layer_gradients(model, x, target, layer, layout)
    weights = grad_cam_pp_weights(gradients, gradients**2, gradients**3, activations)
    return maps_from_weights(weights, activations, x, per_image_k, relu=relu, size=size, normalize=normalize)


SmoothAverage = Literal["derivatives", "powers", "maps"]


def smooth_grad_cam_pp(
    model: nn.Module,
    x: Tensor,
    target: Target,
    layer: nn.Module | str,
    *,
    n_samples: int = 25,
    sigma: float = 0.5,
    generator: torch.Generator | None = None,
    average: SmoothAverage = "derivatives",
    relu: bool = True,
    size: Size = "input",
    normalize: bool = True,
    layout: Layout = None,
) -> Tensor:
    r"""Smooth Grad-CAM++ (Omeiza et al. 2019): Grad-CAM++ with derivatives averaged over noisy copies of the input.

    ``n_samples`` copies :math:`x + \epsilon_t`, :math:`\epsilon_t \sim \mathcal{N}(0, \sigma^2)`
    (``sigma`` in the units of ``x``; for ImageNet-standardised images one unit is about one standard
    deviation of a pixel), each with its score :math:`y_t` and gradient :math:`g_t` at the layer.
    ``average`` says what is averaged:

    - ``"derivatives"`` (the paper): the derivatives of the exponential score,
      :math:`D^p = \frac{1}{n}\sum_t \exp(y_t)\, g_t^p` for p = 1, 2, 3, enter the Grad-CAM++ formula
      with the clean image's activations. Samples with a higher score weigh more; the weights are
      computed as :math:`\mathrm{softmax}_t(y_t)`, since a factor common to all samples only rescales the map.
    - ``"powers"``: the plain averages of :math:`g_t, g_t^2, g_t^3` (no :math:`\exp(y_t)`; as torchcam does).
    - ``"maps"``: the average of the n Grad-CAM++ maps of the noisy copies, each with its own
      activations (as SmoothGrad averages gradients), normalised again if ``normalize``.

    ``sigma = 0`` gives :func:`grad_cam_pp` for all three (up to rounding). Each sample costs one forward pass.
    """
    if not isinstance(n_samples, int) or n_samples < 1:
        raise ValueError(f"n_samples must be a positive int, got {n_samples!r}")
    if not sigma >= 0:
        raise ValueError(f"sigma must be >= 0, got {sigma!r}")
    if average not in ("derivatives", "powers", "maps"):
        raise ValueError(f"average must be 'derivatives', 'powers' or 'maps', got {average!r}")
    clean = layer_gradients(model, x, target, layer, layout)
    samples = []
    for _ in range(n_samples):
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype).to(x.device) * sigma
        samples.append(layer_gradients(model, x + noise, target, layer, layout))
    options = dict(relu=relu, size=size, normalize=normalize)
    if average == "maps":
        maps = [maps_from_weights(grad_cam_pp_weights(s.gradients, s.gradients**2, s.gradients**3, s.activations), s.activations, x, True, **options) for s in samples]
        mean = torch.stack(maps).mean(dim=0)
        mean = normalize_maps(mean) if normalize else mean
        return mean if clean.per_image_k else mean[:, 0]
    gradients = torch.stack([s.gradients for s in samples])  # (n, B, K, C, h, w)
    if average == "derivatives":
        weights = torch.stack([s.scores for s in samples]).softmax(dim=0)  # (n, B, K)
    else:
        weights = torch.full(gradients.shape[:3], 1 / n_samples, dtype=gradients.dtype, device=gradients.device)
    weights = weights[..., None, None, None]
    powers = [(weights * gradients**p).sum(dim=0) for p in (1, 2, 3)]
    betas = grad_cam_pp_weights(*powers, clean.activations)
    return maps_from_weights(betas, clean.activations, x, clean.per_image_k, **options)


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
