"""Questions about the shapes world, the VQA model's scores and maps, its training and shipped checkpoint."""

import math
from collections import Counter

import pytest
import torch

from conftest import assert_close_in_ulps
from gradcam_lite import grad_cam, train, vqa
from gradcam_lite.worlds import shapes


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    return vqa.VQAModel().eval()


def test_questions_are_answered_by_the_scene():
    """A second implementation of each answer, from the scene's objects, for 200 scenes' questions."""
    for scene in shapes.make_scenes(200, seed=500):
        objects = scene.objects
        for q in shapes.candidate_questions(scene):
            words = q.text.split()
            if q.type == "colour":
                (obj,) = [o for o in objects if o.shape == words[-2]]
                assert q.answer == obj.colour and torch.equal(q.mask, obj.mask)
            elif q.type == "shape":
                (obj,) = [o for o in objects if o.colour == words[-3]]
                assert q.answer == obj.shape and torch.equal(q.mask, obj.mask)
            elif q.type == "exists":
                matching = [o for o in objects if (o.colour, o.shape) == (words[-3], words[-2])]
                assert q.answer == ("yes" if matching else "no") and (q.mask is None) == (len(matching) != 1)
            elif q.type == "count":
                assert q.answer == shapes.COUNT_WORDS[sum(o.colour == words[2] for o in objects)] and q.mask is None
            else:
                (named,) = [o for o in objects if o.colour == words[-3]]
                left = [o for o in objects if o.box[0] + o.box[2] < named.box[0] + named.box[2]]
                nearest = max(left, key=lambda o: o.box[0] + o.box[2])
                assert q.answer == nearest.shape and torch.equal(q.mask, nearest.mask)


def test_make_questions_gives_one_of_each_type_it_can():
    scene = shapes.make_scene(3)
    chosen = shapes.make_questions(scene, seed=1)
    assert [q.type for q in chosen] == [t for t in shapes.QUESTION_TYPES if any(c.type == t for c in shapes.candidate_questions(scene))]
    assert [q.text for q in chosen] == [q.text for q in shapes.make_questions(scene, seed=1)]


def test_balanced_questions_balance_types_and_answers():
    """Uniform types, and uniform answers within a type; allow five binomial standard deviations."""
    pairs = shapes.balanced_questions(shapes.make_scenes(64, seed=0), 3000, seed=0)
    types = Counter(q.type for _, q in pairs)
    for kind in shapes.QUESTION_TYPES:
        n, p = len(pairs), 1 / len(shapes.QUESTION_TYPES)
        assert abs(types[kind] - n * p) < 5 * (n * p * (1 - p)) ** 0.5
        answers = Counter(q.answer for _, q in pairs if q.type == kind)
        m, r = types[kind], 1 / len(answers)
        assert all(abs(count - m * r) < 5 * (m * r * (1 - r)) ** 0.5 for count in answers.values()), (kind, answers)
    assert set(q.answer for _, q in pairs if q.type == "exists") == {"yes", "no"}
    with pytest.raises(ValueError, match="'left_of'"):
        shapes.balanced_questions([s for s in shapes.make_scenes(40, seed=0) if len(s.objects) == 1], 50, seed=0)


def test_scorer_and_answer_map_are_the_engines(untrained):
    scene = shapes.make_scene(9)
    question = shapes.candidate_questions(scene)[0]
    logits = vqa.QuestionScorer(untrained, question.text)(scene.image[None])
    direct = untrained(scene.image[None], vqa.encode_questions([question.text]))
    assert torch.equal(logits, direct)
    answer, saliency = vqa.answer_map(untrained, scene.image, question.text, normalize=False, size=None, relu=False)
    assert answer == untrained.answer(scene.image[None], [question.text])[0]
    by_hand = grad_cam(vqa.QuestionScorer(untrained, question.text), scene.image[None], lambda y: y[:, vqa.ANSWER_INDEX[answer]],
                       untrained.get_submodule(vqa.LAYER), normalize=False, size=None, relu=False)[0]
    assert_close_in_ulps(saliency, by_hand, ulps=0)  # the same operations: an int target is the callable y[:, a]


def test_padding_does_not_change_the_question_vector(untrained):
    short, long_ = "how many red objects ?", "what shape is left of the red object ?"
    alone = untrained.question_vectors(vqa.encode_questions([short]))
    padded = untrained.question_vectors(vqa.encode_questions([short, long_]))[:1]
    assert_close_in_ulps(padded.detach(), alone.detach(), ulps=2**8)  # a batch of 2 vs 1


def test_bad_input_is_named(untrained):
    with pytest.raises(ValueError, match=r"\['purple'\]"):
        vqa.encode_questions(["what colour is the purple object ?"])
    with pytest.raises(ValueError, match="unknown answer 'maybe'"):
        vqa.answer_map(untrained, torch.rand(3, 64, 64), "how many red objects ?", answer="maybe")
    with pytest.raises(ValueError, match="2 images but 1 questions"):
        untrained.answer(torch.rand(2, 3, 64, 64), ["how many red objects ?"])


def test_a_short_training_run_learns():
    """From seed 0, 200 steps take the loss from chance, ln(14) = 2.6, below what knowing the question's
    type alone gives: answers are uniform within a type, so that loss is the mean of ln(answers per type)."""
    answers_per_type = {"colour": 4, "shape": 3, "exists": 2, "count": 3, "left_of": 3}
    type_only = sum(math.log(n) for n in answers_per_type.values()) / len(answers_per_type)  # 1.07
    model, losses = train.train_vqa(steps=200, scenes_per_step=16, questions_per_scene=8, progress=False)
    assert losses[0] > 2.2
    assert sum(losses[-20:]) / 20 < type_only
    assert not model.training


def test_shipped_vqa_model_on_fresh_test_questions():
    model = vqa.load_vqa()
    accuracy = vqa.accuracy_by_type(model, shapes.balanced_questions(shapes.split_scenes("test", 500), 1000, seed=0))
    assert accuracy["all"] >= 0.9
