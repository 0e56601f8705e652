"""Pictures of maps: a heat map over a photo, and grids of them.

The overlay is :math:`(1 - a) \\cdot \\text{image} + a \\cdot \\text{colormap}(L)`, with the map
resized bilinearly to the photo's size so it can be shown over the full-resolution original.
Colour carries a value, so every picture can carry a colour bar, and the default colour map,
``inferno``, is perceptually uniform: equal steps of the map look like equal steps of colour
(``jet``, the paper's, is available with ``cmap="jet"`` but invents edges where its hue changes).
A *signed* map (:math:`S^c`, before the ReLU) is drawn with a diverging colour map centred at 0,
red for evidence for the class and blue for evidence against it, on one scale for both signs,
:math:`[-m, m]` with :math:`m = \\max |S^c|`: a colour's depth then means the same amount on either side
(scaling each side to its own extreme would make the weaker side look as strong as the stronger one).
A gradient image (guided backpropagation, deconvnet) is shown as :math:`0.5 + g / (2 q)`, clipped
to [0, 1], with :math:`q` the 99th percentile of :math:`|g|`: grey is zero, and the scale is set by the
bulk of the values rather than by a few extreme pixels.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.axes import Axes
from matplotlib.cm import ScalarMappable
from matplotlib.colorbar import Colorbar
from matplotlib.colors import Normalize
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor

from .maps import upsample

ImageLike = Image.Image | np.ndarray | Tensor
DEFAULT_CMAP = "inferno"
SIGNED_CMAP = "RdBu_r"


def image_array(image: ImageLike) -> np.ndarray:
    """An (H, W, 3) float array in [0, 1] from a PIL image, an (H, W, 3) array or a (3, H, W) tensor in [0, 1]."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    if isinstance(image, Tensor):
        if image.dim() != 3 or image.shape[0] != 3:
            raise ValueError(f"an image tensor must be (3, H, W) in [0, 1], got shape {tuple(image.shape)}")
        return image.detach().cpu().permute(1, 2, 0).numpy().astype(np.float32)
    array = np.asarray(image, dtype=np.float32)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"an image array must be (H, W, 3), got shape {array.shape}")
    return array / 255.0 if array.max() > 1.0 else array


def overlay(image: ImageLike, saliency: Tensor, alpha: float = 0.5, cmap: str = DEFAULT_CMAP) -> np.ndarray:
    """Blend a map (H', W') in [0, 1] over ``image``: an (H, W, 3) array in [0, 1]."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must lie in [0, 1], got {alpha}")
    if saliency.dim() != 2:
        raise ValueError(f"overlay takes one (H, W) map, got shape {tuple(saliency.shape)}")
    photo = image_array(image)
    resized = upsample(saliency.detach().float().cpu(), photo.shape[:2]).clamp(0, 1).numpy()
    heat = colormaps[cmap](resized)[..., :3]
    return (1 - alpha) * photo + alpha * heat


def add_colorbar(ax: Axes | Sequence[Axes], cmap: str = DEFAULT_CMAP, label: str = "map value (normalised)", norm: Normalize | None = None) -> Colorbar:
    """A colour bar beside ``ax`` (or shared by several axes) for values drawn with ``cmap`` and ``norm`` (default [0, 1])."""
    axes = [ax] if isinstance(ax, Axes) else list(ax)
    mappable = ScalarMappable(norm=norm or Normalize(0, 1), cmap=cmap)
    return axes[0].figure.colorbar(mappable, ax=axes, fraction=0.046, pad=0.02, label=label)


def show_overlay(
    ax: Axes, image: ImageLike, saliency: Tensor, title: str = "", alpha: float = 0.5, cmap: str = DEFAULT_CMAP, colorbar: bool = False
) -> Axes:
    """Draw :func:`overlay` on ``ax`` without ticks, with a colour bar if asked."""
    ax.imshow(overlay(image, saliency, alpha, cmap))
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    if colorbar:
        add_colorbar(ax, cmap)
    return ax


def show_signed(ax: Axes, image: ImageLike, signed: Tensor, title: str = "", alpha: float = 0.6, label: str = "signed map $S^c$") -> Axes:
    """A signed map (H', W') over ``image``: diverging colours centred at 0 on one scale ``[-m, m]``, ``m`` the largest
    absolute value, with a colour bar."""
    if signed.dim() != 2:
        raise ValueError(f"show_signed takes one (H, W) map, got shape {tuple(signed.shape)}")
    photo = image_array(image)
    resized = upsample(signed.detach().float().cpu(), photo.shape[:2]).numpy()
    extreme = max(float(np.abs(resized).max()), 1e-12)
    norm = Normalize(vmin=-extreme, vmax=extreme)
    ax.imshow(photo.mean(axis=2), cmap="gray", vmin=0, vmax=1)
    ax.imshow(resized, cmap=SIGNED_CMAP, norm=norm, alpha=alpha)
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    colorbar = add_colorbar(ax, SIGNED_CMAP, label, norm)
    colorbar.ax.yaxis.set_major_formatter("{x:.2g}")
    return ax


def show_box(ax: Axes, box: tuple[int, int, int, int], colour: str = "white", label: str = "") -> None:
    """Outline a box (x0, y0, x1, y1) given in the displayed image's pixels."""
    x0, y0, x1, y1 = box
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, edgecolor=colour, linewidth=2))
    if label:
        ax.text(x0 + 4, y0 + 4, label, color=colour, fontsize=9, va="top")


def plot_maps(
    images: ImageLike | Sequence[ImageLike],
    maps: Tensor | Sequence[Tensor],
    titles: Sequence[str] | None = None,
    ncols: int = 4,
    alpha: float = 0.5,
    cmap: str = DEFAULT_CMAP,
    panel_size: float = 3.0,
    colorbar: bool = True,
) -> Figure:
    """A grid of overlays: one image for all maps, or one image per map; one colour bar for the grid."""
    map_list = list(maps) if not isinstance(maps, Tensor) or maps.dim() == 3 else [maps]
    image_list = list(images) if isinstance(images, Sequence) else [images] * len(map_list)
    if len(image_list) != len(map_list):
        raise ValueError(f"got {len(image_list)} images for {len(map_list)} maps; give one image, or one per map")
    if titles is not None and len(titles) != len(map_list):
        raise ValueError(f"got {len(titles)} titles for {len(map_list)} maps")
    ncols = min(ncols, len(map_list))
    nrows = -(-len(map_list) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(panel_size * ncols, panel_size * nrows), squeeze=False)
    for index, ax in enumerate(axes.flat):
        if index < len(map_list):
            show_overlay(ax, image_list[index], map_list[index], titles[index] if titles else "", alpha, cmap)
        else:
            ax.axis("off")
    fig.tight_layout()
    if colorbar:
        add_colorbar(list(axes.flat), cmap)
    return fig


def gradient_image(gradient: Tensor, percentile: float = 99.0) -> np.ndarray:
    """A (3, H, W) input gradient as an (H, W, 3) picture: grey at zero, scaled by a high percentile of |g|."""
    if gradient.dim() != 3 or gradient.shape[0] != 3:
        raise ValueError(f"gradient_image takes one (3, H, W) gradient, got shape {tuple(gradient.shape)}")
    g = gradient.detach().cpu().float()
    scale = float(torch.quantile(g.abs().flatten(), percentile / 100))
    if scale == 0:
        return np.full((*g.shape[1:], 3), 0.5, dtype=np.float32)
    return (0.5 + g / (2 * scale)).clamp(0, 1).permute(1, 2, 0).numpy()


def show_gradient(ax: Axes, gradient: Tensor, title: str = "") -> Axes:
    """Draw :func:`gradient_image` on ``ax`` without ticks."""
    ax.imshow(gradient_image(gradient))
    ax.set_title(title, fontsize=10)
    ax.axis("off")
    return ax
