r"""The doctor/nurse classifier of the bias study (notebook 09), trained on biased or balanced clinics.

A small CNN (:class:`gradcam_lite.encoders.PooledClassifier`: convolution blocks, global average pooling and a
linear layer) gives two logits :math:`y^{\text{doctor}}, y^{\text{nurse}}` in the order of
:data:`OCCUPATIONS`: :math:`y^c = \sum_k w^c_k \frac{1}{Z} \sum_{ij} A^k_{ij} + b^c`, so Grad-CAM at
:data:`LAYER`, the 8 x 8 map :math:`A`, is the class activation map up to the factor :math:`1/Z`
that normalising removes (notebook 02). The global
average matters: with the learned, position-specific pooling of the captioner's encoder, the
biased model's maps stayed on the chest, its head share no higher than a uniform map's, although
swapping the hair flipped a third of its predictions.

Two training sets of :data:`TRAINING_SIZE` people differ only in how often the hair agrees with the occupation
(:data:`TRAINING_SETS`); the test set is balanced.

Where a model looks is measured by the share of its map on a mask :math:`M` (the head, the tool),
:math:`\sum_{ij} M_{ij} L_{ij} / \sum_{ij} L_{ij}` (:func:`gradcam_lite.metrics.mask_share`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .data import load_shipped
from .encoders import PooledClassifier
from .maps import grad_cam
from .metrics import mask_share
from .worlds.clinic import GENDERS, OCCUPATIONS, Person

LAYER = "features.6"
# (p_male_doctor, p_female_nurse): the paper's biased training set, and a balanced one
TRAINING_SETS = {"biased": (0.78, 0.93), "balanced": (0.5, 0.5)}
TRAINING_SIZE = 3000
CELLS = tuple((occupation, gender) for occupation in OCCUPATIONS for gender in GENDERS)


class OccupationClassifier(PooledClassifier):
    def __init__(self, channels: int = 64) -> None:
        super().__init__(len(OCCUPATIONS), channels)


def images(people: list[Person]) -> Tensor:
    """The people's drawings as one batch (N, 3, H, W)."""
    if not people:
        raise ValueError("no people given")
    return torch.stack([p.image for p in people])


def typical(people: list[Person]) -> Tensor:
    """Whether each person's hair is the one the biased set favours for the occupation (short for a doctor, long for a nurse)."""
    return torch.tensor([p.gender == ("male" if p.occupation == "doctor" else "female") for p in people])


def tool_visible(people: list[Person]) -> Tensor:
    """Whether any of each person's tool shows (an arm hides it entirely in some drawings)."""
    return torch.tensor([bool(p.tool_mask.any()) for p in people])


def labels(people: list[Person]) -> Tensor:
    """The occupations of people as class indices into :data:`OCCUPATIONS`."""
    return torch.tensor([OCCUPATIONS.index(p.occupation) for p in people])


@torch.no_grad()
def predict(model: nn.Module, people: list[Person], batch_size: int = 500) -> Tensor:
    """Predicted class indices for people."""
    device = next(model.parameters()).device
    return torch.cat([model(images(people[i : i + batch_size]).to(device)).argmax(dim=1).cpu() for i in range(0, len(people), batch_size)])


def accuracy_by_cell(model: nn.Module, people: list[Person]) -> dict[str, float]:
    """Accuracy overall (``"all"``) and in each cell occupation x hair (``"doctor, female"``, ...) present among people."""
    correct = predict(model, people) == labels(people)
    result = {"all": float(correct.float().mean())}
    for occupation, gender in CELLS:
        members = [i for i, p in enumerate(people) if (p.occupation, p.gender) == (occupation, gender)]
        if members:
            result[f"{occupation}, {gender}"] = float(correct[members].float().mean())
    return result


def map_shares(model: nn.Module, people: list[Person], targets: list[int] | None = None) -> dict[str, Tensor]:
    """Per person, the share of the Grad-CAM map of ``targets`` (default: the predicted class) on the head and on the visible tool.

    A person whose tool is entirely hidden has tool share 0 (the mask is empty).
    """
    chosen = predict(model, people).tolist() if targets is None else targets
    if len(chosen) != len(people):
        raise ValueError(f"map_shares got {len(chosen)} targets for {len(people)} people")
    maps = grad_cam(model, images(people).to(next(model.parameters()).device), chosen, LAYER).cpu()
    return {"head": torch.tensor([mask_share(m, p.head_mask) for m, p in zip(maps, people)]),
            "tool": torch.tensor([mask_share(m, p.tool_mask) for m, p in zip(maps, people)])}


def load_classifier(kind: str, device: str | torch.device = "cpu") -> OccupationClassifier:
    """The shipped classifier trained on the ``"biased"`` or the ``"balanced"`` clinic, checksum verified, in eval mode."""
    if kind not in TRAINING_SETS:
        raise ValueError(f"kind must be one of {list(TRAINING_SETS)}, got {kind!r}")
    return load_shipped(OccupationClassifier(), f"clinic_{kind}", device, trainer="clinic")
