r"""A show-and-tell captioner for the shapes world, and the scores Grad-CAM explains in it.

The model (no attention): the image encoder of :mod:`gradcam_lite.encoders` (its 8 x 8 feature
map :math:`A`, :data:`LAYER`, is the layer Grad-CAM explains) gives an image vector :math:`v`, which
initialises a GRU and is fed to it again at every step beside the previous word. Words are decoded greedily.

A caption's words are scored like classes. For word :math:`t` of a caption :math:`w_1 \dots w_T`,
teacher-forced on the words before it,

.. math::

    y_t = \log p(w_t \mid w_{<t}, \text{image}), \qquad
    y_{\text{caption}} = \sum_{t} y_t ,

scalars of the image like a class logit, whose gradients reach :math:`A` through the decoder.
The word's *logit* :math:`z_t` (before the softmax over the vocabulary) is available too
(``score="logit"``): :math:`\partial y_t = (1 - p_t)\,\partial z_t - \sum_{j \ne w_t} p_j\, \partial z_j`
vanishes as the model grows certain of the word (:math:`p_t \to 1`), so raw map values of
near-certain words are tiny under the log-probability, and comparable only under the logit.
:class:`CaptionScorer` returns the :math:`T` scores as a (B, T) output, so the engine's table target
``[[0, 1, ..., T-1]]`` gives every word's map from one forward pass, and a callable target
(``lambda y: y.sum(dim=1)``) the whole caption's: no second engine.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from .data import load_shipped
from .encoders import Encoder
from .maps import grad_cam
from .worlds.shapes import COLOURS, MAX_OBJECTS, SHAPES, SIZES, batch_images

VOCAB = ("<pad>", "<start>", "<end>", "a", "and", *SIZES, *COLOURS, *SHAPES)
WORD_INDEX = {word: i for i, word in enumerate(VOCAB)}
PAD, START, END = 0, 1, 2
MAX_WORDS = 4 * MAX_OBJECTS + (MAX_OBJECTS - 1)  # "a size colour shape" per object, "and" between
LAYER = "encoder.features.6"  # its last block: convolution, BatchNorm, ReLU


class Captioner(nn.Module):
    def __init__(self, dim: int = 192, hidden: int = 256, embedding: int = 64) -> None:
        super().__init__()
        self.encoder = Encoder(dim=dim)
        self.embed = nn.Embedding(len(VOCAB), embedding, padding_idx=PAD)
        self.init_state = nn.Linear(dim, hidden)
        self.gru = nn.GRU(embedding + dim, hidden, batch_first=True)
        self.out = nn.Linear(hidden, len(VOCAB))

    def logits(self, images: Tensor, previous: Tensor) -> Tensor:
        """Next-word logits (B, T, V) given the images (B, 3, H, W) and the words before each step (B, T), <start> first."""
        v = self.encoder(images)
        state = torch.tanh(self.init_state(v))[None]
        steps = torch.cat([self.embed(previous), v[:, None].expand(-1, previous.shape[1], -1)], dim=2)
        # cuDNN's RNN backward refuses eval mode, and Grad-CAM differentiates an eval-mode model
        with torch.backends.cudnn.flags(enabled=False):
            hidden, _ = self.gru(steps, state)
        return self.out(hidden)

    @torch.no_grad()
    def generate(self, images: Tensor, max_words: int = MAX_WORDS) -> list[str]:
        """Greedy captions of a batch of images (B, 3, H, W)."""
        v = self.encoder(images)
        state = torch.tanh(self.init_state(v))[None]
        word = torch.full((images.shape[0],), START, dtype=torch.long, device=images.device)
        words = []
        for _ in range(max_words + 1):
            hidden, state = self.gru(torch.cat([self.embed(word), v], dim=1)[:, None], state)
            word = self.out(hidden[:, 0]).argmax(dim=1)
            words.append(word)
        return [decode(row) for row in torch.stack(words, dim=1).tolist()]


def encode(caption: str) -> list[int]:
    """Word indices of a caption (without <start> or <end>); unknown words are an error."""
    unknown = [w for w in caption.split() if w not in WORD_INDEX]
    if unknown:
        raise ValueError(f"words not in the captioner's vocabulary: {unknown}; it knows {VOCAB[3:]}")
    if not caption.split():
        raise ValueError("the caption is empty")
    return [WORD_INDEX[w] for w in caption.split()]


def decode(indices: list[int]) -> str:
    """Words up to the first <end>."""
    words = []
    for i in indices:
        if i == END:
            break
        words.append(VOCAB[i])
    return " ".join(words)


def teacher_forcing(captions: list[str], device: torch.device | None = None) -> tuple[Tensor, Tensor]:
    """Inputs (<start> w_1 ... w_T, padded) and targets (w_1 ... w_T <end>, padded) of captions: two (B, T+1) tensors."""
    encoded = [encode(c) for c in captions]
    length = max(len(e) for e in encoded) + 1
    inputs = torch.full((len(captions), length), PAD, dtype=torch.long)
    targets = torch.full((len(captions), length), PAD, dtype=torch.long)
    for row, words in enumerate(encoded):
        inputs[row, : len(words) + 1] = torch.tensor([START, *words])
        targets[row, : len(words) + 1] = torch.tensor([*words, END])
    return inputs.to(device), targets.to(device)


Score = Literal["log_prob", "logit"]


class CaptionScorer(nn.Module):
    r"""The images' scores of one caption's words, output (B, T): :math:`y_t = \log p(w_t \mid w_{<t}, \text{image})`, or the word's logit."""

    def __init__(self, captioner: Captioner, caption: str, score: Score = "log_prob") -> None:
        super().__init__()
        if score not in ("log_prob", "logit"):
            raise ValueError(f"score must be 'log_prob' or 'logit', got {score!r}")
        self.captioner = captioner
        self.score = score
        self.words = caption.split()
        previous, following = teacher_forcing([caption])
        self.register_buffer("previous", previous[:, :-1], persistent=False)  # the <end> step is not a word of the caption
        self.register_buffer("following", following[:, :-1], persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        batch = images.shape[0]
        scores = self.captioner.logits(images, self.previous.expand(batch, -1))
        if self.score == "log_prob":
            scores = scores.log_softmax(dim=2)
        return scores.gather(2, self.following.expand(batch, -1)[..., None])[..., 0]


def word_maps(model: Captioner, image: Tensor, caption: str | None = None, score: Score = "log_prob", **options) -> tuple[list[str], Tensor]:
    """Grad-CAM of every word's ``score`` in ``caption`` (default: the model's own caption) on one image (3, H, W): words, maps (T, H, W).

    ``options`` go to :func:`~gradcam_lite.maps.grad_cam` (``counterfactual``, ``relu``, ``size``, ``normalize``).
    """
    if image.dim() != 3:
        raise ValueError(f"word_maps explains one image (3, H, W), got shape {tuple(image.shape)}")
    caption = model.generate(image[None])[0] if caption is None else caption
    scorer = CaptionScorer(model, caption, score).to(image.device)
    maps = grad_cam(scorer, image[None], [list(range(len(scorer.words)))], model.get_submodule(LAYER), **options)[0]
    return scorer.words, maps


def caption_map(model: Captioner, images: Tensor, caption: str, **options) -> Tensor:
    r"""Grad-CAM of the whole caption's log-probability :math:`\sum_t y_t` on images (B, 3, H, W): maps (B, H, W)."""
    scorer = CaptionScorer(model, caption).to(images.device)
    return grad_cam(scorer, images, lambda scores: scores.sum(dim=1), model.get_submodule(LAYER), **options)


def caption_accuracy(model: Captioner, scenes: list, batch_size: int = 250) -> tuple[float, float]:
    """Exact-match rate of the generated captions, and per-word accuracy (word t of the truth vs word t generated)."""
    exact = correct = total = 0
    device = next(model.parameters()).device
    for start in range(0, len(scenes), batch_size):
        part = scenes[start : start + batch_size]
        generated = model.generate(batch_images(part).to(device))
        for scene, caption in zip(part, generated):
            truth, words = scene.caption.split(), caption.split()
            exact += words == truth
            correct += sum(a == b for a, b in zip(truth, words))
            total += len(truth)
    return exact / len(scenes), correct / total


def load_captioner(device: str | torch.device = "cpu") -> Captioner:
    """The shipped captioner (``data/models/captioner.pt``, checksum verified), in eval mode."""
    return load_shipped(Captioner(), "captioner", device)
