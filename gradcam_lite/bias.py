r"""The doctor/nurse classifiers of the bias study (notebooks 09 and 14), trained on biased or balanced clinics.

The main model is a small CNN (:class:`gradcam_lite.encoders.PooledClassifier`: convolution blocks, global average
pooling and a linear layer) with two logits :math:`y^{\text{doctor}}, y^{\text{nurse}}` in the order of
:data:`OCCUPATIONS`: :math:`y^c = \sum_k w^c_k \frac{1}{Z} \sum_{ij} A^k_{ij} + b^c`, so Grad-CAM at
:data:`LAYER`, the 8 x 8 map :math:`A`, is the class activation map up to the factor :math:`1/Z`
that normalising removes (notebook 02). :class:`LearnedPoolingClassifier` replaces the average by the
captioner's learned, position-specific pooling, :math:`y^c = \sum_m v^c_m \,\mathrm{ReLU}(\sum_{k,ij} W_{m,kij} A^k_{ij} + b_m) + b^c`,
whose gradient :math:`\partial y^c / \partial A^k_{ij}` changes sign from position to position, so that
Grad-CAM's average :math:`\alpha^c_k` can cancel what the model reads at one place (notebook 14).

Training sets of :data:`TRAINING_SIZE` people differ only in how often the hair agrees with the occupation
(:data:`TRAINING_SETS`); the test set is balanced. :data:`CLASSIFIERS` lists every shipped model.

Where a model looks is measured by the share of its map on a mask :math:`M` (the head, the tool, ...),
:math:`\sum_{ij} M_{ij} L_{ij} / \sum_{ij} L_{ij}` (:func:`gradcam_lite.metrics.mask_share`); what it uses, by
redrawing the same people with one thing changed (:data:`INTERVENTIONS`) and measuring the change of the true
class's logit :math:`y^c`.
"""


from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .data import load_shipped
from .encoders import Encoder, PooledClassifier
from .maps import grad_cam
from .metrics import mask_share, tolerant_mask
from .worlds.clinic import GENDERS, IMAGE_SIZE, OCCUPATIONS, Person, other, redraw

LAYER = "features.6"  # the 8 x 8 map A
FINER_LAYER = "features.4"  # the last 16 x 16 map, before the last max-pooling
CELL = IMAGE_SIZE // 8  # one cell of LAYER's map, in pixels
# (p_male_doctor, p_female_nurse): the paper's biased training set, and a balanced one
TRAINING_SETS = {"biased": (0.78, 0.93), "balanced": (0.5, 0.5)}
TRAINING_SIZE = 3000
CELLS = tuple((occupation, gender) for occupation in OCCUPATIONS for gender in GENDERS)


def hair_agreement(p_male_doctor: float, p_female_nurse: float) -> float:
    """The fraction of a training set (half doctors, half nurses) whose hair agrees with the stereotype: the mean of the two."""
    return (p_male_doctor + p_female_nurse) / 2


class OccupationClassifier(PooledClassifier):
    """Convolution blocks, the global average and a linear layer (:class:`gradcam_lite.encoders.PooledClassifier`)."""

    def __init__(self, channels: int = 64) -> None:
        super().__init__(len(OCCUPATIONS), channels)


class LearnedPoolingClassifier(Encoder):
    """The captioner's encoder (convolution blocks, a learned linear pooling of the whole 8 x 8 map, ReLU) and a linear layer."""

    def __init__(self, channels: int = 64, dim: int = 192) -> None:
        super().__init__(channels, dim)
        self.head = nn.Linear(dim, len(OCCUPATIONS))

    def forward(self, images: Tensor) -> Tensor:
        return self.head(super().forward(images))


class Classifier(NamedTuple):
    checkpoint: str
    trainer: str  # the name of its python -m gradcam_lite.train command
    architecture: type[nn.Module]
    training_set: str  # a key of TRAINING_SETS
    badges: bool  # trained on the clinic where everyone wears a badge of its gender's colour


CLASSIFIERS = {
    "biased": Classifier("clinic_biased", "clinic", OccupationClassifier, "biased", False),
    "balanced": Classifier("clinic_balanced", "clinic", OccupationClassifier, "balanced", False),
    "learned_pooling_biased": Classifier("clinic_learned_pooling_biased", "clinic_learned_pooling", LearnedPoolingClassifier, "biased", False),
    "learned_pooling_balanced": Classifier("clinic_learned_pooling_balanced", "clinic_learned_pooling", LearnedPoolingClassifier, "balanced", False),
    "badge_biased": Classifier("clinic_badge_biased", "clinic_badge", OccupationClassifier, "biased", True),
    "badge_balanced": Classifier("clinic_badge_balanced", "clinic_badge", OccupationClassifier, "balanced", True),
}


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
def logits(model: nn.Module, people: list[Person], batch_size: int = 500) -> Tensor:
    """The logits (N, 2) of people."""
    device = next(model.parameters()).device
    return torch.cat([model(images(people[i : i + batch_size]).to(device)).cpu() for i in range(0, len(people), batch_size)])


def predict(model: nn.Module, people: list[Person], batch_size: int = 500) -> Tensor:
    """Predicted class indices for people."""
    return logits(model, people, batch_size).argmax(dim=1)


def true_class_scores(model: nn.Module, people: list[Person]) -> Tensor:
    """Each person's logit :math:`y^c` of the true occupation c."""
    return logits(model, people)[torch.arange(len(people)), labels(people)]


def accuracy_by_cell(model: nn.Module, people: list[Person]) -> dict[str, float]:
    """Accuracy overall (``"all"``) and in each cell occupation x hair (``"doctor, female"``, ...) present among people."""
    correct = predict(model, people) == labels(people)
    result = {"all": float(correct.float().mean())}
    for occupation, gender in CELLS:
        members = [i for i, p in enumerate(people) if (p.occupation, p.gender) == (occupation, gender)]
        if members:
            result[f"{occupation}, {gender}"] = float(correct[members].float().mean())
    return result


def atypical_accuracy(model: nn.Module, people: list[Person]) -> float:
    """The mean of the accuracies on the two atypical cells (female doctors, male nurses), each cell weighing alike."""
    accuracy = accuracy_by_cell(model, people)
    return (accuracy["doctor, female"] + accuracy["nurse, male"]) / 2


def regions(person: Person) -> dict[str, Tensor]:
    """The person's masks a map is scored on: ``head`` (with the hair), ``tool`` (its visible part), ``tool_nearby`` (the
    pixels within one cell of :data:`LAYER`'s map of the visible tool: empty when it is hidden), ``badge`` and
    ``badge_nearby`` (empty without a badge)."""
    def nearby(mask: Tensor) -> Tensor:
        return tolerant_mask(mask, CELL) if mask.any() else mask

    return {"head": person.head_mask, "tool": person.tool_mask, "tool_nearby": nearby(person.tool_mask), "badge": person.badge_mask,
            "badge_nearby": nearby(person.badge_mask)}


def map_shares(model: nn.Module, people: list[Person], targets: list[int] | None = None, layer: str = LAYER,
               explain: Callable[..., Tensor] = grad_cam) -> dict[str, Tensor]:
    """Per person, the share of the map of ``targets`` (default: the predicted class) on each of its :func:`regions`.

    ``explain`` makes the maps (:func:`gradcam_lite.grad_cam` by default; any method of its signature, ``hires_cam``
    say) at ``layer``. A region that is empty (a hidden tool, no badge) has share 0.
    """
    chosen = predict(model, people).tolist() if targets is None else targets
    if len(chosen) != len(people):
        raise ValueError(f"map_shares got {len(chosen)} targets for {len(people)} people")
    maps = explain(model, images(people).to(next(model.parameters()).device), chosen, layer).cpu()
    masks = [regions(p) for p in people]
    return {name: torch.tensor([mask_share(m, r[name]) for m, r in zip(maps, masks)]) for name in masks[0]}


def uniform_shares(people: list[Person], within: str = "image") -> dict[str, Tensor]:
    """The shares of :func:`regions` that a map uniform over the whole image (``within="image"``: each region's area
    fraction), over the person (``within="person"``: head and body, a map that knows where the person is) or over the
    coat (``within="coat"``: the body, a map that knows where the tool can be) would score."""
    supports = {"image": lambda p: torch.ones_like(p.head_mask), "person": lambda p: p.head_mask | p.body_mask, "coat": lambda p: p.body_mask}
    if within not in supports:
        raise ValueError(f"within must be one of {list(supports)}, got {within!r}")
    shares = {}
    for person in people:
        support = supports[within](person)
        for name, mask in regions(person).items():
            shares.setdefault(name, []).append(float((mask & support).sum()) / float(support.sum()))
    return {name: torch.tensor(values) for name, values in shares.items()}


def recoloured_badge(person: Person) -> Person:
    """The person with the badge of the other gender's colour (the hair kept)."""
    if person.badge is None:
        raise ValueError(f"person {person.seed} has no badge to recolour")
    return redraw(person, badge=other(person.badge))


INTERVENTIONS: dict[str, Callable[[Person], Person]] = {
    "hair swapped": lambda p: redraw(p, gender=other(p.gender)),
    "tool painted out": lambda p: redraw(p, tool=False),
    "both": lambda p: redraw(p, gender=other(p.gender), tool=False),
    "badge recoloured": recoloured_badge,
}


def intervene(people: list[Person], change: str) -> list[Person]:
    """The same people redrawn with one of :data:`INTERVENTIONS` (the rest of every drawing pixel for pixel as it was)."""
    if change not in INTERVENTIONS:
        raise ValueError(f"change must be one of {list(INTERVENTIONS)}, got {change!r}")
    return [INTERVENTIONS[change](p) for p in people]


def affected(people: list[Person], change: str) -> Tensor:
    """The people whose :math:`y^c` a change can lower if the model uses what it changes: the typical people for a change of
    the gender cue (made atypical; the atypical ones are made typical, the opposite), those whose tool shows for its removal."""
    if change not in INTERVENTIONS:
        raise ValueError(f"change must be one of {list(INTERVENTIONS)}, got {change!r}")
    gender, tool = typical(people), tool_visible(people)
    return {"hair swapped": gender, "badge recoloured": gender, "tool painted out": tool, "both": gender & tool}[change]


def intervention_logits(model: nn.Module, people: list[Person], edited: dict[str, list[Person]]) -> dict[str, Tensor]:
    """The logits (N, 2) of the people as drawn (``"original"``) and as redrawn by each change of ``edited``
    (``{change: intervene(people, change)}``)."""
    if any(len(redrawn) != len(people) for redrawn in edited.values()):
        raise ValueError(f"every redrawn list must hold the {len(people)} people, got lengths {[len(r) for r in edited.values()]}")
    return {"original": logits(model, people), **{change: logits(model, redrawn) for change, redrawn in edited.items()}}


def score_drops(outputs: dict[str, Tensor], people: list[Person]) -> dict[str, Tensor]:
    r"""Per change of :func:`intervention_logits`, each person's drop of the true class's logit,
    :math:`\Delta_i = y^c(x_i) - y^c(\tilde x_i)`: positive where what the change removed was evidence for :math:`c`."""
    index, classes = torch.arange(len(people)), labels(people)
    before = outputs["original"][index, classes]
    return {change: before - out[index, classes] for change, out in outputs.items() if change != "original"}


def study_figures(model: nn.Module, test: list[Person], edited: dict[str, list[Person]]) -> dict[str, float]:
    """One model's figures on balanced test people: accuracy (all, :func:`atypical_accuracy`), mean map shares of the predicted class
    (head over all, tool and tool_nearby over the people whose tool shows, at :data:`LAYER`; tool also at
    :data:`FINER_LAYER`), and for each intervention in ``edited`` (``intervene(test, change)``) the mean change of the
    true class's logit :math:`y^c` over the :func:`affected` people and the accuracy over everyone after it."""
    visible, classes = tool_visible(test), labels(test)
    outputs = intervention_logits(model, test, edited)
    drops, predicted = score_drops(outputs, test), outputs["original"].argmax(dim=1)
    correct = predicted == classes
    shares, finer = (map_shares(model, test, predicted.tolist(), layer) for layer in (LAYER, FINER_LAYER))
    figures = {"test_accuracy": float(correct.float().mean()), "atypical_accuracy": atypical_accuracy(model, test),
               "head_share": float(shares["head"].mean()), "tool_share": float(shares["tool"][visible].mean()),
               "tool_nearby_share": float(shares["tool_nearby"][visible].mean()), "tool_share_16x16": float(finer["tool"][visible].mean())}
    for change in edited:
        key = change.replace(" ", "_")
        figures[f"{key}_score_change"] = -float(drops[change][affected(test, change)].mean())
        figures[f"{key}_accuracy"] = float((outputs[change].argmax(dim=1) == classes).float().mean())
    return figures


def load_classifier(kind: str, device: str | torch.device = "cpu") -> nn.Module:
    """A shipped classifier of :data:`CLASSIFIERS` (``"biased"``, ``"balanced"``, ``"learned_pooling_biased"``, ...),
    checksum verified, in eval mode."""
    if kind not in CLASSIFIERS:
        raise ValueError(f"kind must be one of {list(CLASSIFIERS)}, got {kind!r}")
    entry = CLASSIFIERS[kind]
    return load_shipped(entry.architecture(), entry.checkpoint, device, trainer=entry.trainer)
