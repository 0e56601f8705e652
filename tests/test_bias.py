"""The bias study's classifier: accuracy per cell, map shares, training, the shipped checkpoints and their sweep."""

import dataclasses
import json
import math

import pytest
import torch
from scipy.stats import ttest_rel
from torch import nn

from gradcam_lite import bias, data, train
from gradcam_lite.metrics import mask_share, paired_difference
from gradcam_lite.worlds import clinic


class AlwaysDoctor(nn.Module):
    """Logits (1, 0) for every image: predicts "doctor"."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.tensor([[1.0, 0.0]]).expand(len(images), 2)


def test_accuracy_by_cell_of_a_constant_classifier():
    """Predicting "doctor" always is right on every doctor, wrong on every nurse, right overall on the doctors' fraction."""
    people = clinic.make_people(10, seed=0, p_male_doctor=0.5, p_female_nurse=0.5)[:7]  # 4 doctors, 3 nurses
    accuracy = bias.accuracy_by_cell(AlwaysDoctor(), people)
    assert accuracy["all"] == pytest.approx(4 / 7)
    cells = {(p.occupation, p.gender) for p in people}
    assert set(accuracy) == {"all"} | {f"{o}, {g}" for o, g in cells}
    assert all(value == (1.0 if key.startswith("doctor") else 0.0) for key, value in accuracy.items() if key != "all")


class FirstChannel(nn.Module):
    """``features.6`` is the identity on the image; the doctor's logit is the sum of channel 0, the nurse's 0.

    Grad-CAM at that layer: alpha = (1/Z, 0, 0), so the map is ReLU(channel 0) / its maximum, at the image's own size.
    """

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(*[nn.Identity() for _ in range(7)])
        self.unused = nn.Parameter(torch.zeros(1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        a = self.features(images)
        return torch.stack([a[:, 0].sum(dim=(1, 2)), torch.zeros(len(a))], dim=1)


def test_map_shares_follow_the_mass_of_a_known_map():
    """Channel 0 = head mask + 0.5 x tool mask: head share = |head| / (|head| + |tool| / 2), tool share the rest."""
    people = []
    for person in clinic.make_people(6, seed=200):
        image = torch.zeros_like(person.image)
        image[0] = person.head_mask.float() + 0.5 * person.tool_mask.float()
        people.append(dataclasses.replace(person, image=image))
    shares = bias.map_shares(FirstChannel(), people, targets=[0] * len(people))
    head = torch.tensor([float(p.head_mask.sum()) for p in people])
    tool = torch.tensor([float(p.tool_mask.sum()) for p in people])
    torch.testing.assert_close(shares["head"], head / (head + tool / 2))
    torch.testing.assert_close(shares["tool"], (tool / 2) / (head + tool / 2))


def test_paired_difference_matches_scipys_paired_t_test():
    generator = torch.Generator().manual_seed(0)
    first, second = torch.rand(50, generator=generator), torch.rand(50, generator=generator)
    difference = paired_difference(first, second)
    assert difference.z == pytest.approx(float(ttest_rel(first.double().numpy(), second.double().numpy()).statistic), rel=1e-9)  # both in float64: 1e-9 is 1e6 ulps
    assert difference.mean == pytest.approx(float((first - second).double().mean()), rel=1e-12)
    assert paired_difference(torch.ones(3), torch.zeros(3)).z == math.inf
    with pytest.raises(ValueError, match="one length"):
        paired_difference(torch.ones(3), torch.ones(4))
    with pytest.raises(ValueError, match="at least 2 pairs"):
        paired_difference(torch.ones(1), torch.ones(1))


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="kind must be one of"):
        bias.load_classifier("fair")
    with pytest.raises(ValueError, match="no people"):
        bias.images([])
    with pytest.raises(ValueError, match="2 targets for 3 people"):
        bias.map_shares(AlwaysDoctor(), clinic.make_people(3, seed=0), targets=[0, 1])
    with pytest.raises(ValueError, match="change must be one of"):
        bias.intervene(clinic.make_people(2, seed=0), "coat recoloured")
    with pytest.raises(ValueError, match="has no badge"):
        bias.intervene(clinic.make_people(2, seed=0), "badge recoloured")
    with pytest.raises(ValueError, match="within must be"):
        bias.uniform_shares(clinic.make_people(2, seed=0), within="hair")


def test_a_short_training_run_learns_the_hair_when_it_decides():
    """Trained where hair always agrees with the occupation (p = 1), 80 steps suffice to be right on 9 in 10 of that
    distribution, and the model reads the hair, not the tool: it is wrong on most people whose hair disagrees."""
    model, losses = train.train_clinic(1.0, 1.0, steps=80, progress=False)
    validation = clinic.split_people("validation", 200, p_male_doctor=1.0, p_female_nurse=1.0)
    assert losses[0] > 0.6  # ln 2 = 0.69 at chance
    assert bias.accuracy_by_cell(model, validation)["all"] >= 0.9
    atypical = clinic.split_people("validation", 200, p_male_doctor=0.0, p_female_nurse=0.0)
    assert bias.accuracy_by_cell(model, atypical)["all"] < 0.5
    assert not model.training


@pytest.fixture(scope="module")
def shipped():
    test = clinic.split_people("test", 1000)
    models = {kind: bias.load_classifier(kind) for kind in bias.TRAINING_SETS}
    correct = {kind: (bias.predict(m, test) == bias.labels(test)).float() for kind, m in models.items()}
    return test, models, correct


def test_the_balanced_model_is_more_accurate_on_balanced_test_people(shipped):
    """Three standard errors of the paired difference of correctness on 1000 test people."""
    _, _, correct = shipped
    assert paired_difference(correct["balanced"], correct["biased"]).z > 3


def test_the_biased_model_looks_more_at_the_head_and_less_at_the_tool(shipped):
    test, models, _ = shipped
    shares = {kind: bias.map_shares(m, test) for kind, m in models.items()}
    visible = bias.tool_visible(test)
    assert paired_difference(shares["biased"]["head"], shares["balanced"]["head"]).z > 3
    assert paired_difference(shares["balanced"]["tool"][visible], shares["biased"]["tool"][visible]).z > 3


def test_the_shipped_sweep_covers_its_grid_and_shows_the_bias():
    """Every ratio x seed once; fully biased training loses accuracy on the atypical cells against balanced training."""
    sweep = json.loads((data.MODELS_DIR / "clinic_sweep.json").read_text())
    assert sorted((r["p"], r["seed"]) for r in sweep["runs"]) == [(p, s) for p in train.SWEEP_RATIOS for s in range(train.SWEEP_SEEDS)]
    atypical = {p: [r["atypical_accuracy"] for r in sweep["runs"] if r["p"] == p] for p in (0.5, 1.0)}
    assert max(atypical[1.0]) < min(atypical[0.5])


def test_loader_names_the_clinic_command(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    monkeypatch.setattr(data, "MODELS_DIR", tmp_path / "models")
    monkeypatch.setattr(data, "MANIFEST", tmp_path / "SHA256SUMS")
    with pytest.raises(FileNotFoundError, match="python -m gradcam_lite.train clinic"):
        bias.load_classifier("biased")
    with pytest.raises(FileNotFoundError, match="python -m gradcam_lite.train clinic_learned_pooling"):
        bias.load_classifier("learned_pooling_biased")
    with pytest.raises(FileNotFoundError, match="python -m gradcam_lite.train clinic_badge"):
        bias.load_classifier("badge_balanced")


def test_the_paper_setting_sits_at_its_hair_agreement():
    """0.855 is the share of typical people in a training set drawn at (0.78, 0.93), within five binomial standard deviations."""
    agreement = bias.hair_agreement(0.78, 0.93)
    assert agreement == pytest.approx(0.855)
    people = clinic.make_people(4000, seed=500, p_male_doctor=0.78, p_female_nurse=0.93)
    assert abs(float(bias.typical(people).float().mean()) - agreement) < 5 * math.sqrt(agreement * (1 - agreement) / 4000)


def test_flat_maps_score_what_uniform_shares_says():
    """A map constant over the person (head and body), made by grad_cam and scored by mask_share, scores each region's
    part of the person; a map constant over the image scores the region's area fraction: both as uniform_shares says."""
    people = clinic.make_people(12, seed=600, badges=True)
    drawn = []
    for person in people:
        image = torch.zeros_like(person.image)
        image[0] = (person.head_mask | person.body_mask).float()
        drawn.append(dataclasses.replace(person, image=image))
    measured = bias.map_shares(FirstChannel(), drawn, targets=[0] * len(drawn))
    expected = bias.uniform_shares(people, within="person")
    assert set(measured) == set(expected) == {"head", "tool", "tool_nearby", "badge", "badge_nearby"}
    for region in expected:
        torch.testing.assert_close(measured[region], expected[region], msg=region)
    flat = bias.uniform_shares(people)
    for region in flat:
        torch.testing.assert_close(flat[region], torch.tensor([mask_share(torch.ones(64, 64), bias.regions(p)[region]) for p in people]))
    nearby = bias.regions(people[0])["tool_nearby"]
    assert int(nearby.sum()) > 4 * int(people[0].tool_mask.sum()) and bool(nearby[people[0].tool_mask].all())


def test_affected_people_are_those_a_change_can_lower():
    people = clinic.make_people(40, seed=700)
    assert torch.equal(bias.affected(people, "hair swapped"), bias.typical(people))
    assert torch.equal(bias.affected(people, "tool painted out"), bias.tool_visible(people))
    assert torch.equal(bias.affected(people, "both"), bias.typical(people) & bias.tool_visible(people))


@pytest.mark.parametrize("architecture,badges", [(bias.LearnedPoolingClassifier, False), (bias.OccupationClassifier, True)])
def test_short_runs_of_the_new_trainers_learn_the_gender_cue(architecture, badges):
    """Where the gender always agrees with the occupation (p = 1), 80 steps of either new model reach 9 in 10 on that
    distribution and are wrong on most atypical people: the learned-pooling model reads the hair, the badge model its cues."""
    model, losses = train.train_clinic(1.0, 1.0, steps=80, progress=False, architecture=architecture, badges=badges)
    assert isinstance(model, architecture) and losses[0] > 0.6
    same = clinic.split_people("validation", 200, p_male_doctor=1.0, p_female_nurse=1.0, badges=badges)
    atypical = clinic.split_people("validation", 200, p_male_doctor=0.0, p_female_nurse=0.0, badges=badges)
    assert bias.accuracy_by_cell(model, same)["all"] >= 0.9
    assert bias.accuracy_by_cell(model, atypical)["all"] < 0.5


@pytest.fixture(scope="module")
def swapped():
    test = clinic.split_people("test", 400)
    return test, bias.intervene(test, "hair swapped")


def hair_effect(kind, test, swapped):
    drops = bias.score_drops(bias.intervention_logits(bias.load_classifier(kind), test, {"hair swapped": swapped}), test)
    return drops["hair swapped"][bias.typical(test)]


def test_the_shipped_learned_pooling_model_reads_the_hair_that_its_grad_cam_map_misses(swapped):
    """Swapping the hair of typical people drops the biased model's y^c more than the balanced one's (three paired SEs),
    while its Grad-CAM head share is no higher on typical people, whose hair speaks for the class, than on atypical ones."""
    test, edited = swapped
    effect = paired_difference(hair_effect("learned_pooling_biased", test, edited), hair_effect("learned_pooling_balanced", test, edited))
    assert effect.z > 3
    typical, model = bias.typical(test), bias.load_classifier("learned_pooling_biased")
    head = bias.map_shares(model, test, bias.labels(test).tolist())["head"]
    gap = float(head[typical].mean() - head[~typical].mean())
    assert gap < 3 * float((head[typical].var() / int(typical.sum()) + head[~typical].var() / int((~typical).sum())).sqrt())


def test_the_shipped_badge_model_reads_the_badge_and_the_balanced_one_does_not():
    test = clinic.split_people("test", 400, badges=True)
    recoloured, typical = bias.intervene(test, "badge recoloured"), bias.typical(test)
    drops = {kind: bias.score_drops(bias.intervention_logits(bias.load_classifier(f"badge_{kind}"), test, {"badge": recoloured}), test)["badge"][typical]
             for kind in ("biased", "balanced")}
    assert paired_difference(drops["biased"], drops["balanced"]).z > 3


def test_the_shipped_seed_figures_cover_their_grid_and_seed_0_is_the_shipped_model(shipped):
    """clinic_seeds.json holds every setting x seed once; its seed-0 rows are the shipped models' figures on the same 1000
    test people (accuracy within two people, for logits that a near-tie could flip on another CPU; head share within 1e-3)."""
    record = json.loads((data.MODELS_DIR / "clinic_seeds.json").read_text())
    assert sorted((r["training_set"], r["seed"]) for r in record["runs"]) == [(k, s) for k in sorted(bias.TRAINING_SETS) for s in range(train.SEEDS)]
    test, models, correct = shipped
    assert record["test_people"] == len(test)
    for row in (r for r in record["runs"] if r["seed"] == 0):
        assert abs(float(correct[row["training_set"]].mean()) - row["test_accuracy"]) <= 2 / len(test)
        assert abs(float(bias.map_shares(models[row["training_set"]], test)["head"].mean()) - row["head_share"]) < 1e-3
