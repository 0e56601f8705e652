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


def test_painting_the_tool_out_changes_only_its_visible_pixels_back_towards_the_coat():
    """Redrawn without the tool, a person differs exactly on the visible tool's pixels, each channel lighter there on
    average by at least the smallest contrast times the smallest gap from a coat colour to the tool's grey (less noise)."""
    smallest_gap = min(float(min(torch.tensor(coat) - torch.tensor(clinic.TOOL_GREY))) for coat in clinic.COATS)
    for person in clinic.make_people(40, seed=300):
        removed = clinic.redraw(person, tool=False)
        changed = (person.image != removed.image).any(dim=0)
        assert torch.equal(changed, person.tool_mask), person.seed
        assert torch.equal(removed.tool_mask, person.tool_mask) and not removed.tool_drawn
        if person.tool_mask.any():
            lighter = (removed.image - person.image)[:, person.tool_mask].mean(dim=1)
            noise = 5 * clinic.NOISE * math.sqrt(2 / int(person.tool_mask.sum()))
            assert bool((lighter > clinic.TOOL_CONTRAST[0] * smallest_gap - noise).all()), (person.seed, lighter)
        assert torch.equal(clinic.redraw(removed, tool=True).image, person.image)


def test_a_badge_has_its_genders_colour_on_the_coat_below_the_tool_and_changes_nothing_else():
    for person in clinic.make_people(40, seed=400, badges=True):
        plain = clinic.make_person(person.seed, person.occupation, person.gender)
        badge = person.badge_mask
        assert person.badge == person.gender and int(badge.sum()) == clinic.BADGE_SIZE[0] * clinic.BADGE_SIZE[1]
        assert torch.equal((person.image != plain.image).any(dim=0), badge) and not plain.badge_mask.any()
        assert bool((badge & person.body_mask).equal(badge)) and not (badge & (person.head_mask | person.tool_mask)).any()
        colour = person.image[:, badge].mean(dim=1)
        assert float((colour - torch.tensor(clinic.BADGE_COLOURS[person.gender])).abs().max()) < 5 * clinic.NOISE / math.sqrt(int(badge.sum()))
        rows = torch.nonzero(badge)[:, 0]
        tool_rows = torch.nonzero(person.tool_mask)[:, 0]
        assert len(tool_rows) == 0 or int(rows.min()) > int(tool_rows.max())  # below the tool
        recoloured = clinic.redraw(person, badge=clinic.other(person.gender))
        assert torch.equal((recoloured.image != person.image).any(dim=0), badge) and recoloured.gender == person.gender


def test_redraw_keeps_what_it_is_not_told_to_change_and_names_bad_requests():
    person = clinic.make_person(7, "doctor", "female", badge="female")
    assert torch.equal(clinic.redraw(person).image, person.image)
    swapped = clinic.redraw(person, gender="male")
    assert swapped.gender == "male" and swapped.badge == "female" and swapped.occupation == "doctor"
    assert clinic.other("male") == "female" and clinic.other("female") == "male"
    with pytest.raises(ValueError, match="has no badge"):
        clinic.redraw(clinic.make_person(7, "doctor", "female"), badge="male")
    with pytest.raises(ValueError, match="badge must be None or one of"):
        clinic.make_person(7, "doctor", "female", badge="blue")
