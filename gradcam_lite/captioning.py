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

A second captioner, :class:`AttentionCaptioner` (Show, Attend and Tell, Xu et al. 2015), reads the image
*by position*: at each step it attends over the 64 positions of :math:`A` with keys that carry a learned
embedding of the position, and feeds the attended features to the GRU. Its attention weights are a map of
their own (:func:`word_attention`). Both models are loaded by :func:`load_captioner` and explained by
:func:`word_maps`, with Grad-CAM or HiResCAM.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from .data import load_shipped
from .encoders import FEATURE_SIZE, Encoder, feature_extractor
from .maps import grad_cam, hires_cam, normalize_maps, upsample
from .worlds.shapes import COLOURS, MAX_OBJECTS, SHAPES, SIZES, batch_images

VOCAB = ("<pad>", "<start>", "<end>", "a", "and", *SIZES, *COLOURS, *SHAPES)
WORD_INDEX = {word: i for i, word in enumerate(VOCAB)}
PAD, START, END = 0, 1, 2
MAX_WORDS = 4 * MAX_OBJECTS + (MAX_OBJECTS - 1)  # "a size colour shape" per object, "and" between
LAYER = "encoder.features.6"  # its last block: convolution, BatchNorm, ReLU


class Captioner(nn.Module):
    """Show and tell: the image vector starts the GRU and is fed to it again at every step (no attention)."""

    layer = LAYER

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


class AttentionCaptioner(nn.Module):
    r"""Show, attend and tell over the 8 x 8 positions of :math:`A` (``features``, the layer explained).

    Position :math:`p` has the key :math:`k_p = W_k A_p + e_p` (:math:`e_p` a learned embedding of the position)
    and the value :math:`u_p = W_u A_p`. At step :math:`t` the GRU's state :math:`h_{t-1}` asks
    :math:`q_t = W_q h_{t-1}`, attends :math:`a_{tp} = \mathrm{softmax}_p(q_t \cdot k_p / \sqrt{d})`, and reads
    :math:`c_t = \sum_p a_{tp} u_p` beside the previous word; the next word's logits come from :math:`h_t` and
    :math:`c_t`. The state starts from the average of :math:`A` over positions, which knows *what* is in the
    image but not *where*: where each object is, the model can only learn through the position keys.
    """

    layer = "features.6"

    def __init__(self, channels: int = 64, dim: int = 128, hidden: int = 256, embedding: int = 64) -> None:
        super().__init__()
        self.features = feature_extractor(channels)
        self.position = nn.Parameter(0.1 * torch.randn(FEATURE_SIZE * FEATURE_SIZE, dim))
        self.key, self.value, self.query = nn.Linear(channels, dim), nn.Linear(channels, dim), nn.Linear(hidden, dim)
        self.init_state = nn.Linear(channels, hidden)
        self.embed = nn.Embedding(len(VOCAB), embedding, padding_idx=PAD)
        self.cell = nn.GRUCell(embedding + dim, hidden)
        self.out = nn.Linear(hidden + dim, len(VOCAB))

    def read(self, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Keys and values (B, 64, d) of the positions, and the average of :math:`A` over them (B, channels)."""
        tokens = self.features(images).flatten(2).transpose(1, 2)  # (B, 64 positions, channels), row by row
        return self.key(tokens) + self.position, self.value(tokens), tokens.mean(dim=1)

    def initial_state(self, average: Tensor) -> Tensor:
        """The GRU's first state (B, hidden), from the average of :math:`A`."""
        return torch.tanh(self.init_state(average))

    def step(self, keys: Tensor, values: Tensor, state: Tensor, word: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One decoding step: the next word's logits (B, V), the new state and the attention weights (B, 64)."""
        attention = (keys @ self.query(state)[:, :, None])[..., 0].div(math.sqrt(keys.shape[-1])).softmax(dim=1)
        context = (attention[:, :, None] * values).sum(dim=1)
        state = self.cell(torch.cat([self.embed(word), context], dim=1), state)
        return self.out(torch.cat([state, context], dim=1)), state, attention

    def decode_forced(self, images: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
        """Teacher-forced logits (B, T, V) and attention weights (B, T, 64) given the words before each step (B, T)."""
        keys, values, average = self.read(images)
        state = self.initial_state(average)
        logits, weights = [], []
        for t in range(previous.shape[1]):
            step_logits, state, attention = self.step(keys, values, state, previous[:, t])
            logits.append(step_logits)
            weights.append(attention)
        return torch.stack(logits, dim=1), torch.stack(weights, dim=1)

    def logits(self, images: Tensor, previous: Tensor) -> Tensor:
        """Next-word logits (B, T, V) given the images (B, 3, H, W) and the words before each step (B, T), <start> first."""
        return self.decode_forced(images, previous)[0]

    @torch.no_grad()
    def generate(self, images: Tensor, max_words: int = MAX_WORDS) -> list[str]:
        """Greedy captions of a batch of images (B, 3, H, W)."""
        keys, values, average = self.read(images)
        state = self.initial_state(average)
        word = torch.full((images.shape[0],), START, dtype=torch.long, device=images.device)
        words = []
        for _ in range(max_words + 1):
            step_logits, state, _ = self.step(keys, values, state, word)
            word = step_logits.argmax(dim=1)
            words.append(word)
        return [decode(row) for row in torch.stack(words, dim=1).tolist()]


PATHS = ("initial state", "earlier steps", "this step")


class AttentionPathScorer(nn.Module):
    r"""One word's score :math:`y_t` of an :class:`AttentionCaptioner`, with the gradient let through some of the
    paths by which it depends on :math:`A`, the others detached (the forward values are unchanged):

    - ``"initial state"``: the GRU's first state, read from the average of :math:`A` over positions;
    - ``"earlier steps"``: the keys and values read at the steps before word ``t``, carried in the GRU's state;
    - ``"this step"``: the keys and values read for word ``t`` itself.

    By the chain rule the gradient of :math:`y_t` is the sum of the three paths' gradients, so the three one-path
    maps of a signed, linear method (``relu=False``, ``normalize=False``) add up to the full one. Output (B, 1).
    """

    def __init__(self, captioner: AttentionCaptioner, caption: str, t: int, keep: tuple[str, ...] = PATHS, score: Score = "log_prob") -> None:
        super().__init__()
        unknown = [path for path in keep if path not in PATHS]
        if unknown or score not in ("log_prob", "logit"):
            raise ValueError(f"keep takes paths from {PATHS} (got {unknown}); score 'log_prob' or 'logit' (got {score!r})")
        previous, following = teacher_forcing([caption])
        if not 0 <= t < previous.shape[1] - 1:
            raise ValueError(f"the caption has {previous.shape[1] - 1} words, no word {t}")
        self.captioner, self.t, self.keep, self.score = captioner, t, set(keep), score
        self.register_buffer("previous", previous[:, : t + 1], persistent=False)
        self.word = int(following[0, t])

    def forward(self, images: Tensor) -> Tensor:
        keys, values, average = self.captioner.read(images)
        state = self.captioner.initial_state(average if "initial state" in self.keep else average.detach())
        previous = self.previous.expand(images.shape[0], -1)
        for step in range(self.t + 1):
            path = "this step" if step == self.t else "earlier steps"
            read = (keys, values) if path in self.keep else (keys.detach(), values.detach())
            logits, state, _ = self.captioner.step(*read, state, previous[:, step])
        scores = logits.log_softmax(dim=1) if self.score == "log_prob" else logits
        return scores[:, [self.word]]


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

    def __init__(self, captioner: Captioner | AttentionCaptioner, caption: str, score: Score = "log_prob") -> None:
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


class NextWordScorer(nn.Module):
    r"""The logits (B, V) of the word that follows ``prefix`` (teacher-forced): every word's score at one step, so that a
    callable target can explain a contrast, e.g. ``lambda z: z[:, WORD_INDEX["blue"]] - z[:, WORD_INDEX["yellow"]]``."""

    def __init__(self, captioner: Captioner | AttentionCaptioner, prefix: str) -> None:
        super().__init__()
        self.captioner = captioner
        self.register_buffer("previous", torch.tensor([[START, *(encode(prefix) if prefix.strip() else [])]]), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.captioner.logits(images, self.previous.expand(images.shape[0], -1))[:, -1]


Method = Literal["grad_cam", "hires_cam"]
METHODS: dict[str, Callable[..., Tensor]] = {"grad_cam": grad_cam, "hires_cam": hires_cam}


def word_maps(model: Captioner | AttentionCaptioner, image: Tensor, caption: str | None = None, score: Score = "log_prob",
              method: Method = "grad_cam", **options) -> tuple[list[str], Tensor]:
    """The map of every word's ``score`` in ``caption`` (default: the model's own caption) on one image (3, H, W), by
    ``method`` at the model's layer: words, maps (T, H, W). ``options`` go to the method (``counterfactual``, ``relu``,
    ``size``, ``normalize``).
    """
    if image.dim() != 3:
        raise ValueError(f"word_maps explains one image (3, H, W), got shape {tuple(image.shape)}")
    if method not in METHODS:
        raise ValueError(f"method must be one of {list(METHODS)}, got {method!r}")
    caption = model.generate(image[None])[0] if caption is None else caption
    scorer = CaptionScorer(model, caption, score).to(image.device)
    maps = METHODS[method](scorer, image[None], [list(range(len(scorer.words)))], model.get_submodule(model.layer), **options)[0]
    return scorer.words, maps


def word_attention(model: AttentionCaptioner, image: Tensor, caption: str, size: tuple[int, int] | None = (64, 64)) -> tuple[list[str], Tensor]:
    """Each word's attention weights as a map, teacher-forced on ``caption``: the weights :math:`a_{tp}` the model
    read word ``t`` with, (T, 8, 8), or upsampled and normalised like a Grad-CAM map to ``size``."""
    if not isinstance(model, AttentionCaptioner):
        raise TypeError(f"only an AttentionCaptioner has attention weights, got a {type(model).__name__}")
    previous, _ = teacher_forcing([caption], image.device)
    with torch.no_grad():
        _, weights = model.decode_forced(image[None], previous[:, :-1])
    maps = weights[0].unflatten(1, (FEATURE_SIZE, FEATURE_SIZE))
    return caption.split(), maps if size is None else normalize_maps(upsample(maps, size))


def caption_map(model: Captioner | AttentionCaptioner, images: Tensor, caption: str, **options) -> Tensor:
    r"""Grad-CAM of the whole caption's log-probability :math:`\sum_t y_t` on images (B, 3, H, W): maps (B, H, W)."""
    scorer = CaptionScorer(model, caption).to(images.device)
    return grad_cam(scorer, images, lambda scores: scores.sum(dim=1), model.get_submodule(model.layer), **options)


def caption_accuracy(model: Captioner | AttentionCaptioner, scenes: list, batch_size: int = 250) -> tuple[float, float]:
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


Kind = Literal["show_and_tell", "attention"]
KINDS: dict[str, tuple[type[nn.Module], str]] = {"show_and_tell": (Captioner, "captioner"), "attention": (AttentionCaptioner, "attention_captioner")}


def load_captioner(device: str | torch.device = "cpu", kind: Kind = "show_and_tell") -> Captioner | AttentionCaptioner:
    """A shipped captioner (``data/models/captioner.pt`` or ``attention_captioner.pt``, checksum verified), in eval mode."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {list(KINDS)}, got {kind!r}")
    model, name = KINDS[kind]
    return load_shipped(model(), name, device)
