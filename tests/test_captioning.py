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


# --- the attention captioner ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def attentive():
    torch.manual_seed(0)
    return captioning.AttentionCaptioner().eval()


def test_attention_scorer_matches_a_decoder_written_out(attentive):
    """Second implementation: keys, values, the softmax over the 64 positions and the GRU cell, one word at a time."""
    scene = shapes.make_scene(11)
    caption = "a small red circle and a large blue square"
    scores = captioning.CaptionScorer(attentive, caption)(scene.image[None])[0]
    m = attentive
    with torch.no_grad():
        A = m.features(scene.image[None])[0]  # (C, 8, 8)
        tokens = A.reshape(A.shape[0], -1).T  # positions row by row
        keys, values = tokens @ m.key.weight.T + m.key.bias + m.position, tokens @ m.value.weight.T + m.value.bias
        state = torch.tanh(m.init_state(tokens.mean(dim=0)))[None]
        previous, expected, weights = captioning.START, [], []
        for word in captioning.encode(caption):
            a = torch.softmax(keys @ m.query(state)[0] / keys.shape[1] ** 0.5, dim=0)
            context = a @ values
            state = m.cell(torch.cat([m.embed.weight[previous], context])[None], state)
            expected.append(m.out(torch.cat([state[0], context])).log_softmax(dim=0)[word])
            weights.append(a)
            previous = word
    assert_close_in_ulps(scores.detach(), torch.stack(expected), ulps=2**12)
    words, attention = captioning.word_attention(attentive, scene.image, caption, size=None)
    assert words == caption.split() and attention.shape == (9, FEATURE_SIZE, FEATURE_SIZE)
    assert_close_in_ulps(attention.flatten(1), torch.stack(weights), ulps=2**12)
    torch.testing.assert_close(attention.sum(dim=(1, 2)), torch.ones(9), rtol=0, atol=64 * torch.finfo(torch.float32).eps)


def test_hires_word_maps_are_the_elementwise_product_of_gradient_and_activations(attentive):
    from conftest import activations_and_gradients

    scene = shapes.make_scene(5)
    caption = scene.caption
    words, maps = captioning.word_maps(attentive, scene.image, caption, method="hires_cam", relu=False, normalize=False, size=None)
    scorer = captioning.CaptionScorer(attentive, caption)
    for t in (0, 3):
        A, g = activations_and_gradients(scorer, scene.image[None], attentive.get_submodule(attentive.layer), lambda y, t=t: y[:, t])
        assert_close_in_ulps(maps[t], (g * A)[0].sum(dim=0), ulps=2**12)  # a (1, T) table vs single backward passes
    with pytest.raises(ValueError, match="method must be one of"):
        captioning.word_maps(attentive, scene.image, caption, method="score_cam")


def test_loading_and_attention_name_what_is_wrong(untrained):
    with pytest.raises(ValueError, match="kind must be one of"):
        captioning.load_captioner(kind="transformer")
    with pytest.raises(TypeError, match="only an AttentionCaptioner"):
        captioning.word_attention(untrained, torch.rand(3, 64, 64), "a small red circle")


def test_next_word_scorer_gives_the_logits_the_caption_scorer_picks_from(attentive):
    scene = shapes.make_scene(3)
    caption = "a small red circle and a large blue square"
    picked = captioning.CaptionScorer(attentive, caption, score="logit")(scene.image[None])[0]
    for t, word in ((0, "a"), (2, "red"), (6, "large")):
        prefix = " ".join(caption.split()[:t])
        step = captioning.NextWordScorer(attentive, prefix)(scene.image[None])[0]
        assert step.shape == (len(captioning.VOCAB),)
        # a shorter teacher-forced run of the same steps: the same operations up to this step
        torch.testing.assert_close(step[captioning.WORD_INDEX[word]], picked[t], rtol=0, atol=0)


def test_a_short_attention_training_run_learns():
    """From seed 0, 150 steps of 32 scenes take the attention captioner's loss from about ln(V) = 2.9 below 0.8 (0.37 when
    measured: the bar leaves room for other CPUs' sums, not for a model that stopped learning)."""
    model, losses = train.train_captioner(steps=150, batch_size=32, progress=False, kind="attention")
    assert losses[0] > 2.5 and sum(losses[-20:]) / 20 < 0.8
    assert isinstance(model, captioning.AttentionCaptioner) and not model.training


def test_shipped_attention_captioner_on_fresh_test_scenes():
    model = captioning.load_captioner(kind="attention")
    exact, per_word = captioning.caption_accuracy(model, shapes.split_scenes("test", 500))
    assert exact >= 0.95 and per_word >= exact


def test_the_three_paths_add_up_to_the_whole_gradient(attentive):
    """The chain rule: y_t uses A through the initial state, the earlier steps' reads and this step's read; the gradients
    of the three one-path scorers add up to the gradient of the unchanged score, and keeping every path is the score."""
    from conftest import activations_and_gradients

    scene = shapes.make_scene(5)
    t = 3
    full = captioning.CaptionScorer(attentive, scene.caption)(scene.image[None])[0, t]
    kept_all = captioning.AttentionPathScorer(attentive, scene.caption, t)(scene.image[None])[0, 0]
    torch.testing.assert_close(kept_all, full, rtol=0, atol=0)  # the same operations
    layer = attentive.get_submodule(attentive.layer)
    _, whole = activations_and_gradients(captioning.CaptionScorer(attentive, scene.caption), scene.image[None], layer, lambda y: y[:, t])
    parts = [activations_and_gradients(captioning.AttentionPathScorer(attentive, scene.caption, t, keep=(path,)), scene.image[None], layer,
                                       lambda y: y[:, 0])[1] for path in captioning.PATHS]
    assert all(float(part.abs().max()) > 0 for part in parts)
    assert_close_in_ulps(sum(parts), whole, ulps=2**10)  # three sums of the same terms, grouped otherwise
    with pytest.raises(ValueError, match="keep takes paths from"):
        captioning.AttentionPathScorer(attentive, scene.caption, t, keep=("later steps",))
    with pytest.raises(ValueError, match="no word 99"):
        captioning.AttentionPathScorer(attentive, scene.caption, 99)
