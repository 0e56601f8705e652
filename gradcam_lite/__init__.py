"""gradcam_lite: a small, hook-based Grad-CAM engine for the course's notebooks.

Grad-CAM (Selvaraju et al., ICCV 2017) explains a network's score :math:`y^c` with the map
:math:`\\mathrm{ReLU}(\\sum_k \\alpha^c_k A^k)`, where :math:`A^k` are a layer's feature maps and
:math:`\\alpha^c_k` the spatial average of :math:`\\partial y^c / \\partial A^k`.
"""

from .capture import Capture, capture, resolve_layer
from .maps import cam, grad_cam

__all__ = ["Capture", "cam", "capture", "grad_cam", "resolve_layer"]
