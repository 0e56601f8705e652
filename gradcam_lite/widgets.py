"""Interactive explorers for the notebooks: ``ipywidgets.interactive`` over pure functions.

Each explorer returns the ``interactive`` object; its function draws and also *returns* what it
drew, so a test can set the controls headless and read ``explorer.result``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cache

import ipywidgets as widgets
import matplotlib.pyplot as plt
import torch
from PIL import Image
from torch import Tensor, nn

from . import models
from .maps import grad_cam
from .plotting import show_overlay
from .taylor import channel_slopes, scaled_channel_scores


def taylor_explorer(above: nn.Module, activations: Tensor, target: int, max_eps: float = 2.0) -> widgets.interactive:
    """Score along one channel's scaling, :math:`t \\mapsto y^c(A \\text{ with } A^k \\cdot (1+t))`, beside its tangent."""
    score, slopes = channel_slopes(above, activations, target)

    def show(channel: int, eps: float) -> dict[str, float]:
        ts = torch.linspace(-max_eps, max_eps, 81, dtype=activations.dtype)
        curve = scaled_channel_scores(above, activations, target, channel, ts.tolist())
        actual = float(scaled_channel_scores(above, activations, target, channel, [eps])[0] - score[0])
        predicted = float(eps * slopes[channel])
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.plot(ts, curve, label="actual score $y^c$")
        ax.plot(ts, score[0] + ts * slopes[channel], "--", label="first-order (tangent)")
        ax.axvline(eps, color="grey", lw=0.8)
        ax.set_xlabel(f"scale channel {channel} by 1 + t")
        ax.set_ylabel("class score")
        ax.set_title(f"eps = {eps:.2f}: predicted change {predicted:+.3f}, actual {actual:+.3f}", fontsize=10)
        ax.legend(fontsize=8)
        plt.show()
        return {"predicted": predicted, "actual": actual}

    channel = widgets.IntSlider(value=int(slopes.abs().argmax()), min=0, max=activations.shape[1] - 1, description="channel")
    eps = widgets.FloatSlider(value=0.1, min=-max_eps, max=max_eps, step=0.01, description="eps")
    return widgets.interactive(show, channel=channel, eps=eps)


def gradcam_explorer(model: nn.Module, photos: Mapping[str, Image.Image], layers: Sequence[str]) -> widgets.interactive:
    """Pick a photo, one of its top-5 classes (by rank), a layer and the overlay's opacity."""

    @cache
    def prepared(name: str) -> tuple[Tensor, list[tuple[int, str, float]]]:
        x = models.preprocess(photos[name])
        return x, models.top_classes(model, x, k=5)[0]

    def show(photo: str, rank: int, layer: str, alpha: float) -> dict[str, object]:
        x, top5 = prepared(photo)
        index, name, probability = top5[rank - 1]
        saliency = grad_cam(model, x, index, layer)[0]
        fig, ax = plt.subplots(figsize=(4.5, 4.5))
        show_overlay(ax, photos[photo], saliency, title=f"{name} (p = {probability:.2f}) at {layer}", alpha=alpha)
        plt.show()
        return {"class_index": index, "class_name": name, "map": saliency}

    return widgets.interactive(
        show,
        photo=widgets.Dropdown(options=list(photos), description="photo"),
        rank=widgets.IntSlider(value=1, min=1, max=5, description="class rank"),
        layer=widgets.Dropdown(options=list(layers), value=layers[-1], description="layer"),
        alpha=widgets.FloatSlider(value=0.5, min=0.0, max=1.0, step=0.05, description="alpha"),
    )
