"""The clinic world: people whose occupation, hair and tool agree with their pixels, in the proportions asked."""

import math

import pytest
import torch

from gradcam_lite.worlds import clinic


def test_a_person_is_a_function_of_its_seed():
    first, again = clinic.make_person(5, "doctor", "male"), clinic.make_person(5, "doctor", "male")
    assert torch.equal(first.image, again.image) and torch.equal(first.tool_mask, again.tool_mask)
    assert not torch.equal(first.image, clinic.make_person(6, "doctor", "male").image)
    with pytest.raises(ValueError, match="occupation must be one of"):
        clinic.make_person(5, "surgeon", "male")


def test_the_hair_is_the_only_difference_between_genders():
    """Same seed, both genders: the pixels differ only where long hair is drawn, beside the head."""
    short, long_ = clinic.make_person(9, "nurse", "male"), clinic.make_person(9, "nurse", "female")
    changed = (short.image != long_.image).any(dim=0)
    assert changed.any() and not (changed & ~(long_.head_mask | short.head_mask)).any()
    assert int(long_.head_mask.sum()) > int(short.head_mask.sum())
    assert torch.equal(short.tool_mask, long_.tool_mask)


def test_tool_pixels_carry_a_faint_grey_and_masks_are_disjoint():
    """The tool's mean colour lies on the segment from one coat colour to the tool grey, TOOL_CONTRAST of the way."""
    hidden = 0
    grey, low, high = torch.tensor(clinic.TOOL_GREY), *clinic.TOOL_CONTRAST
    for person in clinic.make_people(60, seed=100):
        assert not (person.tool_mask & person.head_mask).any()
        assert person.image.shape == (3, clinic.IMAGE_SIZE, clinic.IMAGE_SIZE) and 0 <= float(person.image.min()) and float(person.image.max()) <= 1
        if not person.tool_mask.any():
            hidden += 1
            continue
        mean = person.image[:, person.tool_mask].mean(dim=1).double()
        noise = 5 * clinic.NOISE / math.sqrt(int(person.tool_mask.sum()))  # five standard errors of the pixel noise
        fits = []
        for coat in map(torch.tensor, clinic.COATS):
            towards = grey - coat
            k = float((mean - coat) @ towards / (towards @ towards))
            off_segment = float((mean - coat - k * towards).abs().max())
            fits.append(off_segment < noise and low - noise / float(towards.norm()) < k < high + noise / float(towards.norm()))
        assert any(fits), (person.seed, mean)
    assert abs(hidden - 60 * clinic.P_ABSENT) < 5 * math.sqrt(60 * clinic.P_ABSENT * (1 - clinic.P_ABSENT))  # entirely hidden as often as designed


def test_the_tool_is_smaller_than_the_head():
    people = clinic.make_people(100, seed=0)
    assert sum(int(p.tool_mask.sum()) for p in people) * 5 < sum(int(p.head_mask.sum()) for p in people)


def test_proportions_follow_the_bias_asked_for():
    """Half doctors, half nurses; typical hair with the asked probabilities, within five binomial standard deviations."""
    people = clinic.make_people(1000, seed=0, p_male_doctor=0.78, p_female_nurse=0.93)
    doctors = [p for p in people if p.occupation == "doctor"]
    nurses = [p for p in people if p.occupation == "nurse"]
    assert len(doctors) == len(nurses) == 500
    for group, gender, p in ((doctors, "male", 0.78), (nurses, "female", 0.93)):
        count = sum(person.gender == gender for person in group)
        assert abs(count - 500 * p) < 5 * math.sqrt(500 * p * (1 - p)), (gender, count)
    extremes = clinic.make_people(40, seed=0, p_male_doctor=1.0, p_female_nurse=0.0)
    assert all(p.gender == ("male" if p.occupation == "doctor" else "male") for p in extremes)
    with pytest.raises(ValueError, match="p_male_doctor must lie in"):
        clinic.make_people(2, seed=0, p_male_doctor=1.5)


def test_splits_are_disjoint_from_each_other_and_from_the_shapes_world():
    from gradcam_lite.worlds import shapes

    ranges = list(clinic.SPLITS.values()) + list(shapes.SPLITS.values())
    for i, first in enumerate(ranges):
        for second in ranges[i + 1 :]:
            assert first.stop <= second.start or second.stop <= first.start
    with pytest.raises(ValueError, match="lie outside it"):
        clinic.split_people("test", 2, start=len(clinic.SPLITS["test"]) - 1)
