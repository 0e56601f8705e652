"""The shapes world: deterministic scenes whose captions, masks and boxes agree with their pixels."""

import math
import re
from collections import Counter

import numpy as np
import pytest
import torch

from gradcam_lite.worlds import shapes


@pytest.fixture(scope="module")
def scenes():
    return shapes.make_scenes(300, seed=123)


def test_a_scene_is_a_function_of_its_seed():
    first, again, other = shapes.make_scene(7), shapes.make_scene(7), shapes.make_scene(8)
    assert torch.equal(first.image, again.image) and first.caption == again.caption
    assert not torch.equal(first.image, other.image)
    assert [s.seed for s in shapes.make_scenes(3, seed=40)] == [40, 41, 42]


def test_images_are_float_rgb_in_unit_range(scenes):
    for scene in scenes[:20]:
        assert scene.image.dtype == torch.float32 and scene.image.shape == (3, shapes.IMAGE_SIZE, shapes.IMAGE_SIZE)
        assert 0 <= float(scene.image.min()) and float(scene.image.max()) <= 1


def test_masks_lie_in_their_boxes_and_never_overlap(scenes):
    for scene in scenes:
        assert 1 <= len(scene.objects) <= shapes.MAX_OBJECTS
        covered = torch.zeros(shapes.IMAGE_SIZE, shapes.IMAGE_SIZE, dtype=torch.int)
        for obj in scene.objects:
            x0, y0, x1, y1 = obj.box
            inside = torch.zeros_like(obj.mask)
            inside[y0:y1, x0:x1] = True
            assert obj.mask.any() and not (obj.mask & ~inside).any()
            assert x1 - x0 == y1 - y0 == shapes.SIZES[obj.size]
            covered += obj.mask
        assert int(covered.max()) == 1


def test_shape_areas_match_geometry():
    side = 18
    box = (10, 10, 10 + side, 10 + side)
    area = {shape: int(shapes.shape_mask(shape, box).sum()) for shape in shapes.SHAPES}
    assert area["square"] == side * side
    assert area["circle"] == pytest.approx(math.pi * (side / 2) ** 2, rel=0.1)
    assert area["triangle"] == pytest.approx(side * side / 2, rel=0.15)
    with pytest.raises(ValueError, match="unknown shape 'hexagon'"):
        shapes.shape_mask("hexagon", box)


def test_pixels_carry_the_colour_the_caption_names(scenes):
    for scene in scenes[:100]:
        for obj in scene.objects:
            mean = scene.image[:, obj.mask].mean(dim=1)
            nearest = min(shapes.COLOURS, key=lambda c: float(((mean - torch.tensor(shapes.COLOURS[c])) ** 2).sum()))
            assert nearest == obj.colour


def test_caption_names_objects_left_to_right(scenes):
    pattern = re.compile(r"^a (small|large) (red|green|blue|yellow) (circle|square|triangle)( and a (small|large) (red|green|blue|yellow) (circle|square|triangle)){0,2}$")
    for scene in scenes:
        assert pattern.match(scene.caption), scene.caption
        centres = [obj.box[0] + obj.box[2] for obj in scene.objects]
        assert all(b - a >= 2 * shapes.MIN_GAP for a, b in zip(centres, centres[1:]))
        assert scene.caption.split(" and ") == ["a " + " ".join(obj.words) for obj in scene.objects]


def test_background_is_textured_not_flat(scenes):
    for scene in scenes[:20]:
        empty = ~torch.stack([obj.mask for obj in scene.objects]).any(dim=0)
        assert float(scene.image[:, empty].std(dim=1).min()) > 0.02


def test_attributes_are_balanced(scenes):
    """Each value should occur with probability 1/n; allow five binomial standard deviations."""
    objects = [obj for scene in scenes for obj in scene.objects]
    for attribute, values in [("shape", shapes.SHAPES), ("colour", shapes.COLOURS), ("size", shapes.SIZES)]:
        counts = Counter(getattr(obj, attribute) for obj in objects)
        p = 1 / len(values)
        spread = 5 * math.sqrt(len(objects) * p * (1 - p))
        assert set(counts) == set(values) and all(abs(counts[v] - len(objects) * p) < spread for v in values), counts
    counts = Counter(len(scene.objects) for scene in scenes)
    assert all(abs(counts[n] - len(scenes) / 3) < 5 * math.sqrt(len(scenes) * 2 / 9) for n in (1, 2, 3))


def test_splits_are_disjoint_and_checked():
    ranges = list(shapes.SPLITS.values())
    for i, first in enumerate(ranges):
        for second in ranges[i + 1 :]:
            assert first.stop <= second.start or second.stop <= first.start
    assert shapes.split_scenes("test", 2, start=5)[0].seed == shapes.SPLITS["test"][5]
    with pytest.raises(ValueError, match="unknown split 'dev'"):
        shapes.split_scenes("dev", 1)
    with pytest.raises(ValueError, match="lie outside it"):
        shapes.split_scenes("validation", 2, start=len(shapes.SPLITS["validation"]) - 1)


def test_show_scene_outlines_every_object():
    import matplotlib.pyplot as plt

    scene = shapes.make_scene(3)
    fig, ax = plt.subplots()
    shapes.show_scene(ax, scene)
    assert len(ax.lines) >= len(scene.objects) and ax.get_title().replace("\n", " ") == scene.caption
    plt.close(fig)
    assert np.isfinite(scene.image.numpy()).all()


def test_removing_objects_restores_the_background_they_were_painted_on(scenes):
    scene = next(s for s in scenes if len(s.objects) == 3)
    painted = torch.stack([o.mask for o in scene.objects]).any(dim=0)
    assert torch.equal(scene.background[:, ~painted], scene.image[:, ~painted])  # the background is the image wherever no object is
    assert torch.equal(shapes.without_objects(scene, range(3)), scene.background)
    one = shapes.without_objects(scene, [1])
    changed = (one != scene.image).any(dim=0)
    assert bool(changed.any()) and not bool((changed & ~scene.objects[1].mask).any())  # only that object's pixels change
    assert torch.equal(one[:, scene.objects[1].mask], scene.background[:, scene.objects[1].mask])
    with pytest.raises(ValueError, match="no object \\[3\\]"):
        shapes.without_objects(scene, [3])
