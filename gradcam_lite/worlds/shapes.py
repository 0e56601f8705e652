r"""A world of coloured shapes on a textured background, where every caption and answer is known.

In the spirit of CLEVR and Sort-of-CLEVR: a scene is a :data:`IMAGE_SIZE` x :data:`IMAGE_SIZE`
RGB image (64 x 64 pixels) holding 1 to 3 non-overlapping objects, each a ``shape``
(:data:`SHAPES`) of a ``colour`` (:data:`COLOURS`) and a ``size`` (:data:`SIZES`), with its box and
its pixel mask. The background is grey with a smooth random texture plus pixel noise, so that a
map cannot find the objects merely by looking for flat colour.

The caption names the objects from left to right (by the centre of their boxes, at least
:data:`MIN_GAP` pixels apart, so the order is never ambiguous): "a small red circle and a large
blue square".

Two variants serve notebooks 06 and 10: :func:`varied_scene` (1 to 4 objects of any side from 8 to 20
pixels, the world of the presence classifier) and :func:`instances_scene` (several instances of one
shape, each of another size).

Everything is a function of a seed: scene ``s`` is drawn from ``numpy.random.default_rng(s)``.
Training, validation and test scenes come from the disjoint seed ranges of :data:`SPLITS`.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.axes import Axes
from skimage.draw import disk, polygon
from skimage.measure import find_contours
from torch import Tensor

IMAGE_SIZE = 64
SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (0.85, 0.15, 0.12), "green": (0.15, 0.70, 0.20), "blue": (0.15, 0.30, 0.90), "yellow": (0.92, 0.85, 0.15)}
SIZES = {"small": 10, "large": 18}  # side of the bounding square, in pixels
MAX_OBJECTS = 3
MIN_GAP = 4  # the centres of two objects differ by at least this many pixels horizontally
VARIED_SIDES = tuple(range(8, 21))  # sides of the objects of varied scenes, in pixels
MAX_VARIED_OBJECTS = 4
SPLITS = {"train": range(0, 1_000_000), "validation": range(1_000_000, 1_010_000), "test": range(2_000_000, 2_010_000)}

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1), x1 and y1 exclusive


@dataclass(frozen=True)
class ShapeObject:
    shape: str
    colour: str
    size: str
    box: Box
    mask: Tensor  # (H, W) bool

    @property
    def words(self) -> tuple[str, str, str]:
        return (self.size, self.colour, self.shape)


@dataclass(frozen=True)
class Scene:
    seed: int
    image: Tensor  # (3, H, W) float32 in [0, 1]
    objects: tuple[ShapeObject, ...]  # left to right
    background: Tensor | None = None  # (3, H, W): the image before any object was painted on it

    @property
    def caption(self) -> str:
        return " and ".join("a " + " ".join(o.words) for o in self.objects)


def shape_mask(shape: str, box: Box) -> np.ndarray:
    """The pixels of ``shape`` drawn to fill ``box``, as an (H, W) bool array."""
    x0, y0, x1, y1 = box
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    if shape == "circle":
        rows, cols = disk(((y0 + y1 - 1) / 2, (x0 + x1 - 1) / 2), (x1 - x0) / 2, shape=mask.shape)
    elif shape == "square":
        rows, cols = polygon([y0, y0, y1 - 1, y1 - 1], [x0, x1 - 1, x1 - 1, x0], shape=mask.shape)
    elif shape == "triangle":
        rows, cols = polygon([y1 - 1, y0, y1 - 1], [x0, (x0 + x1 - 1) / 2, x1 - 1], shape=mask.shape)
    else:
        raise ValueError(f"unknown shape {shape!r}; the world has {SHAPES}")
    mask[rows, cols] = True
    return mask


def background(rng: np.random.Generator) -> np.ndarray:
    """Grey with a smooth random texture (a 4 x 4 grid of offsets, upsampled) and pixel noise: (H, W, 3)."""
    coarse = torch.from_numpy(rng.normal(0.0, 0.06, size=(1, 3, 4, 4)).astype(np.float32))
    texture = F.interpolate(coarse, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bicubic", align_corners=False)[0].permute(1, 2, 0).numpy()
    noise = rng.normal(0.0, 0.03, size=(IMAGE_SIZE, IMAGE_SIZE, 3))
    return 0.5 + texture + noise


def place_boxes(rng: np.random.Generator, sizes: list[int]) -> list[Box] | None:
    """Non-overlapping boxes (with a one-pixel margin) whose centres differ by >= MIN_GAP in x, or None."""
    boxes: list[Box] = []
    for side in sizes:
        for _ in range(50):
            x0, y0 = (int(v) for v in rng.integers(1, IMAGE_SIZE - side, size=2))
            box = (x0, y0, x0 + side, y0 + side)
            apart = all(box[2] + 1 <= b[0] or b[2] + 1 <= box[0] or box[3] + 1 <= b[1] or b[3] + 1 <= box[1] for b in boxes)
            distinct = all(abs((box[0] + box[2]) - (b[0] + b[2])) >= 2 * MIN_GAP for b in boxes)
            if apart and distinct:
                boxes.append(box)
                break
        else:
            return None
    return boxes


def size_word(side: int) -> str:
    """The word of :data:`SIZES` nearest to a side (exact for the captioned scenes' two sides)."""
    return min(SIZES, key=lambda word: abs(SIZES[word] - side))


def draw_scene(seed: int, rng: np.random.Generator, attributes: list[tuple[str, str, int]], boxes: list[Box]) -> Scene:
    """Paint objects (shape, colour, side) into their boxes (side x side, from :func:`place_boxes`) on a fresh background drawn from ``rng``."""
    if len(attributes) != len(boxes) or any(box[2] - box[0] != side or box[3] - box[1] != side for (_, _, side), box in zip(attributes, boxes)):
        raise ValueError(f"each of the {len(attributes)} objects needs a box of its side, got boxes {boxes} for sides {[side for *_, side in attributes]}")
    image = background(rng)
    bare = np.clip(image, 0, 1).astype(np.float32)
    objects = []
    for (shape, colour, side), box in zip(attributes, boxes):
        mask = shape_mask(shape, box)
        shade = rng.uniform(-0.05, 0.05)  # objects too are not one flat colour across scenes
        image[mask] = np.clip(np.array(COLOURS[colour]) + shade, 0, 1) + rng.normal(0.0, 0.02, size=(int(mask.sum()), 3))
        objects.append(ShapeObject(shape, colour, size_word(side), box, torch.from_numpy(mask)))
    objects.sort(key=lambda o: o.box[0] + o.box[2])
    pixels = torch.from_numpy(np.clip(image, 0, 1).astype(np.float32)).permute(2, 0, 1).contiguous()
    return Scene(seed, pixels, tuple(objects), torch.from_numpy(bare).permute(2, 0, 1).contiguous())


def without_objects(scene: Scene, indices: Sequence[int]) -> Tensor:
    """The scene's image (3, H, W) with the objects ``indices`` removed: the background they were painted on
    restored under their masks (objects never overlap), everything else unchanged. An intervention: does the
    model's score depend on those objects?"""
    if scene.background is None:
        raise ValueError("the scene keeps no background to restore (made before backgrounds were kept?)")
    unknown = [i for i in indices if not 0 <= i < len(scene.objects)]
    if unknown:
        raise ValueError(f"the scene has {len(scene.objects)} objects, no object {unknown}")
    removed = torch.zeros(scene.image.shape[1:], dtype=torch.bool)
    for i in indices:
        removed |= scene.objects[i].mask
    return torch.where(removed, scene.background, scene.image)


def random_attributes(rng: np.random.Generator, n: int, side: Callable[[], int]) -> list[tuple[str, str, int]]:
    """``n`` objects' (shape, colour, side), shape and colour uniform, the side from ``side()``, drawn in that order."""
    return [(SHAPES[rng.integers(len(SHAPES))], list(COLOURS)[rng.integers(len(COLOURS))], side()) for _ in range(n)]


def placed_scene(seed: int, rng: np.random.Generator, draw_attributes: Callable[[], list[tuple[str, str, int]]]) -> Scene:
    """Draw objects' attributes until :func:`place_boxes` fits them, then paint the scene."""
    while True:
        attributes = draw_attributes()
        boxes = place_boxes(rng, [side for _, _, side in attributes])
        if boxes is not None:
            return draw_scene(seed, rng, attributes, boxes)


def make_scene(seed: int) -> Scene:
    """The scene of one seed: 1 to :data:`MAX_OBJECTS` objects of the two :data:`SIZES`, captioned."""
    rng = np.random.default_rng(seed)
    return placed_scene(seed, rng, lambda: random_attributes(rng, int(rng.integers(1, MAX_OBJECTS + 1)),
                                                             lambda: SIZES[list(SIZES)[rng.integers(len(SIZES))]]))


def varied_scene(seed: int) -> Scene:
    """A scene of 1 to :data:`MAX_VARIED_OBJECTS` objects of any side in :data:`VARIED_SIDES` (the world of the
    presence classifier, :mod:`gradcam_lite.presence`; the words of its captions round each side to a size word)."""
    rng = np.random.default_rng(seed)
    return placed_scene(seed, rng, lambda: random_attributes(rng, int(rng.integers(1, MAX_VARIED_OBJECTS + 1)),
                                                             lambda: int(rng.choice(VARIED_SIDES))))


def instances_scene(seed: int, shape: str, count: int) -> Scene:
    """``count`` instances of ``shape``, each of another side (drawn without replacement from :data:`VARIED_SIDES`)
    and a random colour, and nothing else: the several-instances test of Grad-CAM++ (notebooks 06 and 10)."""
    if shape not in SHAPES:
        raise ValueError(f"unknown shape {shape!r}; the world has {SHAPES}")
    if not 1 <= count <= MAX_VARIED_OBJECTS:
        raise ValueError(f"count must lie in 1..{MAX_VARIED_OBJECTS}, got {count}")
    rng = np.random.default_rng(seed)

    def instances() -> list[tuple[str, str, int]]:
        sides = [int(side) for side in rng.choice(VARIED_SIDES, size=count, replace=False)]
        return [(shape, list(COLOURS)[rng.integers(len(COLOURS))], side) for side in sides]

    return placed_scene(seed, rng, instances)


def make_scenes(n: int, seed: int, maker: Callable[[int], Scene] = make_scene) -> list[Scene]:
    """Scenes of the seeds ``seed, seed + 1, ..., seed + n - 1`` (``maker``: :func:`make_scene` or :func:`varied_scene`)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [maker(seed + i) for i in range(n)]


def split_scenes(split: str, n: int, start: int = 0, maker: Callable[[int], Scene] = make_scene) -> list[Scene]:
    """``n`` scenes of a split (``"train"``, ``"validation"``, ``"test"``), from its ``start``-th seed on."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; the splits are {list(SPLITS)}")
    seeds = SPLITS[split]
    if start < 0 or start + n > len(seeds):
        raise ValueError(f"the {split} split has {len(seeds)} seeds; scenes {start} to {start + n - 1} lie outside it")
    return make_scenes(n, seeds[start], maker)


def batch_images(scenes: list[Scene]) -> Tensor:
    """The images of scenes as one batch (B, 3, H, W)."""
    return torch.stack([s.image for s in scenes])


def show_scene(ax: Axes, scene: Scene, title: str | None = None, outline: bool = True) -> Axes:
    """Draw a scene with each object's mask outlined in white and its caption as the title."""
    ax.imshow(scene.image.permute(1, 2, 0).numpy(), interpolation="nearest")
    if outline:
        outline_objects(ax, scene)
    ax.set_title(textwrap.fill(scene.caption if title is None else title, 30), fontsize=8)
    ax.axis("off")
    return ax


def outline_objects(ax: Axes, scene: Scene, colour: str = "white", scale: float = 1.0) -> None:
    """Outline each object's mask on ``ax`` (over a picture of the scene, or of a map ``scale`` times its size)."""
    for obj in scene.objects:
        for contour in find_contours(obj.mask.numpy().astype(float), 0.5):
            ax.plot(contour[:, 1] * scale, contour[:, 0] * scale, color=colour, lw=1)


# --- questions about a scene, with their answers and the object each refers to -------------------

QUESTION_TYPES = ("colour", "shape", "exists", "count", "left_of")
COUNT_WORDS = ("zero", "one", "two")
ANSWERS = (*COLOURS, *SHAPES, "yes", "no", *COUNT_WORDS)


@dataclass(frozen=True)
class Question:
    text: str
    answer: str
    type: str
    mask: Tensor | None  # (H, W) bool: the object the question refers to; None when it refers to no single object
    refers_to: int | None = None  # that object's index in the scene's objects (left to right)
    names: int | None = None  # for left_of: the index of the object the question names (right of the one it refers to)


def candidate_questions(scene: Scene) -> list[Question]:
    """Every question the scene answers, of the five types of :data:`QUESTION_TYPES`.

    - colour: "what colour is the circle ?", asked only of a shape that is unique in the scene;
    - shape: "what shape is the red object ?", of a colour unique in the scene;
    - exists: "is there a red circle ?", yes or no; it refers to the object when there is exactly one;
    - count: "how many red objects ?", zero to two (refers to no single object);
    - left_of: "what shape is left of the red object ?": the nearest object to the left of the
      object of a unique colour (objects are at least MIN_GAP apart in x, so "nearest" is defined;
      the words do not say "nearest", so with two objects on the left the answer is the nearer one's).
    """
    objects = scene.objects  # left to right
    questions = []
    for shape in SHAPES:
        named = [i for i, o in enumerate(objects) if o.shape == shape]
        if len(named) == 1:
            i = named[0]
            questions.append(Question(f"what colour is the {shape} ?", objects[i].colour, "colour", objects[i].mask, i))
    for colour in COLOURS:
        named = [i for i, o in enumerate(objects) if o.colour == colour]
        if len(named) == 1:
            i = named[0]
            questions.append(Question(f"what shape is the {colour} object ?", objects[i].shape, "shape", objects[i].mask, i))
            if i > 0:
                questions.append(Question(f"what shape is left of the {colour} object ?", objects[i - 1].shape, "left_of", objects[i - 1].mask, i - 1, i))
        if len(named) < len(COUNT_WORDS):
            questions.append(Question(f"how many {colour} objects ?", COUNT_WORDS[len(named)], "count", None))
        for shape in SHAPES:
            matching = [i for i, o in enumerate(objects) if o.colour == colour and o.shape == shape]
            refers_to = matching[0] if len(matching) == 1 else None
            mask = None if refers_to is None else objects[refers_to].mask
            questions.append(Question(f"is there a {colour} {shape} ?", "yes" if matching else "no", "exists", mask, refers_to))
    return questions


def make_questions(scene: Scene, seed: int) -> list[Question]:
    """One question of each type the scene can answer, chosen at random (``seed``) among its candidates."""
    rng = np.random.default_rng(seed)
    candidates = candidate_questions(scene)
    chosen = []
    for kind in QUESTION_TYPES:
        of_kind = [q for q in candidates if q.type == kind]
        if of_kind:
            chosen.append(of_kind[rng.integers(len(of_kind))])
    return chosen


def balanced_questions(scenes: list[Scene], n: int, seed: int) -> list[tuple[Scene, Question]]:
    """``n`` (scene, question) pairs from a pool of scenes, with the types uniform and, within each
    type, the answers uniform over those the pool can give (a model cannot win by always saying "yes")."""
    rng = np.random.default_rng(seed)
    by_answer: dict[tuple[str, str], list[tuple[Scene, Question]]] = {}
    for scene in scenes:
        for question in candidate_questions(scene):
            by_answer.setdefault((question.type, question.answer), []).append((scene, question))
    pairs = []
    for _ in range(n):
        kind = QUESTION_TYPES[rng.integers(len(QUESTION_TYPES))]
        answers = sorted(answer for k, answer in by_answer if k == kind)
        if not answers:
            raise ValueError(f"no scene in the pool answers a {kind!r} question; pass more scenes")
        options = by_answer[kind, answers[rng.integers(len(answers))]]
        pairs.append(options[rng.integers(len(options))])
    return pairs
