"""gradcam_lite: a small, hook-based Grad-CAM engine for the course's notebooks.

Grad-CAM (Selvaraju et al., ICCV 2017) explains a network's score :math:`y^c` with the map
:math:`\\mathrm{ReLU}(\\sum_k \\alpha^c_k A^k)`, where :math:`A^k` are a layer's feature maps and
:math:`\\alpha^c_k` the spatial average of :math:`\\partial y^c / \\partial A^k`.
"""

from .capture import Capture, capture, resolve_layer
from .guided import deconvnet, guided_backprop, guided_grad_cam
from .layouts import TokenGrid
from .maps import cam, grad_cam, grad_cam_pp, hires_cam, smooth_grad_cam_pp

__all__ = [
    "Capture", "TokenGrid", "cam", "capture", "deconvnet", "grad_cam", "grad_cam_pp", "guided_backprop", "guided_grad_cam",
    "hires_cam", "resolve_layer", "smooth_grad_cam_pp",
]
