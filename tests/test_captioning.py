"""The captioner's scores, maps, training and shipped checkpoint."""

import pytest
import torch

from conftest import assert_close_in_ulps
from gradcam_lite import captioning, data, grad_cam, train
from gradcam_lite.encoders import FEATURE_SIZE
from gradcam_lite.worlds import shapes


@pytest.fixture(scope="module")
def untrained():
    torch.manual_seed(0)
    return captioning.Captioner().eval()


@pytest.fixture(scope="module")
def shipped():
    return captioning.load_captioner()


def test_encode_decode_round_trip_and_errors():
    caption = "a small red circle and a large blue square"
    assert captioning.decode(captioning.encode(caption) + [captioning.END, captioning.WORD_INDEX["a"]]) == caption
    with pytest.raises(ValueError, match=r"\['purple', 'hexagon'\]"):
        captioning.encode("a small purple hexagon")
    with pytest.raises(ValueError, match="empty"):
        captioning.encode("  ")


def test_teacher_forcing_shifts_by_one_word():
    inputs, targets = captioning.teacher_forcing(["a small red circle", "a large blue square and a small green triangle"])
    assert inputs.shape == targets.shape == (2, 10)
    assert inputs[0, :5].tolist() == [captioning.START, *captioning.encode("a small red circle")]
    assert targets[0, :5].tolist() == [*captioning.encode("a small red circle"), captioning.END]
    assert (inputs[0, 5:] == captioning.PAD).all() and (targets[0, 5:] == captioning.PAD).all()
    assert torch.equal(inputs[1, 1:], targets[1, :-1])


def test_scorer_matches_a_step_by_step_decoder(untrained):
    """Second implementation: run the GRU one word at a time and read each word's log-probability."""
    scene = shapes.make_scene(11)
    caption = "a small red circle and a large blue square"
    scores = captioning.CaptionScorer(untrained, caption)(scene.image[None])[0]
    with torch.no_grad():
        v = untrained.encoder(scene.image[None])
        state = torch.tanh(untrained.init_state(v))[None]
        previous, expected = captioning.START, []
        for word in captioning.encode(caption):
            hidden, state = untrained.gru(torch.cat([untrained.embed(torch.tensor([previous])), v], dim=1)[:, None], state)
            expected.append(untrained.out(hidden[0, 0]).log_softmax(dim=0)[word])
            previous = word
    assert len(scores) == 9
    # one sequence call vs step-by-step calls: each step sums a few hundred products (GRU gates, output layer)
    assert_close_in_ulps(scores.detach(), torch.stack(expected), ulps=2**12)


def test_word_maps_are_the_engines_maps_and_add_up_to_the_caption_map(untrained):
    scene = shapes.make_scene(5)
    caption = scene.caption
    words, maps = captioning.word_maps(untrained, scene.image, caption, relu=False, normalize=False, size=None)
    assert words == caption.split() and maps.shape == (len(words), FEATURE_SIZE, FEATURE_SIZE)
    scorer = captioning.CaptionScorer(untrained, caption)
    for t in (0, len(words) - 1):  # K targets in one call vs single calls
        single = grad_cam(scorer, scene.image[None], lambda y, t=t: y[:, t], untrained.get_submodule(captioning.LAYER), relu=False, normalize=False, size=None)[0]
        assert_close_in_ulps(maps[t], single, ulps=2**12)
    # Grad-CAM's signed map is linear in the score: the caption's map is the sum of its words' maps
    whole = captioning.caption_map(untrained, scene.image[None], caption, relu=False, normalize=False, size=None)[0]
    assert_close_in_ulps(whole, maps.sum(dim=0), ulps=2**12)


def test_logit_score_and_the_log_probabilitys_saturation(untrained):
    """log p_t = z_t - logsumexp(z): the two scores differ by the log partition function, recomputed here."""
    scene = shapes.make_scene(2)
    caption = "a large green square"
    logits = captioning.CaptionScorer(untrained, caption, score="logit")(scene.image[None])[0]
    log_probs = captioning.CaptionScorer(untrained, caption)(scene.image[None])[0]
    previous, _ = captioning.teacher_forcing([caption])
    partition = untrained.logits(scene.image[None], previous[:, :-1]).logsumexp(dim=2)[0]
    assert_close_in_ulps(log_probs.detach(), (logits - partition).detach(), ulps=2**8)  # two orders of one subtraction
    with pytest.raises(ValueError, match="'probability'"):
        captioning.CaptionScorer(untrained, caption, score="probability")


def test_word_maps_check_their_input(untrained):
    with pytest.raises(ValueError, match="one image"):
        captioning.word_maps(untrained, torch.rand(1, 3, 64, 64), "a small red circle")
    with pytest.raises(ValueError, match="vocabulary"):
        captioning.word_maps(untrained, torch.rand(3, 64, 64), "a small orange circle")


def test_generate_returns_vocabulary_words(untrained):
    captions = untrained.generate(shapes.batch_images(shapes.make_scenes(4, seed=0)))
    assert len(captions) == 4 and all(set(c.split()) <= set(captioning.VOCAB[3:]) for c in captions)


def test_a_short_training_run_learns():
    """From seed 0, 300 steps of 32 scenes take the loss from ln(V) = 2.9 (chance) below 0.5."""
    model, losses = train.train_captioner(steps=300, batch_size=32, progress=False)
    assert losses[0] > 2.5
    assert sum(losses[-20:]) / 20 < 0.5
    assert not model.training


def test_shipped_captioner_on_fresh_test_scenes(shipped):
    exact, per_word = captioning.caption_accuracy(shipped, shapes.split_scenes("test", 500))
    assert exact >= 0.9 and per_word >= exact


def test_loader_names_the_command_when_the_checkpoint_does_not_match(tmp_path, monkeypatch):
    models = tmp_path / "models"
    models.mkdir()
    (models / "captioner.pt").write_bytes(b"not a checkpoint")
    (tmp_path / "SHA256SUMS").write_text(f"{'0' * 64}  models/captioner.pt\n")
    monkeypatch.setattr(data, "DATA_DIR", tmp_path)
    monkeypatch.setattr(data, "MODELS_DIR", models)
    monkeypatch.setattr(data, "MANIFEST", tmp_path / "SHA256SUMS")
    with pytest.raises(ValueError, match="python -m gradcam_lite.train captioner"):
        data.verified_checkpoint("captioner")
    (models / "captioner.pt").unlink()
    with pytest.raises(FileNotFoundError, match="python -m gradcam_lite.train captioner"):
        data.verified_checkpoint("captioner")
