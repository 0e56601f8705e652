"""The photos the course ships, their object boxes, and the checksum manifest of ``data/``.

Every photo in ``data/images/`` is a byte-for-byte copy of a sample image that scikit-image,
matplotlib or scikit-learn ships (public domain, CC0 or CC BY 2.0; ``data/SOURCES.md`` names each origin,
licence and attribution), plus
``cat_espresso``, composed here from two of them so that one image holds two ImageNet classes at
known places. Boxes are ``(x0, y0, x1, y1)`` in pixels of the image they belong to, ``x1`` and
``y1`` exclusive.

``python -m gradcam_lite.data`` rebuilds the copies, the composite and ``data/SHA256SUMS``.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import shutil
from pathlib import Path

import torch
from PIL import Image
from torch import nn

DATA_DIR = Path(__file__).resolve().parent.parent / "data"
IMAGES_DIR = DATA_DIR / "images"
MANIFEST = DATA_DIR / "SHA256SUMS"

Box = tuple[int, int, int, int]

# name -> (package holding the original, path inside that package)
PACKAGE_PHOTOS = {
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "astronaut": ("skimage", "data/astronaut.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "grace_hopper": ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    "camera": ("skimage", "data/camera.png"),
    "china": ("sklearn", "datasets/images/china.jpg"),
}

# The object of each whole photo's top ImageNet class, boxed by the course's authors in the photo's pixels (the
# ground truth of weak localisation on the photos, as ILSVRC's boxes are people's). The astronaut's top class is a
# mistake (no ImageNet class is "astronaut"): it has no box.
PHOTO_OBJECTS: dict[str, Box] = {
    "chelsea": (15, 0, 410, 300),  # the cat
    "coffee": (75, 15, 480, 390),  # cup and saucer
    "rocket": (300, 125, 345, 410),  # the rocket on its pad
    "grace_hopper": (10, 310, 512, 600),  # the uniform
    "camera": (228, 140, 410, 505),  # the tripod with the camera on it
    "china": (60, 28, 372, 390),  # the pagoda
}

# Photos in a row: a 600 x 600 canvas, each photo cropped to a square around its object, scaled
# to a square tile and placed side by side in the middle band; the rest is the ImageNet mean colour,
# which preprocessing maps to zero. Letterboxing keeps both objects undistorted by the final resize.
TILE = 300
CANVAS = (2 * TILE, 2 * TILE)
PAD_COLOUR = (124, 116, 104)
OBJECT_CROPS: dict[str, Box] = {
    "chelsea": (30, 0, 330, 300),  # the cat's head fills this square
    "coffee": (80, 0, 480, 400),  # cup and saucer
}
# Two-object images for the experiments of notebooks 03 and 04: every photo with an object the
# network recognises beside others, each order of chelsea and coffee, so left and right both occur.
PAIRS: tuple[tuple[str, str], ...] = (
    ("chelsea", "coffee"), ("coffee", "chelsea"), ("chelsea", "rocket"), ("rocket", "coffee"),
    ("grace_hopper", "chelsea"), ("coffee", "grace_hopper"), ("rocket", "grace_hopper"),
)


def _image_paths() -> dict[str, Path]:
    return {p.stem: p for p in sorted(IMAGES_DIR.glob("*")) if p.suffix in {".png", ".jpg"}}


def _image_path(name: str) -> Path:
    paths = _image_paths()
    if name not in paths:
        near = difflib.get_close_matches(name, paths, n=3, cutoff=0.4)
        hint = f" (did you mean {near[0]!r}?)" if near else ""
        raise KeyError(f"no image named {name!r}{hint}; valid names: {sorted(paths)}")
    return paths[name]


def image_names() -> list[str]:
    """Names accepted by :func:`load_image`."""
    return sorted(_image_paths())


def load_image(name: str) -> Image.Image:
    """The photo ``name`` (see :func:`image_names`) as an RGB PIL image."""
    with Image.open(_image_path(name)) as image:
        return image.convert("RGB")


def load_boxes(name: str) -> dict[str, Box]:
    """Object boxes recorded beside image ``name``: ImageNet class name -> (x0, y0, x1, y1)."""
    path = _image_path(name).with_suffix(".json")
    if not path.exists():
        with_boxes = sorted(p.stem for p in IMAGES_DIR.glob("*.json"))
        raise KeyError(f"image {name!r} has no recorded boxes; images with boxes: {with_boxes}")
    return {label: tuple(box) for label, box in json.loads(path.read_text())["boxes"].items()}


def square_crop(name: str, image: Image.Image) -> Box:
    """The square that holds photo ``name``'s object: recorded for chelsea and coffee, else the centred square."""
    if name in OBJECT_CROPS:
        return OBJECT_CROPS[name]
    side = min(image.size)
    x0, y0 = (image.width - side) // 2, (image.height - side) // 2
    return (x0, y0, x0 + side, y0 + side)


def in_a_row(*names: str) -> tuple[Image.Image, list[Box]]:
    """Photos side by side, each cropped square around its object, on a letterboxed square canvas.

    With n photos each tile is ``CANVAS / n`` wide. Returns the image and the box of each tile.
    """
    if not names:
        raise ValueError("in_a_row needs at least one photo name")
    tile = CANVAS[0] // len(names)
    top = (CANVAS[1] - tile) // 2
    canvas = Image.new("RGB", CANVAS, PAD_COLOUR)
    boxes = []
    for column, name in enumerate(names):
        photo = load_image(name)
        canvas.paste(photo.crop(square_crop(name, photo)).resize((tile, tile), Image.Resampling.BICUBIC), (column * tile, top))
        boxes.append((column * tile, top, (column + 1) * tile, top + tile))
    return canvas, boxes


def side_by_side(left: str, right: str) -> Image.Image:
    """Two photos in a row (see :func:`in_a_row`)."""
    return in_a_row(left, right)[0]


def make_cat_espresso() -> tuple[Image.Image, dict[str, Box]]:
    """chelsea (left) and coffee (right) in one image, with the box of each object."""
    image, (cat_tile, cup_tile) = in_a_row("chelsea", "coffee")
    crop = OBJECT_CROPS["coffee"]
    scale = (cup_tile[2] - cup_tile[0]) / (crop[2] - crop[0])
    x0, y0, x1, y1 = (round(max(v - o, 0) * scale) for v, o in zip(PHOTO_OBJECTS["coffee"], crop[:2] * 2))
    left, top = cup_tile[:2]
    return image, {"Egyptian cat": cat_tile, "espresso": (left + x0, top + y0, left + x1, top + y1)}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_files() -> list[Path]:
    """Every file under ``data/`` but the manifest itself."""
    return sorted(p for p in DATA_DIR.rglob("*") if p.is_file() and p != MANIFEST)


def write_manifest() -> None:
    lines = [f"{sha256(p)}  {p.relative_to(DATA_DIR).as_posix()}" for p in manifest_files()]
    MANIFEST.write_text("\n".join(lines) + "\n")


def verify_manifest() -> list[str]:
    """Problems found: files whose checksum differs, files missing, files not in the manifest."""
    listed = dict(reversed(line.split("  ", 1)) for line in MANIFEST.read_text().splitlines() if line)
    present = {p.relative_to(DATA_DIR).as_posix(): p for p in manifest_files()}
    problems = [f"not in manifest: {name}" for name in sorted(set(present) - set(listed))]
    problems += [f"missing: {name}" for name in sorted(set(listed) - set(present))]
    problems += [f"checksum differs: {n}" for n in sorted(set(listed) & set(present)) if sha256(present[n]) != listed[n]]
    return problems


MODELS_DIR = DATA_DIR / "models"


def verified_file(path: Path, rebuild: str) -> Path:
    """``path`` (a file under ``data/``) after checking it against ``data/SHA256SUMS``; an error names the command ``rebuild``."""
    relative = path.relative_to(DATA_DIR).as_posix()
    if not path.exists():
        raise FileNotFoundError(f"{relative} is missing; run `{rebuild}` to make it")
    listed = dict(reversed(line.split("  ", 1)) for line in MANIFEST.read_text().splitlines() if line)
    if relative not in listed:
        raise ValueError(f"{relative} has no checksum in data/SHA256SUMS; run `{rebuild}`, which writes both")
    if sha256(path) != listed[relative]:
        raise ValueError(f"{relative} does not match its checksum in data/SHA256SUMS (a partial or edited file?); run `{rebuild}` to rebuild it")
    return path


def verified_checkpoint(name: str, trainer: str | None = None) -> Path:
    """The path of ``data/models/<name>.pt`` after checking it against ``data/SHA256SUMS`` (:func:`verified_file`).

    A missing or changed file is an error that names the command rebuilding it,
    ``python -m gradcam_lite.train <trainer>`` (``trainer`` defaults to ``name``).
    """
    return verified_file(MODELS_DIR / f"{name}.pt", f"python -m gradcam_lite.train {trainer or name}")


def load_shipped(model: nn.Module, name: str, device: str | torch.device = "cpu", trainer: str | None = None) -> nn.Module:
    """``model`` with the state of ``data/models/<name>.pt`` (checksum verified, see :func:`verified_checkpoint`), in eval mode on ``device``."""
    model.load_state_dict(torch.load(verified_checkpoint(name, trainer), map_location=device, weights_only=True))
    return model.to(device).eval()


def package_original(name: str) -> Path:
    """Where the original of a copied photo lies inside its installed package."""
    package, relative = PACKAGE_PHOTOS[name]
    module = __import__(package)
    return Path(module.__file__).parent / relative


def rebuild() -> None:
    """Copy the photos from their packages, compose cat_espresso, rewrite the manifest."""
    IMAGES_DIR.mkdir(parents=True, exist_ok=True)
    for name in PACKAGE_PHOTOS:
        original = package_original(name)
        shutil.copyfile(original, IMAGES_DIR / f"{name}{original.suffix}")
    image, boxes = make_cat_espresso()
    image.save(IMAGES_DIR / "cat_espresso.png")
    (IMAGES_DIR / "cat_espresso.json").write_text(json.dumps({"boxes": boxes}, indent=2) + "\n")
    write_manifest()


if __name__ == "__main__":
    rebuild()
