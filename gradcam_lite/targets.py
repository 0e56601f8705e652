r"""What an explanation explains: turning a ``target`` into one scalar score per image and map.

Grad-CAM explains a scalar :math:`y` (a class logit :math:`y^c`, a word's score, an answer's
score). Accepted forms of ``target`` for a batch of :math:`B` images:

- an ``int`` :math:`c`: the same class for every image, scores :math:`y_b = f(x_b)_c`;
- a sequence (or 1-D tensor or array) of :math:`B` ints: one class per image;
- a 2-D (B, K) tensor, array or nested list: :math:`K` classes per image, giving :math:`K` maps
  per image from one forward pass;
- a callable ``f(model_output) -> Tensor[B]``: any differentiable scalar per image.

Class indices are integers: Python ints, numpy integers, integer tensors or arrays. A float
(even ``2.0``) or a bool is refused with an error, never truncated or read as 0 and 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

Target = int | Sequence[int] | Sequence[Sequence[int]] | Tensor | Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class ClassTargets:
    """Class indices (B, K) and whether the caller asked for K maps per image (else K == 1)."""

    indices: Tensor
    per_image_k: bool


def contains_bool(target: object) -> bool:
    """Whether a nested sequence holds a bool anywhere (numpy would silently read True as 1)."""
    if isinstance(target, (bool, np.bool_)):
        return True
    if isinstance(target, np.ndarray):
        return target.dtype == np.bool_
    return isinstance(target, Sequence) and not isinstance(target, str) and any(contains_bool(t) for t in target)


def as_index_tensor(target: object) -> Tensor:
    """Class indices as a long tensor, from an int, numpy integers, or (nested) sequences of them.

    Only integer types are accepted: a float (``2.7``, even ``2.0``) is refused rather than
    truncated, and a bool is refused rather than read as 0 or 1.
    """
    if isinstance(target, Tensor):
        if target.dtype == torch.bool:
            raise TypeError("target must be class indices (ints), not bools")
        if target.is_floating_point() or target.is_complex():
            raise TypeError(f"a target tensor must hold integer class indices, got dtype {target.dtype}")
        return target.detach().to("cpu", torch.long)
    if contains_bool(target):
        raise TypeError(f"target must be class indices (ints), not bools; got {target!r}")
    if not isinstance(target, (int, np.integer, np.ndarray, Sequence)) or isinstance(target, (str, bytes)):
        raise TypeError(f"target must be an int, a sequence of ints, a (B, K) table or a callable, got {type(target).__name__}")
    try:
        array = np.asarray(target)
    except (TypeError, ValueError, OverflowError) as error:
        raise TypeError(f"target must be an int, B ints, or a (B, K) table of ints; got {target!r}") from error
    if array.size == 0:
        return torch.zeros(array.shape, dtype=torch.long)
    if array.dtype.kind not in "iu":
        raise TypeError(f"target must hold integer class indices, got {array.dtype} values: {target!r}")
    return torch.from_numpy(array.astype(np.int64))


def parse_class_targets(target: Target, batch_size: int) -> ClassTargets:
    """Validate an index-style ``target`` (not a callable) against the batch size."""
    indices = as_index_tensor(target)
    if indices.dim() == 0:
        return ClassTargets(indices.reshape(1, 1).expand(batch_size, 1), per_image_k=False)
    if indices.dim() > 2:
        raise ValueError(f"target has {indices.dim()} dimensions; use an int, B ints, or a (B, K) table")
    if indices.shape[0] != batch_size:
        raise ValueError(f"target lists {indices.shape[0]} entries but the batch holds {batch_size} images")
    if indices.dim() == 2 and indices.shape[1] == 0:
        raise ValueError("target table has zero columns (K = 0): ask for at least one class per image")
    return ClassTargets(indices.reshape(batch_size, -1), per_image_k=indices.dim() == 2)


def check_range(indices: Tensor, num_classes: int) -> None:
    bad = indices[(indices < 0) | (indices >= num_classes)]
    if bad.numel():
        raise IndexError(f"target class {int(bad[0])} is out of range: the output has {num_classes} classes (0 to {num_classes - 1})")


def class_scores(output: Tensor, targets: ClassTargets) -> Tensor:
    """Scores (B, K) picked from a (B, num_classes) output."""
    if not isinstance(output, Tensor):
        keys = f" with keys {list(output)}" if isinstance(output, dict) else ""
        raise TypeError(
            f"class-index targets need the model to return a (B, num_classes) tensor, it returned a {type(output).__name__}{keys}; "
            "pass a callable target that picks the scores, e.g. target=lambda out: out[...][:, c]"
        )
    if output.dim() != 2:
        raise ValueError(
            f"class-index targets need a (B, num_classes) output, the model returned shape {tuple(output.shape)}; "
            "pass a callable target instead"
        )
    check_range(targets.indices, output.shape[1])
    return output.gather(1, targets.indices.to(output.device))


def callable_scores(target: Callable[[Tensor], Tensor], output: Tensor, batch_size: int) -> Tensor:
    """Scores (B, 1) from a callable target, checked to be one differentiable scalar per image."""
    scores = target(output)
    if not isinstance(scores, Tensor) or scores.shape != (batch_size,):
        shape = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"a callable target must return a tensor of shape ({batch_size},), one score per image; got {shape}")
    return scores[:, None]


def parse_target(target: Target, batch_size: int) -> ClassTargets | Callable[[Tensor], Tensor]:
    """Validate ``target`` before the forward pass: class indices are parsed, a callable is kept as is."""
    return target if callable(target) and not isinstance(target, Tensor) else parse_class_targets(target, batch_size)


def target_scores(parsed: ClassTargets | Callable[[Tensor], Tensor], output: Tensor, batch_size: int) -> Tensor:
    """Scores (B, K) of the model's ``output`` for a parsed target."""
    return class_scores(output, parsed) if isinstance(parsed, ClassTargets) else callable_scores(parsed, output, batch_size)


def asks_k_per_image(parsed: ClassTargets | Callable[[Tensor], Tensor]) -> bool:
    return isinstance(parsed, ClassTargets) and parsed.per_image_k


def score_gradients(scores: Tensor, wrt: Tensor, what: str) -> Tensor:
    """Gradients (B, K, ...) of each column of ``scores`` (B, K) with respect to ``wrt`` (B, ...).

    Summing a column over the batch is exact when, as in eval mode, image b's score depends on image
    b alone. Each column needs its own backward through the graph between ``wrt`` and the scores.
    """
    if not scores.requires_grad:
        raise ValueError(f"the target's scores do not depend on {what}: there is no gradient to explain")
    gradients = []
    for k in range(scores.shape[1]):
        (gradient,) = torch.autograd.grad(scores[:, k].sum(), wrt, retain_graph=k + 1 < scores.shape[1], allow_unused=True)
        if gradient is None:
            raise ValueError(f"the target's scores do not depend on {what}: there is no gradient to explain")
        gradients.append(gradient)
    return torch.stack(gradients, dim=1)
