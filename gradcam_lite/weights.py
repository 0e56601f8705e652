r"""Channel weights: how much each feature map :math:`A^k` matters for the score :math:`y^c`.

Grad-CAM (Selvaraju et al. 2017, eq. 1) weights channel :math:`k` by the spatial average of the
gradient, i.e. the average slope of :math:`y^c` along that channel:

.. math::

    \alpha^c_k = \frac{1}{Z} \sum_i \sum_j \frac{\partial y^c}{\partial A^k_{ij}},
    \qquad Z = H \cdot W.

HiResCAM (Draelos and Carin 2020) does not average at all: each position keeps its own gradient,
so the map is the element-wise product summed over channels,

.. math::

    L^c_{\text{HiResCAM}} = \mathrm{ReLU}\Big(\sum_k G^{kc} \odot A^k\Big), \qquad G^{kc}_{ij} = \frac{\partial y^c}{\partial A^k_{ij}},

whose sum over positions is the first-order Taylor term :math:`\sum_{kij} G^{kc}_{ij} A^k_{ij}` (notebook 01):
the change of :math:`y^c` predicted when the layer is switched off, spread over the positions it comes
from. Where the gradient is the same at every position (a global-average-pooling head), it equals Grad-CAM
(both are CAM divided by :math:`Z`); where the model reads positions with their own weights, the average :math:`\alpha^c_k`
loses *where* and HiResCAM keeps it.

Grad-CAM++ (Chattopadhyay et al. 2018) weights each position's positive gradient instead of
averaging all gradients alike:

.. math::

    \beta^c_k = \sum_{i,j} a^{kc}_{ij}\, \mathrm{ReLU}(g^k_{ij}), \qquad
    a^{kc}_{ij} = \frac{(g^k_{ij})^2}{2 (g^k_{ij})^2 + \big(\sum_{a,b} A^k_{ab}\big) (g^k_{ij})^3},

with :math:`g = \partial y^c / \partial A` and :math:`a = 0` where the denominator is 0. The
closed form comes from the exponential score :math:`\exp(y^c)`: for a piecewise-linear network
the second and third derivatives of :math:`y^c` vanish, so
:math:`\partial^n \exp(y^c) / \partial A^n = \exp(y^c)\, g^n`. The factor :math:`\exp(y^c)` cancels in
:math:`a` and multiplies every :math:`\beta^c_k` alike, so it only rescales the map, which
normalisation removes; the code therefore never forms :math:`\exp(y^c)`. Note the *channel's
total activation* :math:`\sum_{ab} A^k_{ab}` times :math:`g^3` at :math:`(i, j)`, as in the paper and
its authors' code; summing :math:`A^k_{ab} g^3_{ab}` instead differs wherever the gradient varies in
space. The derivation assumes non-negative activations (a layer after a ReLU): then the
denominator :math:`g^2 (2 + g \sum_{ab} A^k_{ab})` is positive wherever :math:`g > 0` and every
:math:`\beta^c_k \ge 0`. Where activations can be negative (an MBConv block ends in a linear
projection), a channel with :math:`g \sum_{ab} A^k_{ab} < -2` gets :math:`a < 0`, so :math:`\beta^c_k < 0`.
Smooth Grad-CAM++ (Omeiza et al. 2019) replaces :math:`g, g^2, g^3` by averages over noisy copies
of the input (:func:`gradcam_lite.maps.smooth_grad_cam_pp`).

CAM (Zhou et al. 2016) needs no gradient: on a network that ends in global average pooling and a
linear layer, the weights are the linear layer's own, :math:`w^c_k`, and then
:math:`\alpha^c_k = w^c_k / Z` exactly (notebook 02).
"""

from __future__ import annotations

import torch
from torch import Tensor


def grad_cam_weights(gradients: Tensor) -> Tensor:
    r""":math:`\alpha_k = \frac{1}{Z}\sum_{ij} g_{kij}`: gradients (..., C, H, W) -> weights (..., C)."""
    return gradients.mean(dim=(-2, -1))


def hires_cam_weights(gradients: Tensor) -> Tensor:
    r"""HiResCAM's weights are the gradients themselves, :math:`G^{kc}_{ij}`, one per position: (..., C, H, W) -> the same."""
    return gradients


def grad_cam_pp_weights(g1: Tensor, g2: Tensor, g3: Tensor, activations: Tensor) -> Tensor:
    """Grad-CAM++ weights :math:`\\beta` (B, K, C) from the first, second and third powers of the gradient (B, K, C, H, W)
    (or their averages, for Smooth Grad-CAM++) and the activations (B, C, H, W)."""
    total = activations.sum(dim=(-2, -1), keepdim=True).unsqueeze(1)
    denominator = 2 * g2 + total * g3
    nonzero = denominator != 0
    pixel_weights = torch.where(nonzero, g2 / torch.where(nonzero, denominator, torch.ones_like(denominator)), torch.zeros_like(g2))
    return (pixel_weights * g1.clamp(min=0)).sum(dim=(-2, -1))
