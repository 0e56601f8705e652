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
            referred = None if q.refers_to is None else objects[q.refers_to]
            if q.type == "colour":
                (obj,) = [o for o in objects if o.shape == words[-2]]
                assert q.answer == obj.colour and torch.equal(q.mask, obj.mask) and referred is obj
            elif q.type == "shape":
                (obj,) = [o for o in objects if o.colour == words[-3]]
                assert q.answer == obj.shape and torch.equal(q.mask, obj.mask) and referred is obj
            elif q.type == "exists":
                matching = [o for o in objects if (o.colour, o.shape) == (words[-3], words[-2])]
                assert q.answer == ("yes" if matching else "no") and (q.mask is None) == (len(matching) != 1)
                assert referred is (matching[0] if len(matching) == 1 else None)
            elif q.type == "count":
                assert q.answer == shapes.COUNT_WORDS[sum(o.colour == words[2] for o in objects)] and q.mask is None and referred is None
            else:
                (named,) = [o for o in objects if o.colour == words[-3]]
                left = [o for o in objects if o.box[0] + o.box[2] < named.box[0] + named.box[2]]
                nearest = max(left, key=lambda o: o.box[0] + o.box[2])
                assert q.answer == nearest.shape and torch.equal(q.mask, nearest.mask) and referred is nearest and objects[q.names] is named
            assert q.names is None or q.type == "left_of"


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


def test_answer_maps_of_a_batch_are_the_maps_of_each_question_alone(untrained):
    scene = shapes.make_scene(11)
    questions = shapes.candidate_questions(scene)[:4]
    images = scene.image.expand(len(questions), -1, -1, -1)
    batch = vqa.answer_maps(untrained, images, [q.text for q in questions], [q.answer for q in questions], normalize=False, size=None)
    for k, q in enumerate(questions):
        alone = grad_cam(vqa.QuestionScorer(untrained, q.text), scene.image[None], vqa.ANSWER_INDEX[q.answer],
                         untrained.get_submodule(vqa.LAYER), normalize=False, size=None)[0]
        # a batch blocks the encoder's sums differently: its widest sum is the 3 x 3 x 64 convolution, then 64 channels
        assert_close_in_ulps(batch[k], alone, ulps=2 * (576 + 64))
    with pytest.raises(ValueError, match="one question and one answer per image \\(4\\), got 3 and 4"):
        vqa.answer_maps(untrained, images, [q.text for q in questions[:3]], [q.answer for q in questions])
    with pytest.raises(ValueError, match="2 questions for 3 images"):
        vqa.QuestionScorer(untrained, ["how many red objects ?", "how many blue objects ?"])(images[:3])


def test_the_attribute_detector_lights_the_objects_that_have_the_answers_attribute():
    scene = next(s for s in shapes.make_scenes(400, seed=7) if len(s.objects) == 3 and len({o.colour for o in s.objects}) == 2
                 and len({o.shape for o in s.objects}) == 3)
    twins = [i for i, o in enumerate(scene.objects) if sum(p.colour == o.colour for p in scene.objects) == 2]
    for q in shapes.candidate_questions(scene):
        if q.type == "colour":  # shapes are unique; the answer's colour is shared exactly when the object is one of the twins
            assert vqa.attribute_objects(scene, q) == (twins if q.refers_to in twins else [q.refers_to])
        elif q.type == "shape":  # asked only of the one unique colour, and every shape is unique: only that object
            assert vqa.attribute_objects(scene, q) == [q.refers_to]
        elif q.type == "exists" and q.refers_to is not None:  # the named colour or the named shape
            colour, shape = q.text.split()[3:5]
            assert set(vqa.attribute_objects(scene, q)) == {i for i, o in enumerate(scene.objects) if o.colour == colour or o.shape == shape}
            assert q.refers_to in vqa.attribute_objects(scene, q)
    count = next(q for q in shapes.candidate_questions(scene) if q.type == "count")
    with pytest.raises(ValueError, match="refers to no single object"):
        vqa.attribute_objects(scene, count)


def test_the_from_scratch_record_is_shipped_and_below_the_shipped_model():
    """The record notebook 08 reads: checksum verified, every 250 steps of the same budget, and from scratch the same
    budget ends below the model whose encoder starts from the captioner's (the reason for that start)."""
    import json

    from gradcam_lite import data

    record = json.loads(data.verified_file(data.MODELS_DIR / "vqa_from_scratch.json", "python -m gradcam_lite.train vqa_from_scratch").read_text())
    shipped = json.loads((data.MODELS_DIR / "vqa.json").read_text())
    assert record["steps"] == shipped["steps"] == train.VQA_STEPS
    assert [point["step"] for point in record["curve"]] == list(range(250, train.VQA_STEPS + 1, 250))
    assert record["curve"][-1]["validation_accuracy"]["all"] < shipped["validation_accuracy"]["all"] - 0.05


def test_a_from_scratch_run_reports_every_step_and_starts_from_another_encoder():
    from gradcam_lite import captioning

    captioner = captioning.load_captioner().encoder.state_dict()

    def distance_from_the_captioner(start_from_captioner):
        torch.manual_seed(0)
        model, seen = vqa.VQAModel(), []
        trained, losses = train.train_vqa(steps=3, scenes_per_step=4, questions_per_scene=4, progress=False, model=model,
                                          encoder_from_captioner=start_from_captioner,
                                          after_step=lambda step, loss: seen.append((step, loss, model.training)))
        assert trained is model and [(s, l) for s, l, _ in seen] == list(enumerate(losses)) and all(training for *_, training in seen)
        return sum(float((value - captioner[name]).abs().sum()) for name, value in model.encoder.state_dict().items() if value.is_floating_point())

    # three small steps move the captioner's weights a little; a random start is far from them
    assert distance_from_the_captioner(False) > 10 * distance_from_the_captioner(True)
