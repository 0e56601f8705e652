r"""Adebayo et al.'s sanity checks (*Sanity Checks for Saliency Maps*, NeurIPS 2018): does a map depend on what the
network learned?

**Model randomisation** (notebook 05): re-initialise the weights, from the top layer down, and compare each map with
the trained model's. **Data randomisation** (notebook 13): compare the maps of a model trained on the real labels with
those of the same architecture trained to fit *shuffled* labels
(:func:`gradcam_lite.train.train_presence_fixed`); a method whose map barely changes is explaining the image, not the
model's task. The comparison is the rank correlation :math:`\rho` of the two maps of each image
(:func:`gradcam_lite.metrics.rank_correlation`).
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from .checks import check_finite
from .metrics import rank_correlation


def randomise_weights(module: nn.Module, generator: torch.Generator) -> None:
    r"""Re-initialise, in place, every convolution and linear layer of ``module`` with He-normal weights,
    :math:`w \sim \mathcal{N}(0, 2 / \text{fan-in})`, and zero biases; BatchNorm statistics stay as trained."""
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            with torch.no_grad():
                fan_in = layer.weight[0].numel()
                layer.weight.copy_(torch.randn(layer.weight.shape, generator=generator) * (2 / fan_in) ** 0.5)
                if layer.bias is not None:
                    layer.bias.zero_()


def randomised(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every layer randomised by :func:`randomise_weights` (seeded), in eval mode."""
    copied = copy.deepcopy(model)
    randomise_weights(copied, torch.Generator().manual_seed(seed))
    return copied.eval()


def map_agreement(first: Tensor, second: Tensor) -> Tensor:
    """The rank correlation of each pair of maps (N, H, W) x (N, H, W): one :math:`\\rho` per image, 0 where a map is
    constant (no order to compare, :func:`gradcam_lite.metrics.rank_correlation`)."""
    if first.shape != second.shape or first.dim() != 3:
        raise ValueError(f"map_agreement compares two stacks of maps (N, H, W) of one shape, got {tuple(first.shape)} and {tuple(second.shape)}")
    check_finite(first, "the first maps")
    check_finite(second, "the second maps")
    return torch.tensor([rank_correlation(a, b) for a, b in zip(first, second)])
