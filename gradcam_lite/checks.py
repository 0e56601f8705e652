r"""What every explanation checks before it runs, so that bad input ends in an error, not a wrong map.

An explanation is only as good as the forward pass it differentiates. Each public call first
checks, and names what is wrong:

- the images: a non-empty float batch (B, C, H, W) of the model's dtype and device, every value
  finite. A NaN or an infinity in image :math:`b` makes :math:`y^c_b` and every gradient NaN, and
  a NaN map would be normalised to all zeros, which reads as "no positive evidence": the call
  raises instead, naming the images;
- autograd: inside ``torch.inference_mode()`` nothing records a graph and ``torch.enable_grad()``
  cannot turn it back on, so no gradient exists; the call says so instead of reporting a score
  that "does not depend on the layer";
- the model's mode: BatchNorm or Dropout in training mode make a map depend on the rest of the
  batch and on chance. What counts is each such module's own mode, so a wrapper
  (``nn.DataParallel``) in training mode around a model in eval mode is fine.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor, nn


def check_images(x: Tensor) -> None:
    """A non-empty (B, C, H, W) floating-point batch whose values are all finite."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a tensor of images (B, C, H, W), got {type(x).__name__}")
    if x.dim() != 4 or x.shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch of images (B, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(
            f"x must hold floating-point images, got dtype {x.dtype}; for 8-bit pixels use models.preprocess "
            "or x.float() / 255 (and the model's normalisation)"
        )
    finite = torch.isfinite(x).flatten(1).all(dim=1)
    if not finite.all():
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"images {bad} of the batch hold NaN or infinite values: their scores and maps would be undefined")


def check_autograd() -> None:
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "explanations need gradients, and torch.inference_mode() switches autograd off for everything "
            "inside it (torch.enable_grad() cannot undo that): call this outside the inference_mode block; "
            "under torch.no_grad() it works"
        )


def check_model_matches(model: nn.Module, x: Tensor) -> None:
    """x has the dtype and device of the model's floating-point parameters (if it has any)."""
    parameters = [p for p in model.parameters() if p.is_floating_point()]
    if not parameters:
        return
    if any(p.is_inference() for p in parameters):
        raise RuntimeError("the model's parameters were created under torch.inference_mode(), so autograd cannot use them: build or load the model outside it")
    dtype, device = parameters[0].dtype, parameters[0].device
    if x.dtype not in {p.dtype for p in parameters}:
        raise TypeError(f"x has dtype {x.dtype} but the model's parameters are {dtype}: use x.to({dtype}) (or convert the model)")
    if x.device not in {p.device for p in parameters}:
        raise ValueError(f"x is on {x.device} but the model's parameters are on {device}: use x.to({str(device)!r})")


def warn_if_training(model: nn.Module) -> None:
    stochastic = (nn.modules.batchnorm._BatchNorm, nn.Dropout)
    if any(m.training for m in model.modules() if isinstance(m, stochastic)):
        warnings.warn(
            "model is in training mode: BatchNorm and Dropout make maps depend on the batch and on chance; call model.eval()",
            stacklevel=5,
        )


def check_call(model: nn.Module, x: Tensor) -> None:
    """Everything above, in the order a user would want to hear about it."""
    check_images(x)
    check_autograd()
    check_model_matches(model, x)
    warn_if_training(model)


def check_finite(values: Tensor, what: str) -> None:
    """Values (B, ...) computed inside the model (activations, gradients) are finite for every image."""
    finite = torch.isfinite(values).flatten(1).all(dim=1)
    if not finite.all():
        bad = torch.nonzero(~finite).flatten().tolist()
        raise ValueError(f"{what} hold NaN or infinite values for images {bad} (an overflow, or NaN in the model's weights?)")


def warn_if_no_gradient(gradients: Tensor, prefix_gradients: Tensor | None, layer_name: str) -> None:
    """Warn when a score's gradient (B, K, C, h, w) is exactly zero at every position of the layer: its map is empty.

    Then the score does not depend on the layer's positions at all, and the map's emptiness says so, not that the
    evidence is nowhere. The usual cause, decided from the gradient: ``prefix_gradients`` (B, K, P, C) of a token
    layer's class token are non-zero, so only the prefix reaches the output (a Vision Transformer's last block).
    """
    empty = (gradients == 0).flatten(2).all(dim=2)
    if not bool(empty.any()):
        return
    images = torch.nonzero(empty.any(dim=1)).flatten().tolist()
    message = (f"the score's gradient is exactly zero at every position of layer {layer_name!r} for images {images}, so their "
               "maps are empty: the score does not depend on this layer's positions. ")
    if prefix_gradients is not None and bool((prefix_gradients != 0).flatten(2).any(dim=2)[empty].all()):
        message += ("Only the prefix (class) tokens carry a gradient: after this layer only they reach the output, as after "
                    "a Vision Transformer's last block. Explain the block's input normalisation (ln_1 in torchvision's ViT, "
                    "norm1 in Swin) or an earlier block's output")
    else:
        message += "Dead units, or a target that ignores these positions? Try an earlier layer"
    warnings.warn(message, stacklevel=4)
