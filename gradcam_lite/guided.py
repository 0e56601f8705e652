r"""Guided backpropagation, the deconvnet, and Guided Grad-CAM.

All three differ from the plain gradient :math:`\partial y^c / \partial x` only in how a signal
:math:`R` (the gradient arriving at a ReLU's output) is sent back through the ReLU whose forward
input was :math:`z` (Springenberg et al. 2015):

.. math::

    \text{backprop:}\; R \cdot \mathbb{1}[z \text{ active}], \qquad
    \text{deconvnet:}\; \mathrm{ReLU}(R), \qquad
    \text{guided:}\; \mathrm{ReLU}(R) \cdot \mathbb{1}[z \text{ active}],

where "active" is :math:`z > 0` for ReLU and :math:`0 < z < 6` for ReLU6. Guided Grad-CAM
(Selvaraju et al. 2017) fuses the fine-grained guided gradient with the class-discriminative
Grad-CAM map by a Hadamard product, the map upsampled to the input's size:
:math:`G^c = \text{guided}^c \odot L^c_{\text{Grad-CAM}}`.

The rule is installed on every ``nn.ReLU`` and ``nn.ReLU6`` module through temporary hooks: a
pre-hook hands the module a clone of its input (so an in-place module cannot overwrite the tensor
the rule differentiates through), and a forward hook routes the module's output through an
autograd function whose backward is the rule (each hook acts only on its own thread's forward
pass, as in :mod:`gradcam_lite.capture`). Activations called as functions (``F.relu``,
``torch.relu``, ``x.relu()``) have no module to hook: they keep the plain gradient, and a warning
says how many such calls the forward made.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

from .capture import on_this_thread
from .checks import check_call, check_finite
from .layouts import Layout
from .maps import grad_cam
from .targets import Target, asks_k_per_image, parse_target, score_gradients, target_scores

Rule = Literal["guided", "deconvnet"]
FUNCTIONAL_ACTIVATIONS = {torch.relu, torch.relu_, F.relu, F.relu_, F.relu6, F.hardtanh, F.hardtanh_, Tensor.relu, Tensor.relu_}


class _ModifiedReLUBackward(torch.autograd.Function):
    """Forward: the module's output. Backward: the rule's signal, sent to the module's input."""

    @staticmethod
    def forward(ctx: Any, module_input: Tensor, module_output: Tensor, upper: float, rule: str) -> Tensor:
        ctx.rule = rule
        ctx.save_for_backward((module_output > 0) & (module_output < upper))
        return module_output.clone()

    @staticmethod
    def backward(ctx: Any, signal: Tensor) -> tuple[Tensor, None, None, None]:
        (active,) = ctx.saved_tensors
        passed = signal.clamp(min=0)
        return (passed * active if ctx.rule == "guided" else passed), None, None, None


class _FunctionalActivationCounter(TorchFunctionMode):
    """Counts relu-like calls made as functions, outside the hooked activation modules."""

    def __init__(self) -> None:
        super().__init__()
        self.inside_module = 0
        self.calls = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        if func in FUNCTIONAL_ACTIVATIONS and not self.inside_module:
            self.calls += 1
        return func(*args, **(kwargs or {}))


@contextmanager
def modified_relu_backward(model: nn.Module, rule: Rule) -> Iterator[_FunctionalActivationCounter]:
    """Within the block, every ReLU/ReLU6 module of ``model`` backpropagates by ``rule``."""
    counter = _FunctionalActivationCounter()
    handles = []
    inputs: dict[nn.Module, Tensor] = {}

    def before(module: nn.Module, args: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        counter.inside_module += 1
        inputs[module] = args[0]
        return (args[0].clone(), *args[1:])

    def after(module: nn.Module, _args: tuple[Tensor, ...], output: Tensor) -> Tensor:
        counter.inside_module -= 1
        upper = 6.0 if isinstance(module, nn.ReLU6) else float("inf")
        return _ModifiedReLUBackward.apply(inputs.pop(module), output, upper, rule)

    try:
        for module in model.modules():
            if type(module) in (nn.ReLU, nn.ReLU6):
                handles.append(module.register_forward_pre_hook(on_this_thread(before)))
                handles.append(module.register_forward_hook(on_this_thread(after)))
        with counter:
            yield counter
    finally:
        for handle in handles:
            handle.remove()


def input_gradients(model: nn.Module, x: Tensor, target: Target, rule: Rule | None) -> Tensor:
    """:math:`\\partial y / \\partial x` (B, C, H, W), or (B, K, C, H, W) for a (B, K) target, by ``rule``."""
    check_call(model, x)
    parsed = parse_target(target, x.shape[0])
    leaf = x.detach().clone().requires_grad_()  # a copy: x may be an inference tensor, which cannot require grad
    with torch.enable_grad():
        if rule is None:
            output = model(leaf)
        else:
            with modified_relu_backward(model, rule) as counter:
                output = model(leaf)
            if counter.calls:
                warnings.warn(
                    f"the forward made {counter.calls} functional ReLU call(s) (F.relu, torch.relu, ...); {rule} covers "
                    "only nn.ReLU and nn.ReLU6 modules, so those calls kept the plain gradient",
                    stacklevel=3,
                )
        gradients = score_gradients(target_scores(parsed, output, x.shape[0]), leaf, "the input")
    check_finite(gradients, "the gradients with respect to the input")
    return gradients if asks_k_per_image(parsed) else gradients[:, 0]


def guided_backprop(model: nn.Module, x: Tensor, target: Target) -> Tensor:
    """Guided backpropagation (B, C, H, W): the gradient of the target with the guided rule at every ReLU module."""
    return input_gradients(model, x, target, "guided")


def deconvnet(model: nn.Module, x: Tensor, target: Target) -> Tensor:
    """The deconvnet's reconstruction (B, C, H, W): the ReLU of the backward signal at every ReLU module."""
    return input_gradients(model, x, target, "deconvnet")


def guided_grad_cam(model: nn.Module, x: Tensor, target: Target, layer: nn.Module | str, *, layout: Layout = None) -> Tensor:
    """Guided Grad-CAM: ``guided_backprop(...) * grad_cam(...)[:, None]``, both with default settings (``layout`` as in :func:`grad_cam`)."""
    guided = guided_backprop(model, x, target)
    maps = grad_cam(model, x, target, layer, layout=layout)
    return guided * maps.unsqueeze(-3)
