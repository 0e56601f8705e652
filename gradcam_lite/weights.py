r"""Channel weights: how much each feature map :math:`A^k` matters for the score :math:`y^c`.

Grad-CAM (Selvaraju et al. 2017, eq. 1) weights channel :math:`k` by the spatial average of the
gradient, i.e. the average slope of :math:`y^c` along that channel:

.. math::

    \alpha^c_k = \frac{1}{Z} \sum_i \sum_j \frac{\partial y^c}{\partial A^k_{ij}},
    \qquad Z = H \cdot W.

CAM (Zhou et al. 2016) needs no gradient: on a network that ends in global average pooling and a
linear layer, the weights are the linear layer's own, :math:`w^c_k`, and then
:math:`\alpha^c_k = w^c_k / Z` exactly (notebook 02).
"""

from __future__ import annotations

from torch import Tensor


def grad_cam_weights(gradients: Tensor) -> Tensor:
    r""":math:`\alpha_k = \frac{1}{Z}\sum_{ij} g_{kij}`: gradients (..., C, H, W) -> weights (..., C)."""
    return gradients.mean(dim=(-2, -1))
