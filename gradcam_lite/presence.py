r"""Which shapes and which colours a scene holds: the multi-label classifier notebooks 11 and 12 evaluate maps on.

Scenes come from :func:`gradcam_lite.worlds.shapes.varied_scene` (1 to 4 objects of sides 8 to 20
pixels). The model (:class:`gradcam_lite.encoders.PooledClassifier`) gives one logit per label of
:data:`LABELS`, the three shapes then the four colours; label :math:`c` is predicted present when
:math:`y^c > 0`, that is :math:`\sigma(y^c) > 1/2`, and it is trained with the binary cross-entropy of
each label. Grad-CAM explains the logit :math:`y^c` at :data:`LAYER`, the 8 x 8 map.

The ground truth of a label in a scene is the union of the masks of the objects that carry it
(:func:`label_mask`): what a map of that label should point at.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn

from .checks import warn_if_training
from .data import load_shipped
from .encoders import PooledClassifier
from .worlds.shapes import COLOURS, IMAGE_SIZE, SHAPES, Box, Scene, batch_images

LABELS = (*SHAPES, *COLOURS)
LAYER = "features.6"


def presence_classifier() -> PooledClassifier:
    """An untrained classifier with one logit per label of :data:`LABELS`."""
    return PooledClassifier(len(LABELS))


def label_of(obj_attribute: str) -> int:
    """The index in :data:`LABELS` of a shape or colour name."""
    if obj_attribute not in LABELS:
        raise ValueError(f"unknown label {obj_attribute!r}; the labels are {LABELS}")
    return LABELS.index(obj_attribute)


def targets(scenes: list[Scene]) -> Tensor:
    """Multi-hot targets (N, len(LABELS)): 1 where a scene holds an object of that shape or colour."""
    present = torch.zeros(len(scenes), len(LABELS))
    for i, scene in enumerate(scenes):
        for obj in scene.objects:
            present[i, label_of(obj.shape)] = present[i, label_of(obj.colour)] = 1
    return present


def label_mask(scene: Scene, label: str) -> Tensor:
    """The pixels (H, W) of every object of the scene whose shape or colour is ``label``; empty if none."""
    label_of(label)
    mask = torch.zeros(IMAGE_SIZE, IMAGE_SIZE, dtype=torch.bool)
    for obj in scene.objects:
        if label in (obj.shape, obj.colour):
            mask |= obj.mask
    return mask


class LabelCase(NamedTuple):
    scene: int  # index into the list of scenes
    label: int  # index into LABELS
    mask: Tensor  # (H, W) bool, every object carrying the label
    box: Box | None  # the object's box when exactly one object carries the label


def present_labels(scenes: list[Scene], seed: int | None = None) -> list[LabelCase]:
    """Every (scene, label) whose label the scene holds, with its ground truth: the cases a map of that label is scored on.

    With a ``seed``, one case per scene instead, its label drawn uniformly among those the scene holds.
    """
    generator = None if seed is None else torch.Generator().manual_seed(seed)
    empty = [i for i, scene in enumerate(scenes) if not scene.objects]
    if empty:
        raise ValueError(f"scenes {empty} hold no object: they have no label to score")
    cases = []
    for i, scene in enumerate(scenes):
        held = [label for label in LABELS if any(label in (o.shape, o.colour) for o in scene.objects)]
        if generator is not None:
            held = [held[int(torch.randint(len(held), (1,), generator=generator))]]
        for label in held:
            carriers = [o for o in scene.objects if label in (o.shape, o.colour)]
            cases.append(LabelCase(i, LABELS.index(label), label_mask(scene, label), carriers[0].box if len(carriers) == 1 else None))
    return cases


@torch.no_grad()
def logits(model: nn.Module, scenes: list[Scene], batch_size: int = 500) -> Tensor:
    """The logits (N, len(LABELS)) of scenes."""
    if not scenes:
        raise ValueError("no scenes given")
    warn_if_training(model)
    device = next(model.parameters()).device
    return torch.cat([model(batch_images(scenes[i : i + batch_size]).to(device)).cpu() for i in range(0, len(scenes), batch_size)])


def accuracy_by_label(model: nn.Module, scenes: list[Scene]) -> dict[str, float]:
    """Per label, the fraction of scenes whose presence the model gets right; ``"exact"``: every label right."""
    correct = (logits(model, scenes) > 0) == targets(scenes).bool()
    return {"exact": float(correct.all(dim=1).float().mean()), **{label: float(correct[:, i].float().mean()) for i, label in enumerate(LABELS)}}


# checkpoint -> the train CLI name that makes it: the presence classifier, and the data-randomisation pair of notebook 13
CHECKPOINTS = {"presence": "presence", "presence_fixed_scenes": "presence_data_randomisation",
               "presence_fixed_scenes_seed1": "presence_data_randomisation", "presence_shuffled_labels": "presence_data_randomisation"}


def load_presence(device: str | torch.device = "cpu", checkpoint: str = "presence") -> PooledClassifier:
    """A shipped presence classifier of :data:`CHECKPOINTS`, checksum verified, in eval mode: by default the one trained
    on fresh scenes; ``"presence_fixed_scenes"`` (and ``"presence_fixed_scenes_seed1"``, from another seed) and
    ``"presence_shuffled_labels"`` were trained on 1024 fixed scenes with true and with shuffled labels
    (:func:`gradcam_lite.train.train_presence_fixed`)."""
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"no presence checkpoint {checkpoint!r}; the checkpoints are {sorted(CHECKPOINTS)}")
    return load_shipped(presence_classifier(), checkpoint, device, trainer=CHECKPOINTS[checkpoint])
