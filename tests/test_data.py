import shutil

import numpy as np
import pytest

from gradcam_lite import data

PHOTOS = ["astronaut", "camera", "cat_espresso", "chelsea", "china", "coffee", "grace_hopper", "rocket"]


def test_manifest_covers_every_file_and_matches():
    assert data.verify_manifest() == []
    listed = {line.split("  ", 1)[1] for line in data.MANIFEST.read_text().splitlines()}
    assert "images/cat_espresso.png" in listed and "SOURCES.md" in listed


def test_manifest_detects_changed_missing_and_extra_files(tmp_path, monkeypatch):
    copy = tmp_path / "data"
    shutil.copytree(data.DATA_DIR, copy)
    monkeypatch.setattr(data, "DATA_DIR", copy)
    monkeypatch.setattr(data, "MANIFEST", copy / "SHA256SUMS")
    (copy / "images" / "rocket.jpg").write_bytes(b"not a rocket")
    (copy / "images" / "chelsea.png").unlink()
    (copy / "stray.txt").write_text("x")
    assert data.verify_manifest() == ["not in manifest: stray.txt", "missing: images/chelsea.png", "checksum differs: images/rocket.jpg"]


@pytest.mark.parametrize("name", list(data.PACKAGE_PHOTOS))
def test_photos_are_exact_copies_of_the_package_originals(name):
    original = data.package_original(name)
    assert (data.IMAGES_DIR / f"{name}{original.suffix}").read_bytes() == original.read_bytes()


def test_cat_espresso_is_reproduced_from_its_parts():
    image, boxes = data.make_cat_espresso()
    assert np.array_equal(np.asarray(image), np.asarray(data.load_image("cat_espresso")))
    assert boxes == data.load_boxes("cat_espresso")
    assert set(boxes) == {"Egyptian cat", "espresso"}
    # the two objects sit side by side: their boxes do not overlap
    cat, cup = boxes["Egyptian cat"], boxes["espresso"]
    assert cat[2] <= cup[0]


def test_names_sources_and_errors():
    assert data.image_names() == PHOTOS
    sources = (data.DATA_DIR / "SOURCES.md").read_text()
    assert all(name in sources for name in PHOTOS)
    with pytest.raises(KeyError, match=r"'chelsey'.*did you mean 'chelsea'.*valid names: \['astronaut'"):
        data.load_image("chelsey")
    with pytest.raises(KeyError, match="no recorded boxes"):
        data.load_boxes("rocket")
    assert data.load_image("grace_hopper").mode == "RGB"


def test_side_by_side_places_each_photo_in_its_half():
    image = data.side_by_side("rocket", "chelsea")
    mirrored_pair = data.side_by_side("coffee", "chelsea")
    assert image.size == (600, 600)
    left, right = np.asarray(image)[150:450, :300], np.asarray(image)[150:450, 300:]
    assert np.array_equal(right, np.asarray(data.load_image("cat_espresso"))[150:450, :300])
    assert np.array_equal(np.asarray(mirrored_pair)[150:450, :300], np.asarray(data.load_image("cat_espresso"))[150:450, 300:])
    assert not np.array_equal(left, right)
    assert (np.asarray(image)[:150] == data.PAD_COLOUR).all()
    rocket = data.load_image("rocket")
    assert data.square_crop("rocket", rocket) == (106, 0, 533, 427)  # the centred 427 x 427 square of 640 x 427


def test_in_a_row_tiles_and_boxes():
    image, boxes = data.in_a_row("chelsea", "chelsea", "chelsea")
    assert boxes == [(0, 200, 200, 400), (200, 200, 400, 400), (400, 200, 600, 400)]
    pixels = np.asarray(image)
    assert np.array_equal(pixels[200:400, :200], pixels[200:400, 400:])
    with pytest.raises(ValueError, match="at least one"):
        data.in_a_row()
