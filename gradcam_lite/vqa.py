r"""A visual question answering model for the shapes world, the paper's non-attention baseline.

The image encoder of :mod:`gradcam_lite.encoders` (8 x 8 feature map :math:`A`, :data:`LAYER`) gives
an image vector :math:`v`; a GRU reads the question's words and its last state gives a question
vector :math:`q`; the two are fused by an elementwise product :math:`v \odot q` and an MLP scores
every answer of :data:`gradcam_lite.worlds.shapes.ANSWERS`. No attention: the question can only
select *which features of the whole image* matter.

The score Grad-CAM explains is an answer's logit :math:`y^a`, like a class logit.
:class:`QuestionScorer` fixes one question and returns the answers' logits (B, A), so
``grad_cam(QuestionScorer(model, question), images, answer_index, layer)`` is Grad-CAM of the answer
to *that* question: the same image with another question gives another map.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .data import load_shipped
from .encoders import Encoder
from .maps import grad_cam
from .worlds.shapes import ANSWERS, COLOURS, SHAPES, batch_images

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
    """The answers' logits (B, A) for images (B, 3, H, W), all asked one fixed question."""

    def __init__(self, model: VQAModel, question: str) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("question", encode_questions([question]), persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images, self.question.expand(images.shape[0], -1))


def answer_map(model: VQAModel, image: Tensor, question: str, answer: str | None = None, **options) -> tuple[str, Tensor]:
    """Grad-CAM of an answer's logit (default: the model's answer) to ``question`` on one image (3, H, W): the answer, its map (H, W).

    ``options`` go to :func:`~gradcam_lite.maps.grad_cam` (``counterfactual``, ``relu``, ``size``, ``normalize``).
    """
    if image.dim() != 3:
        raise ValueError(f"answer_map explains one image (3, H, W), got shape {tuple(image.shape)}")
    answer = model.answer(image[None], [question])[0] if answer is None else answer
    if answer not in ANSWER_INDEX:
        raise ValueError(f"unknown answer {answer!r}; the model answers one of {ANSWERS}")
    scorer = QuestionScorer(model, question).to(image.device)
    return answer, grad_cam(scorer, image[None], ANSWER_INDEX[answer], model.get_submodule(LAYER), **options)[0]


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
