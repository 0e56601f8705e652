r"""A visual question answering model for the shapes world, the paper's non-attention baseline.

The image encoder of :mod:`gradcam_lite.encoders` (8 x 8 feature map :math:`A`, :data:`LAYER`) gives
an image vector :math:`v`; a GRU reads the question's words and its last state gives a question
vector :math:`q`; the two are fused by an elementwise product :math:`v \odot q` and an MLP scores
every answer of :data:`gradcam_lite.worlds.shapes.ANSWERS`. No attention: the question can only
select *which features of the whole image* matter.

The score Grad-CAM explains is an answer's logit :math:`y^a`, like a class logit.
:class:`QuestionScorer` fixes the questions and returns the answers' logits (B, A), so
``grad_cam(QuestionScorer(model, question), images, answer_index, layer)`` is Grad-CAM of the answer
to *that* question: the same image with another question gives another map (:func:`answer_maps`
batches it, one question per image, with any map method).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .data import load_shipped
from .encoders import Encoder
from .maps import grad_cam
from .worlds.shapes import ANSWERS, COLOURS, SHAPES, Question, Scene, batch_images

QUESTION_WORDS = ("<pad>", "what", "colour", "shape", "is", "the", "object", "there", "a", "how", "many", "objects", "left", "of", "?", *COLOURS, *SHAPES)
WORD_INDEX = {word: i for i, word in enumerate(QUESTION_WORDS)}
ANSWER_INDEX = {answer: i for i, answer in enumerate(ANSWERS)}
PAD = 0
LAYER = "encoder.features.6"


def encode_questions(questions: list[str], device: torch.device | None = None) -> Tensor:
    """Word indices of questions (B, T), padded at the end; unknown words are an error."""
    rows = []
    for question in questions:
        words = question.split()
        unknown = [w for w in words if w not in WORD_INDEX]
        if unknown or not words:
            raise ValueError(f"cannot read {question!r}: words not in the model's vocabulary: {unknown}" if unknown else "a question is empty")
        rows.append([WORD_INDEX[w] for w in words])
    length = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (length - len(r)) for r in rows], device=device)


class VQAModel(nn.Module):
    def __init__(self, dim: int = 192, embedding: int = 64, hidden: int = 256) -> None:
        super().__init__()
        self.encoder = Encoder(dim=dim)
        self.embed = nn.Embedding(len(QUESTION_WORDS), embedding, padding_idx=PAD)
        self.reader = nn.GRU(embedding, dim, batch_first=True)
        self.classify = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, len(ANSWERS)))

    def question_vectors(self, questions: Tensor) -> Tensor:
        """The GRU's state after each question's last word (B, dim)."""
        lengths = (questions != PAD).sum(dim=1)
        with torch.backends.cudnn.flags(enabled=False):  # cuDNN's RNN backward refuses eval mode
            states, _ = self.reader(self.embed(questions))
        return torch.tanh(states[torch.arange(len(questions)), lengths - 1])

    def forward(self, images: Tensor, questions: Tensor, image_of: Tensor | None = None) -> Tensor:
        """Answer logits (Q, A) for encoded questions (Q, T) about images (B, 3, H, W): question i is about
        image ``image_of[i]`` (default: image i), so several questions share one pass of the encoder."""
        v = self.encoder(images)
        return self.classify((v if image_of is None else v[image_of]) * self.question_vectors(questions))

    @torch.no_grad()
    def answer(self, images: Tensor, questions: list[str]) -> list[str]:
        """The most likely answer to each (image, question) pair."""
        if len(questions) != images.shape[0]:
            raise ValueError(f"{images.shape[0]} images but {len(questions)} questions: pass one question per image")
        logits = self(images, encode_questions(questions, images.device))
        return [ANSWERS[i] for i in logits.argmax(dim=1).tolist()]


class QuestionScorer(nn.Module):
    """The answers' logits (B, A) for images (B, 3, H, W), image b asked question b (or all asked one question)."""

    def __init__(self, model: VQAModel, questions: str | list[str]) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("questions", encode_questions([questions] if isinstance(questions, str) else questions), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        if len(self.questions) not in (1, images.shape[0]):
            raise ValueError(f"{len(self.questions)} questions for {images.shape[0]} images: pass one question, or one per image")
        return self.model(images, self.questions.expand(images.shape[0], -1))


def answer_maps(model: VQAModel, images: Tensor, questions: list[str], answers: list[str], method: Callable[..., Tensor] = grad_cam, **options) -> Tensor:
    """Maps (B, H, W) of the logit of answer b to question b on image b (images (B, 3, H, W)), by ``method``
    (:func:`~gradcam_lite.maps.grad_cam`, :func:`~gradcam_lite.maps.hires_cam`, ...) at :data:`LAYER`, in one batched call.

    ``options`` go to the method (``counterfactual``, ``relu``, ``size``, ``normalize``).
    """
    if len(answers) != len(questions) or len(questions) != images.shape[0]:
        raise ValueError(f"answer_maps needs one question and one answer per image ({images.shape[0]}), got {len(questions)} and {len(answers)}")
    unknown = [a for a in answers if a not in ANSWER_INDEX]
    if unknown:
        raise ValueError(f"unknown answer {unknown[0]!r}; the model answers one of {ANSWERS}")
    scorer = QuestionScorer(model, questions).to(images.device)
    return method(scorer, images, [ANSWER_INDEX[a] for a in answers], model.get_submodule(LAYER), **options)


def answer_map(model: VQAModel, image: Tensor, question: str, answer: str | None = None, method: Callable[..., Tensor] = grad_cam,
               **options) -> tuple[str, Tensor]:
    """The map of an answer's logit (default: the model's answer) to ``question`` on one image (3, H, W), by ``method``
    (Grad-CAM by default): the answer, its map (H, W). ``options`` as in :func:`answer_maps`."""
    if image.dim() != 3:
        raise ValueError(f"answer_map explains one image (3, H, W), got shape {tuple(image.shape)}")
    answer = model.answer(image[None], [question])[0] if answer is None else answer
    return answer, answer_maps(model, image[None], [question], [answer], method, **options)[0]


def named_objects(scene: Scene, question: Question) -> list[int]:
    """The objects a detector of the question's *words* lights: those with the named shape (colour questions), the named
    colour (shape and left_of questions) or both named attributes (exists). For colour, shape and exists questions that
    is the object referred to alone, since questions name only what is unique; for left_of it is the named object."""
    words = question.text.split()
    objects = scene.objects
    if question.type == "colour":
        return [i for i, o in enumerate(objects) if o.shape == words[-2]]
    if question.type in ("shape", "left_of"):
        return [i for i, o in enumerate(objects) if o.colour == words[-3]]
    if question.type == "exists":
        return [i for i, o in enumerate(objects) if (o.colour, o.shape) == (words[-3], words[-2])]
    raise ValueError(f"{question.text!r} names no object to detect")


def attribute_objects(scene: Scene, question: Question) -> list[int]:
    """The objects an attribute detector lights for a question that refers to one object: those having the answer's
    attribute (its colour for a colour question, its shape for shape and left_of), and for "is there a <colour>
    <shape> ?" those having either named attribute. The object referred to is always among them."""
    if question.refers_to is None:
        raise ValueError(f"{question.text!r} refers to no single object: no attribute to detect")
    objects = scene.objects
    if question.type == "colour":
        return [i for i, o in enumerate(objects) if o.colour == question.answer]
    if question.type in ("shape", "left_of"):
        return [i for i, o in enumerate(objects) if o.shape == question.answer]
    colour, shape = question.text.split()[-3:-1]
    return [i for i, o in enumerate(objects) if o.colour == colour or o.shape == shape]


def accuracy_by_type(model: VQAModel, pairs: list, batch_size: int = 250) -> dict[str, float]:
    """Accuracy per question type, and overall (key ``"all"``), on (scene, question) pairs."""
    correct: dict[str, list[bool]] = {}
    device = next(model.parameters()).device
    for start in range(0, len(pairs), batch_size):
        part = pairs[start : start + batch_size]
        answers = model.answer(batch_images([s for s, _ in part]).to(device), [q.text for _, q in part])
        for (_, question), answer in zip(part, answers):
            correct.setdefault(question.type, []).append(answer == question.answer)
            correct.setdefault("all", []).append(answer == question.answer)
    return {kind: sum(values) / len(values) for kind, values in correct.items()}


def load_vqa(device: str | torch.device = "cpu") -> VQAModel:
    """The shipped VQA model (``data/models/vqa.pt``, checksum verified), in eval mode."""
    return load_shipped(VQAModel(), "vqa", device)
