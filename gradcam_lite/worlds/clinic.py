r"""A clinic of drawn people, doctors and nurses, with a cue that is real and one that is spurious.

Each person is a 64 x 64 drawing: a head with hair, a body in a coat, on the textured background of
the shapes world. The *real* cue of the occupation is a small tool on the coat: a stethoscope for
a doctor, a syringe for a nurse, both of one faint grey (15-45 % of the way from the coat's colour
to dark grey, under pixel noise), so that only their shape tells them apart; it is small, placed
anywhere on the chest, and in half of the drawings an arm covers it, partly (four in ten) or
entirely (one in ten), so it is a real cue but a harder one than the hair (and where it is hidden,
nothing in the drawing tells the occupation). The *hair* (long or short) stands in for the gender
cue the paper found its model using: "male" people have short hair, "female" people long hair down to the shoulders. Skin, hair and coat
colours, size and position vary and carry no information about the occupation.

``make_people(n, seed, p_male_doctor, p_female_nurse)`` draws half doctors and half nurses; a
doctor is male with probability ``p_male_doctor``, a nurse female with probability
``p_female_nurse`` (the paper's biased training set: 0.78 and 0.93; a balanced set: 0.5 and 0.5).
Person ``i`` is drawn from ``numpy.random.default_rng(seed + i)``; the splits' seed ranges are in
:data:`SPLITS`. Each person carries the masks of its head (with the hair), of its body (the coat)
and of the visible part of its tool.

Interventions redraw a person from its seed with one thing changed and every other pixel as it was
(the same random draws, the same noise): the other hair (``gender``), no tool (``tool=False``: the
coat's colour where the tool was), or, in the *badge* variant of the clinic, a small badge of a
gender's colour (:data:`BADGE_COLOURS`) drawn just below the tool's spot (``badge="male"`` or
``"female"``): a gender cue that sits where the real cue is.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from matplotlib.axes import Axes
from skimage.draw import disk, line, polygon, rectangle
from skimage.measure import find_contours
from torch import Tensor

from .shapes import background

IMAGE_SIZE = 64
OCCUPATIONS = ("doctor", "nurse")
GENDERS = ("male", "female")
TOOLS = {"doctor": "stethoscope", "nurse": "syringe"}
SPLITS = {"train": range(10_000_000, 11_000_000), "validation": range(11_000_000, 11_010_000), "test": range(12_000_000, 12_010_000)}
SKIN = ((0.96, 0.80, 0.69), (0.87, 0.67, 0.52), (0.67, 0.47, 0.33), (0.45, 0.31, 0.22))
HAIR = ((0.10, 0.08, 0.07), (0.40, 0.25, 0.12), (0.85, 0.70, 0.35), (0.60, 0.22, 0.10))
COATS = ((0.95, 0.95, 0.95), (0.70, 0.85, 0.95), (0.70, 0.92, 0.78), (0.95, 0.80, 0.85))
P_HIDDEN = 0.5  # how often an arm covers the tool, partly or (P_ABSENT) entirely
P_ABSENT = 0.1  # how often it covers all of it
TOOL_CONTRAST = (0.15, 0.45)  # the tool's colour: this far from the coat's towards dark grey
NOISE = 0.05  # standard deviation of the pixel noise


@dataclass(frozen=True)
class Person:
    seed: int
    image: Tensor  # (3, H, W) float32 in [0, 1]
    occupation: str
    gender: str
    head_mask: Tensor  # (H, W) bool: head and hair
    tool_mask: Tensor  # (H, W) bool: the visible part of the tool (where it would show, if it is painted out)
    body_mask: Tensor  # (H, W) bool: the coat, arms and tool included
    badge_mask: Tensor  # (H, W) bool: the badge, empty without one
    tool_drawn: bool = True
    badge: str | None = None  # the gender whose colour the badge has, None without a badge

    @property
    def tool(self) -> str:
        return TOOLS[self.occupation]


def _mask(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    mask = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
    mask[rows, cols] = True
    return mask


def tool_pixels(tool: str, x: int, y: int) -> np.ndarray:
    """The tool's pixels with its top-left corner near (x, y): a stethoscope (tube loop and chest piece) or a syringe."""
    if tool == "stethoscope":
        shape = np.zeros((IMAGE_SIZE, IMAGE_SIZE), dtype=bool)
        for (r0, c0), (r1, c1) in [((y, x), (y + 6, x + 2)), ((y, x + 7), (y + 6, x + 5)), ((y + 6, x + 2), (y + 8, x + 4)), ((y + 6, x + 5), (y + 8, x + 4))]:
            rows, cols = line(r0, c0, r1, c1)
            shape[rows, cols] = True
        shape |= _mask(*disk((y + 9.5, x + 4), 1.8, shape=shape.shape))
        return shape
    if tool == "syringe":
        shape = _mask(*rectangle((y + 3, x), extent=(3, 7), shape=(IMAGE_SIZE, IMAGE_SIZE)))  # barrel
        shape |= _mask(*rectangle((y + 2, x - 1), extent=(5, 1), shape=(IMAGE_SIZE, IMAGE_SIZE)))  # plunger end
        rows, cols = line(y + 4, x + 7, y + 4, x + 10)  # needle
        shape[rows, cols] = True
        return shape
    raise ValueError(f"unknown tool {tool!r}; the clinic has {sorted(TOOLS.values())}")


TOOL_GREY = np.array((0.22, 0.22, 0.24))  # one colour for both tools: only the shape tells them apart
BADGE_COLOURS = {"male": (0.15, 0.35, 0.85), "female": (0.85, 0.20, 0.55)}
BADGE_SIZE = (3, 4)  # rows, columns


def make_person(seed: int, occupation: str, gender: str, tool: bool = True, badge: str | None = None) -> Person:
    """The drawing of one seed, for a given occupation and gender (hair); without its tool if ``tool`` is False; with a
    badge of the colour of gender ``badge`` below the tool's spot if ``badge`` is given (whatever the arm hides)."""
    if occupation not in OCCUPATIONS or gender not in GENDERS:
        raise ValueError(f"occupation must be one of {OCCUPATIONS} and gender one of {GENDERS}, got {occupation!r}, {gender!r}")
    if badge is not None and badge not in GENDERS:
        raise ValueError(f"badge must be None or one of {GENDERS} (the gender whose colour it has), got {badge!r}")
    rng = np.random.default_rng(seed)
    image = background(rng)
    pick = lambda palette: np.array(palette[rng.integers(len(palette))])  # noqa: E731
    skin, hair, coat = pick(SKIN), pick(HAIR), pick(COATS)
    cx, radius = int(rng.integers(22, 43)), float(rng.uniform(6.0, 8.0))
    cy = int(rng.integers(13, 18))
    neck = int(cy + radius)
    half_width = int(radius * rng.uniform(1.6, 2.0))
    body = _mask(*polygon([neck, neck, IMAGE_SIZE - 1, IMAGE_SIZE - 1], [cx - half_width + 3, cx + half_width - 3, cx + half_width + 2, cx - half_width - 2], shape=(IMAGE_SIZE, IMAGE_SIZE)))
    head = _mask(*disk((cy, cx), radius, shape=(IMAGE_SIZE, IMAGE_SIZE)))
    hair_mask = _mask(*disk((cy - 1, cx), radius + 1.5, shape=(IMAGE_SIZE, IMAGE_SIZE))) & (np.arange(IMAGE_SIZE)[:, None] <= cy - radius * 0.2)
    length = int(radius + rng.integers(7, 11))  # drawn for everyone, so that the rest of the drawing does not depend on the hair
    if gender == "female":
        for side in (-1, 1):
            x0 = int(cx + side * (radius - 1)) - (3 if side < 0 else 0)
            hair_mask |= _mask(*rectangle((cy - 2, x0), extent=(length, 4), shape=(IMAGE_SIZE, IMAGE_SIZE)))
    image[body] = coat
    image[hair_mask] = hair
    image[head & ~(hair_mask & (np.arange(IMAGE_SIZE)[:, None] < cy - radius * 0.2))] = skin
    x = int(cx + rng.integers(-half_width + 3, half_width - 10))
    y = int(neck + rng.integers(10, 17))  # below the longest hair, so that hair and tool never overlap
    tool_mask = tool_pixels(TOOLS[occupation], x, y) & body
    contrast = rng.uniform(*TOOL_CONTRAST)
    if tool:
        image[tool_mask] = (1 - contrast) * coat + contrast * TOOL_GREY
    cover = rng.random()
    if cover < P_HIDDEN:  # an arm in front of part of the tool, or (P_ABSENT) a sleeve over all of it
        top, height = (y - 1, 13) if cover < P_ABSENT else (y + int(rng.integers(2, 6)), 4)
        arm = _mask(*rectangle((top, cx - half_width), extent=(height, 2 * half_width), shape=(IMAGE_SIZE, IMAGE_SIZE))) & body
        image[arm] = skin if cover >= P_ABSENT else coat * 0.85
        tool_mask &= ~arm
    badge_mask = _mask(*rectangle((y + 12, x + 2), extent=BADGE_SIZE, shape=(IMAGE_SIZE, IMAGE_SIZE))) & body  # below either tool and any arm
    if badge is not None:
        image[badge_mask] = BADGE_COLOURS[badge]
    else:
        badge_mask[:] = False
    image += rng.normal(0.0, NOISE, size=image.shape)
    pixels = torch.from_numpy(np.clip(image, 0, 1).astype(np.float32)).permute(2, 0, 1).contiguous()
    masks = (torch.from_numpy(m) for m in (head | hair_mask, tool_mask, body, badge_mask))
    return Person(seed, pixels, occupation, gender, *masks, tool_drawn=tool, badge=badge)


def redraw(person: Person, gender: str | None = None, tool: bool | None = None, badge: str | None = None) -> Person:
    """The same person (seed, occupation) with the given changes, everything not given as it was: the other hair
    (``gender``), the tool painted out or back (``tool``), the badge's colour (``badge``; only a person with a badge)."""
    if badge is not None and person.badge is None:
        raise ValueError(f"person {person.seed} has no badge to recolour")
    return make_person(person.seed, person.occupation, person.gender if gender is None else gender,
                       person.tool_drawn if tool is None else tool, person.badge if badge is None else badge)


def other(gender: str) -> str:
    """The other hair (gender)."""
    if gender not in GENDERS:
        raise ValueError(f"gender must be one of {GENDERS}, got {gender!r}")
    return GENDERS[1 - GENDERS.index(gender)]


def make_people(n: int, seed: int, p_male_doctor: float = 0.5, p_female_nurse: float = 0.5, badges: bool = False) -> list[Person]:
    """People of the seeds ``seed, ..., seed + n - 1``: doctors and nurses in turn, each doctor male with
    probability ``p_male_doctor``, each nurse female with probability ``p_female_nurse``; with ``badges``, each wears
    the badge of its own gender's colour."""
    for name, p in (("p_male_doctor", p_male_doctor), ("p_female_nurse", p_female_nurse)):
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"{name} must lie in [0, 1], got {p}")
    people = []
    for i in range(n):
        occupation = OCCUPATIONS[i % 2]
        typical = np.random.default_rng([seed + i, 1]).random() < (p_male_doctor if occupation == "doctor" else p_female_nurse)
        gender = ("male" if occupation == "doctor" else "female") if typical else ("female" if occupation == "doctor" else "male")
        people.append(make_person(seed + i, occupation, gender, badge=gender if badges else None))
    return people


def split_people(split: str, n: int, start: int = 0, p_male_doctor: float = 0.5, p_female_nurse: float = 0.5, badges: bool = False) -> list[Person]:
    """``n`` people of a split (``"train"``, ``"validation"``, ``"test"``) from its ``start``-th seed on."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; the splits are {list(SPLITS)}")
    seeds = SPLITS[split]
    if start < 0 or start + n > len(seeds):
        raise ValueError(f"the {split} split has {len(seeds)} seeds; people {start} to {start + n - 1} lie outside it")
    return make_people(n, seeds[start], p_male_doctor, p_female_nurse, badges)


def show_person(ax: Axes, person: Person, title: str | None = None, outline: bool = True) -> Axes:
    """Draw a person with the head (white) and tool (cyan) masks outlined."""
    ax.imshow(person.image.permute(1, 2, 0).numpy(), interpolation="nearest")
    if outline:
        for mask, colour in ((person.head_mask, "white"), (person.tool_mask, "cyan")):
            for contour in find_contours(mask.numpy().astype(float), 0.5):
                ax.plot(contour[:, 1], contour[:, 0], color=colour, lw=0.8)
    ax.set_title(f"{person.occupation}, {person.gender}" if title is None else title, fontsize=8)
    ax.axis("off")
    return ax
