r"""Capturing a layer's activations :math:`A` and gradients :math:`\partial y / \partial A` with hooks.

A *forward hook* on the layer sees its output :math:`A`: a feature map (B, C, H, W), or channels last
(B, H, W, C) or tokens (B, N, C), which :mod:`gradcam_lite.layouts` reads as maps. Two details make the capture
safe on real networks:

- **The clone trick.** The hook returns ``A.clone()`` in place of ``A``, so later in-place
  operations (``nn.ReLU(inplace=True)``, ``out += identity`` in a ResNet block) modify the clone
  and never the tensor we keep; the gradient still flows back to :math:`A` through the clone.
  (Module *backward* hooks are avoided altogether: they break when the module's output is
  modified in place.)
- **Stopping the gradient at the layer** (``stop_gradient=True``). The forward below the layer
  runs with autograd off, and :math:`A` becomes a fresh leaf that requires grad, so the graph holds
  only what lies above the layer. Then ``torch.autograd.grad(y, A)`` costs a small backward,
  never touches the parameters' ``.grad``, and the whole explanation costs about one forward.

Every hook lives only inside the ``with`` block; leaving it (also by an exception) removes them
and restores autograd's mode. Hooks sit on modules that other threads may run at the same time, so
each acts only on forward passes of the thread that installed it: concurrent calls on one model
each see their own forward pass.
"""

from __future__ import annotations

import difflib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.hooks import RemovableHandle

from .layouts import without_positions


def resolve_layer(model: nn.Module, layer: nn.Module | str) -> tuple[str, nn.Module]:
    """(dotted name, module) of ``layer``, given as a submodule of ``model`` or by its name."""
    modules = dict(model.named_modules())
    if isinstance(layer, str):
        if layer not in modules:
            near = difflib.get_close_matches(layer, [n for n in modules if n], n=5, cutoff=0.5)
            raise ValueError(f"model has no layer named {layer!r}; closest names: {near}")
        return layer, modules[layer]
    if not isinstance(layer, nn.Module):
        raise TypeError(f"layer must be an nn.Module of the model or its dotted name, got {type(layer).__name__}")
    for name, module in modules.items():
        if module is layer:
            return name, module
    raise ValueError(f"the layer {type(layer).__name__} is not a submodule of the model")


def on_this_thread(hook: Callable[..., Any]) -> Callable[..., Any]:
    """``hook``, acting only when called by the thread that wrapped it (else a no-op returning None)."""
    owner = threading.get_ident()

    @wraps(hook)
    def filtered(*args: Any) -> Any:
        return hook(*args) if threading.get_ident() == owner else None

    return filtered


class Capture:
    """What one layer saw in the latest forward pass (and backward, if one ran)."""

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module = module
        self.activations: Tensor | None = None
        self.gradients: Tensor | None = None
        self.calls = 0

    def require_activations(self) -> Tensor:
        if self.activations is None:
            raise RuntimeError(f"layer {self.name!r} did not run in the forward pass, so nothing was captured")
        return self.activations


@contextmanager
def capture(model: nn.Module, layer: nn.Module | str, *, stop_gradient: bool = False) -> Iterator[Capture]:
    """Expose ``layer``'s output (``.activations``) and, after a backward, its gradient (``.gradients``).

    >>> with capture(model, "features.8") as cap:
    ...     model(x)[0, 285].backward()
    >>> A, dA = cap.activations, cap.gradients

    With ``stop_gradient=True`` the forward below the layer records no graph and ``A`` is a leaf:
    differentiate with ``torch.autograd.grad(score, cap.activations)``.
    """
    name, module = resolve_layer(model, layer)
    result = Capture(name, module)
    grad_mode_at_entry = torch.is_grad_enabled()
    grad_mode_before_forward: list[bool] = []
    handles: list[RemovableHandle] = []

    def start_forward(_module: nn.Module, _inputs: object) -> None:
        result.activations, result.gradients, result.calls = None, None, 0
        if stop_gradient:
            grad_mode_before_forward.append(torch.is_grad_enabled())
            torch.set_grad_enabled(False)

    def end_forward(_module: nn.Module, _inputs: object, _output: object) -> None:
        if stop_gradient:
            torch.set_grad_enabled(grad_mode_before_forward.pop())

    def keep_gradient(gradient: Tensor) -> None:
        result.gradients = gradient

    def on_layer_output(_module: nn.Module, _inputs: object, output: object) -> Tensor | None:
        if not isinstance(output, Tensor) or output.dim() not in (3, 4):
            raise ValueError(without_positions(tuple(output.shape) if isinstance(output, Tensor) else f"a {type(output).__name__}", name))
        result.calls += 1
        if result.calls > 1:
            raise RuntimeError(f"layer {name!r} ran {result.calls} times in one forward pass (a shared module?); pick a layer that runs once")
        if stop_gradient:
            torch.set_grad_enabled(True)
            output = output.detach().requires_grad_()
        result.activations = output
        if not output.requires_grad:
            return None
        handles.append(output.register_hook(keep_gradient))
        return output.clone()

    try:
        handles.append(model.register_forward_pre_hook(on_this_thread(start_forward)))
        handles.append(module.register_forward_hook(on_this_thread(on_layer_output)))
        handles.append(model.register_forward_hook(on_this_thread(end_forward)))
        yield result
    finally:
        for handle in handles:
            handle.remove()
        torch.set_grad_enabled(grad_mode_at_entry)
