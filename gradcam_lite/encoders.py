r"""The small image encoder the task models share (captioning, VQA), and the classifier built on its features (bias study, presence).

Four convolution blocks (3 x 3 convolution, BatchNorm, ReLU), three of them followed by 2 x 2
max-pooling, take a 64 x 64 image to an 8 x 8 feature map :math:`A` (``features[-1]``, the layer
Grad-CAM explains). A learned linear pooling of :math:`A`, not a global average, makes the image
vector: the tasks need *where* each object is (left to right in a caption, "left of" in a question),
and a global average of features that carry no position would lose it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .worlds.shapes import IMAGE_SIZE

FEATURE_SIZE = IMAGE_SIZE // 8  # the last feature map is 8 x 8


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


def feature_extractor(channels: int = 64) -> nn.Sequential:
    """The four convolution blocks: a 64 x 64 image to an 8 x 8 x ``channels`` feature map."""
    return nn.Sequential(
        conv_block(3, 16), nn.MaxPool2d(2),  # 32 x 32
        conv_block(16, 32), nn.MaxPool2d(2),  # 16 x 16
        conv_block(32, 64), nn.MaxPool2d(2),  # 8 x 8
        conv_block(64, channels),
    )


class Encoder(nn.Module):
    """64 x 64 image -> 8 x 8 x ``channels`` feature map -> image vector of size ``dim``."""

    def __init__(self, channels: int = 64, dim: int = 192) -> None:
        super().__init__()
        self.features = feature_extractor(channels)
        self.pool = nn.Linear(channels * FEATURE_SIZE * FEATURE_SIZE, dim)

    def forward(self, images: Tensor) -> Tensor:
        return torch.relu(self.pool(self.features(images).flatten(1)))


class PooledClassifier(nn.Module):
    r"""The four convolution blocks, global average pooling and a linear layer: :math:`y^c = \sum_k w^c_k \frac{1}{Z}\sum_{ij} A^k_{ij} + b^c`.

    With this head Grad-CAM at ``features`` (the 8 x 8 map :math:`A`) is CAM up to a positive factor
    (notebook 02). The classifiers of the bias study and of the presence task are this model.
    """

    def __init__(self, outputs: int, channels: int = 64) -> None:
        super().__init__()
        self.features = feature_extractor(channels)
        self.head = nn.Linear(channels, outputs)

    def forward(self, images: Tensor) -> Tensor:
        return self.head(self.features(images).mean(dim=(2, 3)))
