r"""The experiments of notebook 10, evaluating explanations, and the several-instances test of notebook 06.

Every method is a function ``(model, x, targets) -> maps (B, H, W)``, non-negative, at the
input's size, its layer fixed by the table that holds it (:func:`method_table`): Grad-CAM, Grad-CAM++, CAM, guided backpropagation and Guided Grad-CAM
(a gradient image :math:`g \in \mathbb{R}^{3 \times H \times W}` becomes the map
:math:`\max_{\text{colour}} |g|`, :func:`pixel_map`), and the two baselines that look at nothing, a
Gaussian blob at the centre and a random smooth map (:data:`BASELINES`). All are scored alike by
:mod:`gradcam_lite.metrics`.

The adversarial attack is projected gradient descent (Madry et al. 2018) on the cross-entropy of
the true class, in the :math:`L_\infty` ball of radius :math:`\epsilon` around the image in *pixel*
units (a pixel value runs from 0 to 1, so :math:`\epsilon = 2/255` is two grey levels):

.. math::

    x_{t+1} = \Pi_{\|x - x_0\|_\infty \le \epsilon,\; 0 \le x \le 1}\big(x_t + a\, \mathrm{sign}\, \nabla_x \mathrm{CE}(f(x_t), c)\big).

``python -m gradcam_lite.evaluation`` precomputes the occlusion maps of the photos (a few
seconds each), written to :data:`OCCLUSION_FILE` and listed in ``data/SHA256SUMS``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import data, models
from .guided import guided_backprop, guided_grad_cam
from .maps import cam, grad_cam, grad_cam_pp, is_constant, normalize_maps, smooth_grad_cam_pp, upsample
from .checks import check_call, check_finite
from .metrics import Box, box_from_map, centre_blob, iou, mask_share, occlusion_map, pointing_hits, random_smooth_map
from .worlds import shapes

Method = Callable[[nn.Module, Tensor, list[int]], Tensor]


def pixel_map(gradients: Tensor) -> Tensor:
    """A map (B, H, W) from gradient images (B, C, H, W): the largest absolute value over the colour channels."""
    if gradients.dim() != 4:
        raise ValueError(f"pixel_map takes gradient images (B, C, H, W), got shape {tuple(gradients.shape)}")
    return gradients.abs().amax(dim=1)


def final_linear(model: nn.Module) -> nn.Linear:
    """The last linear layer of a network whose head is global average pooling and one linear layer."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear layer: CAM needs a global-average-pooling and linear head")
    return linears[-1]


def class_activation_map(model: nn.Module, x: Tensor, targets: list[int]) -> Tensor:
    """CAM (B, H, W): :math:`\\mathrm{ReLU}(\\sum_k w^c_k A^k)` of ``model.features``, upsampled and normalised like Grad-CAM
    (a map constant at the features' resolution comes out all zero).

    Only for a model that is ``features``, global average pooling, then one linear layer (both of the course's classifiers).
    """
    check_call(model, x)
    with torch.no_grad():
        raw = cam(model.features(x), final_linear(model).weight, targets).clamp(min=0)
    return normalize_maps(upsample(raw, tuple(x.shape[-2:])), is_constant(raw))


def method_table(layer: str) -> dict[str, Method]:
    """The methods compared: Grad-CAM, Grad-CAM++ and Guided Grad-CAM at ``layer``; CAM at ``features``, the layer the
    pooling reduces (where it equals Grad-CAM); guided backpropagation, which needs no layer."""
    return {
        "Grad-CAM": lambda model, x, t: grad_cam(model, x, t, layer),
        "Grad-CAM++": lambda model, x, t: grad_cam_pp(model, x, t, layer),
        "CAM": class_activation_map,
        "guided backprop": lambda model, x, t: pixel_map(guided_backprop(model, x, t)),
        "Guided Grad-CAM": lambda model, x, t: pixel_map(guided_grad_cam(model, x, t, layer)),
    }


def baseline_maps(n: int, size: int, seed: int = 0) -> dict[str, Tensor]:
    """The maps of the baselines for ``n`` images: the centre blob, and random smooth maps (8 x 8, upsampled), seeded."""
    if n < 1 or size < 1:
        raise ValueError(f"baseline_maps needs n >= 1 images of size >= 1, got n={n}, size={size}")
    generator = torch.Generator().manual_seed(seed)
    return {"centre": centre_blob(size).expand(n, size, size),
            "random": torch.stack([random_smooth_map((size, size), 8, generator) for _ in range(n)])}


def count_passes(module: nn.Module, run: Callable[[], object]) -> tuple[int, float]:
    """How many images went through ``module`` (a network's ``features``, say) while ``run()`` ran, and the seconds it took."""
    seen = []
    handle = module.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].shape[0]) if inputs else None)
    start = time.perf_counter()
    try:
        run()
    finally:
        handle.remove()
    return sum(seen), time.perf_counter() - start


class MapScores(NamedTuple):
    hit: Tensor  # per case, the pointing game (bool)
    share: Tensor  # the map's share on the object's mask
    iou: Tensor  # IoU of the map's weak-localisation box with the object's box; NaN where the case has no single box


def score_maps(maps: Tensor, masks: Tensor, near: Tensor, boxes: list[Box | None], threshold: float = 0.15) -> MapScores:
    """Score maps (N, H, W) against their objects' masks (N, H, W), the masks widened by the pointing game's tolerance
    (``near``, see :func:`~gradcam_lite.metrics.tolerant_mask`), and their boxes (in the maps' pixels, None where there is none).

    A map with no positive value has no box: its IoU is 0, as a box that misses the object.
    """
    if not (maps.shape == masks.shape == near.shape and len(boxes) == len(maps)):
        raise ValueError(f"{tuple(maps.shape)} maps, {tuple(masks.shape)} masks, {tuple(near.shape)} tolerant masks and {len(boxes)} boxes do not match")
    check_finite(maps, "the maps")
    height, width = maps.shape[-2:]
    for box in boxes:
        if box is not None and not (0 <= box[0] < box[2] <= width and 0 <= box[1] < box[3] <= height):
            raise ValueError(f"box {box} is not a non-empty box inside maps of height {height} and width {width}")
    shares = torch.tensor([mask_share(m, k) for m, k in zip(maps, masks)])
    overlaps = torch.tensor([float("nan") if box is None else iou(box_from_map(m, threshold), box) if float(m.max()) > 0 else 0.0
                             for m, box in zip(maps, boxes)])
    return MapScores(pointing_hits(maps, near), shares, overlaps)


# --- several instances of one class ------------------------------------------------------------------


class InstanceShares(NamedTuple):
    smallest: Tensor  # per scene, the map's share on its smallest instance
    largest: Tensor  # on its largest instance
    instances: Tensor  # on all its instances together
    outside: Tensor  # outside every instance (1 - instances, or 0 for an all-zero map)

    @property
    def smallest_among_instances(self) -> Tensor:
        """How the map divides its mass *on the instances*: the smallest's part of it (0 where the instances get none)."""
        return torch.where(self.instances > 0, self.smallest / self.instances.clamp(min=1e-12), torch.zeros_like(self.smallest))


def instance_shares(maps: Tensor, scenes: list) -> InstanceShares:
    """Per scene (maps (N, H, W) of the shape all its objects share), the shares on the smallest and largest instance,
    on all instances and outside them all."""
    if len(maps) != len(scenes):
        raise ValueError(f"{len(maps)} maps for {len(scenes)} scenes")
    check_finite(maps, "the maps")
    mixed = [i for i, scene in enumerate(scenes) if len({o.shape for o in scene.objects}) != 1]
    if mixed:
        raise ValueError(f"scenes {mixed} do not hold instances of one shape (see shapes.instances_scene)")
    smallest, largest, instances, outside = [], [], [], []
    for m, scene in zip(maps, scenes):
        by_area = sorted(scene.objects, key=lambda o: int(o.mask.sum()))
        union = torch.stack([o.mask for o in scene.objects]).any(dim=0)
        smallest.append(mask_share(m, by_area[0].mask))
        largest.append(mask_share(m, by_area[-1].mask))
        instances.append(mask_share(m, union))
        outside.append(mask_share(m, ~union))
    return InstanceShares(*(torch.tensor(v) for v in (smallest, largest, instances, outside)))


def several_instances_scenes(n: int = 300) -> list[shapes.Scene]:
    """``n`` scenes of the test split's seeds, each with 2, 3 or 4 instances (in turn) of one shape (the shapes in turn)."""
    seeds = shapes.SPLITS["test"]
    if not 1 <= n <= len(seeds):
        raise ValueError(f"n must lie in 1..{len(seeds)} (the test split's seeds), got {n}")
    return [shapes.instances_scene(seeds[i], shapes.SHAPES[i % len(shapes.SHAPES)], 2 + (i // len(shapes.SHAPES)) % 3) for i in range(n)]


def several_instances_methods(layer: str, n_samples: int = 10, sigma: float = 0.1) -> dict[str, Method]:
    """Grad-CAM, Grad-CAM++ and Smooth Grad-CAM++ (``n_samples`` noisy copies, ``sigma`` in pixel units) at ``layer``.

    Smooth Grad-CAM++'s noise is drawn for the whole batch from one seeded generator, so an image's map depends on the batch it came in.
    """
    return {
        "Grad-CAM": lambda model, x, t: grad_cam(model, x, t, layer),
        "Grad-CAM++": lambda model, x, t: grad_cam_pp(model, x, t, layer),
        "Smooth Grad-CAM++": lambda model, x, t: smooth_grad_cam_pp(model, x, t, layer, n_samples=n_samples, sigma=sigma,
                                                                     generator=torch.Generator().manual_seed(0)),
    }


# --- adversarial examples ------------------------------------------------------------------------------


class Attack(NamedTuple):
    image: Tensor  # the adversarial image (1, C, H, W), preprocessed like the clean one
    steps: int  # gradient steps taken
    probability: float  # p(true class) at the end
    linf_pixels: float  # the largest change of a pixel value (0 to 1 scale)


def pgd(model: nn.Module, x: Tensor, true_class: int, *, epsilon: float = 2 / 255, step: float = 0.5 / 255,
        max_steps: int = 40, below: float = 0.01) -> Attack:
    """Untargeted PGD on one ImageNet-preprocessed image (1, 3, H, W), stopping once :math:`p(c) <` ``below``.

    ``epsilon`` and ``step`` are in pixel units; in the network's standardised units each colour channel's
    bound is ``epsilon / std``. The image stays a valid photo (pixel values in [0, 1]).
    """
    if x.dim() != 4 or len(x) != 1:
        raise ValueError(f"pgd attacks one image (1, C, H, W), got shape {tuple(x.shape)}")
    if not (epsilon > 0 and step > 0 and max_steps >= 0 and 0 < below <= 1):
        raise ValueError(f"pgd needs epsilon > 0, step > 0, max_steps >= 0 and below in (0, 1], got {epsilon}, {step}, {max_steps}, {below}")
    check_call(model, x)
    std, mean = imagenet_statistics(x)
    pixels = x * std + mean
    if float(pixels.min()) < -1e-4 or float(pixels.max()) > 1 + 1e-4:
        raise ValueError(f"x is not a preprocessed photo: its pixel values span [{float(pixels.min()):.3f}, {float(pixels.max()):.3f}], not [0, 1]")
    with torch.no_grad():
        classes = model(x).shape[1]
    if not 0 <= true_class < classes:
        raise ValueError(f"true_class must be a class index in 0..{classes - 1}, got {true_class}")
    low, high = torch.maximum(x - epsilon / std, -mean / std), torch.minimum(x + epsilon / std, (1 - mean) / std)
    adversarial, label = x.clone(), torch.tensor([true_class], device=x.device)
    for taken in range(max_steps + 1):
        adversarial.requires_grad_()
        with torch.enable_grad():
            logits = model(adversarial)
            probability = float(logits.detach().softmax(dim=1)[0, true_class])
            if probability < below or taken == max_steps:
                break
            (gradient,) = torch.autograd.grad(F.cross_entropy(logits, label), adversarial)
        adversarial = torch.clamp(adversarial.detach() + step / std * gradient.sign(), low, high)
    adversarial = adversarial.detach()
    return Attack(adversarial, taken, probability, float(((adversarial - x) * std).abs().max()))


def imagenet_statistics(x: Tensor) -> tuple[Tensor, Tensor]:
    """ImageNet's per-channel standard deviation and mean (3, 1, 1), in ``x``'s dtype and device."""
    return tuple(torch.tensor(v, dtype=x.dtype, device=x.device)[:, None, None] for v in (models.IMAGENET_STD, models.IMAGENET_MEAN))


def random_sign_noise(x: Tensor, epsilon: float, generator: torch.Generator) -> Tensor:
    """The control of an attack: every pixel value moved by +-``epsilon`` (pixel units) at random, kept in [0, 1]."""
    if not epsilon >= 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    if not x.is_floating_point():
        raise TypeError(f"x must be preprocessed float images, got {x.dtype}")
    std, mean = imagenet_statistics(x)
    signs = (torch.randint(0, 2, x.shape, generator=generator) * 2 - 1).to(x.dtype).to(x.device)
    return torch.clamp(x + epsilon / std * signs, -mean / std, (1 - mean) / std)


# --- the photos: cases and their occlusion maps ----------------------------------------------------------

OCCLUSION_WINDOW, OCCLUSION_STRIDE = 32, 16
OCCLUSION_FILE = data.DATA_DIR / "results" / "photo_occlusion.json"
SINGLE_PHOTOS = ("astronaut", "chelsea", "coffee", "grace_hopper", "rocket")


class PhotoCase(NamedTuple):
    name: str  # "chelsea" or "chelsea + coffee: Egyptian cat"
    image: Tensor  # (1, 3, 224, 224), preprocessed
    target: int  # the class explained
    box: tuple[int, int, int, int] | None  # the object's tile at 224 x 224, for the two-photo compositions


def photo_cases(model: nn.Module) -> list[PhotoCase]:
    """Each single photo with its top class, then each composition of :data:`data.PAIRS` with each photo's class (its top class alone).

    A tile's box is scaled from the 600 x 600 canvas to the network's 224 x 224 input.
    """
    singles = {name: models.preprocess(data.load_image(name)) for name in SINGLE_PHOTOS}
    top = {name: models.top_classes(model, x, 1)[0][0][0] for name, x in singles.items()}
    cases = [PhotoCase(name, x, top[name], None) for name, x in singles.items()]
    for pair in data.PAIRS:
        canvas, tiles = data.in_a_row(*pair)
        x = models.preprocess(canvas)
        scale = models.INPUT_SIZE / canvas.width
        for name, tile in zip(pair, tiles):
            box = tuple(round(v * scale) for v in tile)
            cases.append(PhotoCase(f"{' + '.join(pair)}: {models.imagenet_classes()[top[name]]}", x, top[name], box))
    return cases


def occlusion_cells(occlusion: Tensor, stride: int = OCCLUSION_STRIDE) -> Tensor:
    """An occlusion map (H, W) whose windows start every ``stride`` pixels and span two strides, as one value per stride x stride cell.

    Every pixel of a cell lies under the same windows, so the map is constant on each cell and this loses nothing;
    ``cells.repeat_interleave(stride, 0).repeat_interleave(stride, 1)`` gives the map back.
    """
    cells = occlusion[::stride, ::stride]
    if not torch.equal(cells.repeat_interleave(stride, 0).repeat_interleave(stride, 1), occlusion):
        raise ValueError(f"the map is not constant on {stride} x {stride} cells")
    return cells


def load_photo_occlusion() -> dict[str, Tensor]:
    """The shipped occlusion maps of :func:`photo_cases` (case name -> (224, 224)), checksum verified."""
    path = data.verified_file(OCCLUSION_FILE, "python -m gradcam_lite.evaluation")
    stored = json.loads(path.read_text())
    stride = stored["stride"]
    return {name: torch.tensor(cells).repeat_interleave(stride, 0).repeat_interleave(stride, 1) for name, cells in stored["maps"].items()}


def compute_photo_occlusion(model: nn.Module, cases: list[PhotoCase]) -> dict[str, Tensor]:
    """Occlusion maps (window 32, stride 16, the ImageNet mean colour as the patch) of every case's class."""
    return {case.name: occlusion_map(model, case.image, case.target, window=OCCLUSION_WINDOW, stride=OCCLUSION_STRIDE)[0]
            for case in tqdm(cases, desc="occlusion maps")}


def main() -> None:
    torch.set_num_threads(2)
    model = models.efficientnet_lite0()
    start = time.perf_counter()
    maps = compute_photo_occlusion(model, photo_cases(model))
    OCCLUSION_FILE.parent.mkdir(parents=True, exist_ok=True)
    OCCLUSION_FILE.write_text(json.dumps({"window": OCCLUSION_WINDOW, "stride": OCCLUSION_STRIDE, "seconds": round(time.perf_counter() - start, 1),
                                          "maps": {name: occlusion_cells(m).tolist() for name, m in maps.items()}}) + "\n")
    data.write_manifest()
    print(f"{OCCLUSION_FILE}: {len(maps)} maps in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
