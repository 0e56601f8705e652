r"""Reading a layer's output as feature maps :math:`A^k_{ij}`: channels first, channels last, or a grid of tokens.

Grad-CAM needs a layer's output as :math:`C` maps over positions :math:`(i, j)`. Layers hand it over in
three layouts:

- **channels first**, (B, C, h, w): convolutions;
- **channels last**, (B, h, w, C): Swin Transformer's stages (torchvision's ``swin_t``), ConvNeXt's inner layers;
- **tokens**, (B, N, C): a Vision Transformer's blocks, with :math:`N = P + h w`: :math:`P` *prefix* tokens
  (a class token, a distillation token) and then the :math:`h \times w` patches, row by row. The prefix
  has no position, so it is dropped from the map; its gradient is kept to diagnose an empty map.

Given an explicit layout (:class:`TokenGrid`, ``"channels_first"``, ``"channels_last"``) the output is read
that way, or the call fails naming the shape. Without one (``layout=None``) it is inferred from the output's
shape and the input's size :math:`H \times W`, by one rule: a grid :math:`a \times b` *matches* the input when
it has the input's aspect ratio up to rounding, :math:`a = \mathrm{round}(b H / W)` or
:math:`b = \mathrm{round}(a W / H)` (a stride that does not divide the input rounds one side).

- 3-D (B, N, C): tokens, when exactly one of :math:`P \in \{0, 1\}` and one factorisation
  :math:`N - P = h w` give a grid :math:`h \times w` that matches; none or several is an error that lists what
  was tried (pass a :class:`TokenGrid`; a distillation token makes :math:`P = 2`).
- 4-D (B, d_1, d_2, d_3): channels last only when :math:`(d_1, d_2)` matches and :math:`(d_2, d_3)` does not
  (Swin's (B, 7, 7, 768) at 224 x 224); otherwise channels first, so a conv map keeps its meaning, also when
  both match (a (B, 8, 8, 8) map at 64 x 64: a small convolutional net's map is the common case). A
  channels-last layer with as many channels as rows needs ``layout="channels_last"``.
- any other number of dimensions (a (B, C) vector has no positions): an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple

from torch import Tensor


@dataclass(frozen=True)
class TokenGrid:
    """Tokens (B, N, C) with ``prefix`` tokens first, then ``height`` x ``width`` patches row by row: N = prefix + height * width."""

    height: int
    width: int
    prefix: int = 0

    def __post_init__(self) -> None:
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in (self.height, self.width, self.prefix)):
            raise TypeError(f"TokenGrid takes ints, got height={self.height!r}, width={self.width!r}, prefix={self.prefix!r}")
        if self.height < 1 or self.width < 1 or self.prefix < 0:
            raise ValueError(f"TokenGrid needs height, width >= 1 and prefix >= 0, got {self}")


Layout = Literal["channels_first", "channels_last"] | TokenGrid | None


class FeatureMaps(NamedTuple):
    """A layer's output read as maps (B, C, h, w), and its prefix tokens (B, P, C) if it was a token sequence."""

    maps: Tensor
    prefix: Tensor | None


def matches(a: int, b: int, input_size: tuple[int, int]) -> bool:
    """Whether an ``a`` x ``b`` grid has the aspect ratio of an input of ``input_size`` (height, width), up to rounding one side."""
    height, width = input_size
    return a == round(b * height / width) or b == round(a * width / height)


def token_grids(tokens: int, input_size: tuple[int, int]) -> list[TokenGrid]:
    """Every :class:`TokenGrid` with a prefix of 0 or 1 whose grid matches the input and holds ``tokens`` tokens in all."""
    found = []
    for prefix in (0, 1):
        patches = tokens - prefix
        found += [TokenGrid(h, patches // h, prefix) for h in range(1, patches + 1)
                  if patches % h == 0 and matches(h, patches // h, input_size)]
    return found


def infer_layout(shape: tuple[int, ...], input_size: tuple[int, int], layer_name: str) -> Layout:
    """The layout of a layer output of ``shape`` for an input of ``input_size`` (height, width), by the module's rule."""
    if len(shape) == 4:
        first, last = matches(shape[1], shape[2], input_size), matches(shape[2], shape[3], input_size)
        return "channels_last" if first and not last else "channels_first"
    if len(shape) == 3:
        grids = token_grids(shape[1], input_size)
        if len(grids) == 1:
            return grids[0]
        found = "none of them matches" if not grids else f"several match: {grids}"
        raise ValueError(
            f"layer {layer_name!r} returned shape {shape}: read as tokens (B, N, C), N = {shape[1]} minus a prefix of 0 or 1 "
            f"tokens was tried as an h x w grid with the input's aspect ratio ({input_size[0]} x {input_size[1]}), and {found}. "
            "Pass layout=TokenGrid(height, width, prefix) (a distillation token makes prefix=2)"
        )
    raise ValueError(without_positions(shape, layer_name))


def without_positions(shape: tuple[int, ...] | str, layer_name: str) -> str:
    """The error for a layer output that holds no positions (a vector, a tuple)."""
    return (f"layer {layer_name!r} returned {shape if isinstance(shape, str) else f'shape {shape}'}; Grad-CAM needs positions: "
            "a (B, C, H, W) feature map, channels last (B, H, W, C) or tokens (B, N, C). Pick a layer before the pooling "
            "(a (B, C) vector has no positions)")


def resolve_layout(shape: tuple[int, ...], layout: Layout, input_size: tuple[int, int], layer_name: str) -> Layout:
    """The layout to read a layer output of ``shape`` in: ``layout`` checked against the shape, or inferred if None."""
    if layout is None:
        return infer_layout(shape, input_size, layer_name)
    if not (isinstance(layout, TokenGrid) or layout in ("channels_first", "channels_last")):
        raise ValueError(f"layout must be None (inferred), 'channels_first', 'channels_last' or a TokenGrid, got {layout!r}")
    if isinstance(layout, TokenGrid):
        if len(shape) != 3 or shape[1] != layout.prefix + layout.height * layout.width:
            raise ValueError(f"layer {layer_name!r} returned shape {shape}, which is not (B, N, C) tokens with N = "
                             f"{layout.prefix} + {layout.height} x {layout.width} as {layout} says")
        return layout
    if len(shape) != 4:
        raise ValueError(f"layer {layer_name!r} returned shape {shape}, which is not a 4-D map as layout={layout!r} says")
    return layout


def as_feature_maps(values: Tensor, layout: Layout) -> FeatureMaps:
    """A layer's output, or its gradient, (B, ...) read as maps (B, C, h, w) in a resolved ``layout``; tokens keep their prefix apart."""
    if isinstance(layout, TokenGrid):
        patches = values[:, layout.prefix:].unflatten(1, (layout.height, layout.width))
        return FeatureMaps(patches.permute(0, 3, 1, 2), values[:, : layout.prefix])
    return FeatureMaps(values.permute(0, 3, 1, 2) if layout == "channels_last" else values, None)
