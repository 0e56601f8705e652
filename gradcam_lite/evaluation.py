r"""The experiments of notebooks 10-12, evaluating explanations, and the several-instances test of notebook 06.

Every method is a function ``(model, x, targets) -> maps (B, H, W)``, non-negative, at the
input's size, its layer fixed by the table that holds it (:func:`method_table`): Grad-CAM, Grad-CAM++, CAM, guided backpropagation and Guided Grad-CAM
(a gradient image :math:`g \in \mathbb{R}^{3 \times H \times W}` becomes the map
:math:`\max_{\text{colour}} |g|`, :func:`pixel_map`), and the two baselines that look at nothing, a
Gaussian blob at the centre and a random smooth map (:data:`BASELINES`). All are scored alike by
:mod:`gradcam_lite.metrics`.

The adversarial attack is targeted projected gradient descent (Madry et al. 2018): steps of one grey level
against the sign of the gradient of the cross-entropy of a target class :math:`t`, in the :math:`L_\infty`
ball of radius :math:`\epsilon` around the image in *pixel* units (a pixel value runs from 0 to 1), the image
rounded to 8 bits after every step (:func:`targeted_pgd`):

.. math::

    x_{k+1} = \mathrm{round}_{8\,\text{bit}}\Big(\Pi_{\|x - x_0\|_\infty \le \epsilon,\; 0 \le x \le 1}\big(x_k - \tfrac{1}{255}\, \mathrm{sign}\, \nabla_x \mathrm{CE}(f(x_k), t)\big)\Big).

``python -m gradcam_lite.evaluation`` precomputes the occlusion maps of the photos (a few seconds each, for
each window of :data:`OCCLUSION_SETTINGS`) and the attacks of every budget of :data:`ATTACK_BUDGETS` (about
four minutes in all on 2 cores), written to :data:`OCCLUSION_FILE` and :data:`ATTACKS_FILE` and listed in
``data/SHA256SUMS``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import data, models
from .guided import deconvnet, guided_backprop, guided_grad_cam
from .maps import cam, grad_cam, grad_cam_pp, hires_cam, is_constant, normalize_maps, smooth_grad_cam_pp, upsample
from .checks import check_call, check_finite
from .metrics import Box, box_mask, centre_blob, mask_share, occlusion_map, random_smooth_map, rank_correlation
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


def every_method(layer: str) -> dict[str, Method]:
    """Every method the engine has, at ``layer`` where it takes one: :func:`method_table`'s, HiResCAM beside Grad-CAM,
    Smooth Grad-CAM++ (:func:`several_instances_methods`'s) beside Grad-CAM++, and the deconvnet beside guided backpropagation."""
    table, smooth = method_table(layer), several_instances_methods(layer)
    return {"Grad-CAM": table["Grad-CAM"], "HiResCAM": lambda model, x, t: hires_cam(model, x, t, layer),
            "Grad-CAM++": table["Grad-CAM++"], "Smooth Grad-CAM++": smooth["Smooth Grad-CAM++"], "CAM": table["CAM"],
            "guided backprop": table["guided backprop"], "deconvnet": lambda model, x, t: pixel_map(deconvnet(model, x, t)),
            "Guided Grad-CAM": table["Guided Grad-CAM"]}


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


def to_8_bits(x: Tensor) -> Tensor:
    """Preprocessed images with their pixel values rounded to the 256 levels of an image file (and kept in [0, 1])."""
    std, mean = imagenet_statistics(x)
    pixels = ((x * std + mean).clamp(0, 1) * 255).round() / 255
    return (pixels - mean) / std


class TargetedAttack(NamedTuple):
    image: Tensor  # the adversarial image (1, C, H, W), preprocessed, its pixels on the 256 levels of an image file
    steps: int  # gradient steps taken
    target_probability: float  # p(target) at the end
    true_probability: float  # p(true class) at the end
    grey_levels: int  # the largest change of a pixel, in levels of 1/255

    @property
    def succeeded(self) -> bool:
        return self.target_probability > TARGETED_SUCCESS


TARGETED_SUCCESS = 0.99  # a targeted attack succeeds when the target class has more than this probability


def targeted_pgd(model: nn.Module, x: Tensor, target: int, true_class: int, *, epsilon: float, max_steps: int = 60) -> TargetedAttack:
    r"""Targeted PGD on one ImageNet-preprocessed image (1, 3, H, W): descend the cross-entropy of ``target`` in steps of
    one grey level (1/255) within :math:`\|x - x_0\|_\infty \le` ``epsilon`` (pixel units), the image rounded to 8 bits
    after every step, until :math:`p(\text{target}) >` :data:`TARGETED_SUCCESS` or ``max_steps`` steps.

    Rounded after every step, the attack is an image a file can hold: what a reader of the map would be shown.
    """
    if x.dim() != 4 or len(x) != 1:
        raise ValueError(f"targeted_pgd attacks one image (1, C, H, W), got shape {tuple(x.shape)}")
    if not (epsilon >= 1 / 255 and max_steps >= 0):
        raise ValueError(f"targeted_pgd needs epsilon >= 1/255 (one grey level) and max_steps >= 0, got {epsilon}, {max_steps}")
    check_call(model, x)
    std, mean = imagenet_statistics(x)
    pixels = x * std + mean
    if float(pixels.min()) < -1e-4 or float(pixels.max()) > 1 + 1e-4:
        raise ValueError(f"x is not a preprocessed photo: its pixel values span [{float(pixels.min()):.3f}, {float(pixels.max()):.3f}], not [0, 1]")
    with torch.no_grad():
        classes = model(x).shape[1]
    if not (0 <= target < classes and 0 <= true_class < classes) or target == true_class:
        raise ValueError(f"target and true_class must be two different classes in 0..{classes - 1}, got {target} and {true_class}")
    clean = to_8_bits(x)
    levels = math.floor(epsilon * 255 + 1e-6) / 255  # the budget on the 8-bit grid
    low, high = torch.maximum(clean - levels / std, -mean / std), torch.minimum(clean + levels / std, (1 - mean) / std)
    adversarial, label = clean.clone(), torch.tensor([target], device=x.device)
    for taken in range(max_steps + 1):
        adversarial.requires_grad_()
        with torch.enable_grad():
            logits = model(adversarial)
            probabilities = logits.detach().softmax(dim=1)[0]
            if float(probabilities[target]) > TARGETED_SUCCESS or taken == max_steps:
                break
            (gradient,) = torch.autograd.grad(F.cross_entropy(logits, label), adversarial)
        adversarial = to_8_bits(torch.clamp(adversarial.detach() - gradient.sign() / 255 / std, low, high))
    adversarial = adversarial.detach()
    changed = int(torch.round(((adversarial - clean) * std * 255).abs().max()))
    return TargetedAttack(adversarial, taken, float(probabilities[target]), float(probabilities[true_class]), changed)


def far_class(true_class: int, classes: int = 1000) -> int:
    """The target of a targeted attack, by a rule stated in advance: half the class list away. ImageNet's classes are
    ordered by WordNet (animals first, then artefacts and scenes), so this lands in another branch of the hierarchy."""
    return (true_class + classes // 2) % classes


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

# (window, stride) of the occlusion references: the notebook's figure depends on the window, so both are shipped
OCCLUSION_SETTINGS = ((32, 16), (64, 32))
OCCLUSION_FILE = data.DATA_DIR / "results" / "photo_occlusion.json"
ATTACKS_FILE = data.DATA_DIR / "results" / "photo_attacks.json"
SINGLE_PHOTOS = ("astronaut", "camera", "chelsea", "china", "coffee", "grace_hopper", "rocket")
ATTACK_BUDGETS = (1, 2, 4, 8)  # grey levels: epsilon = n / 255


class PhotoCase(NamedTuple):
    name: str  # "chelsea" or "chelsea + coffee: Egyptian cat"
    image: Tensor  # (1, 3, 224, 224), preprocessed
    target: int  # the class explained
    box: Box | None  # the object's tile at 224 x 224, for the two-photo compositions
    object_box: Box | None  # the box of the object of the photo's class at 224 x 224 (data.PHOTO_OBJECTS), None for the astronaut

    @property
    def whole(self) -> bool:
        return self.box is None

    @property
    def image_name(self) -> str:
        """The image the case explains: a photo's name, or a composition's ("chelsea + coffee"), shared by its two cases."""
        return self.name.split(":")[0]

    @property
    def photo_pixels(self) -> Tensor:
        """The input's pixels that show a photo (H, W): all of a whole photo; a composition's band of tiles, without the
        flat padding above and below, where hiding or ranking pixels means nothing."""
        size = models.INPUT_SIZE
        if self.box is None:
            return torch.ones(size, size, dtype=torch.bool)
        return box_mask((0, self.box[1], size, self.box[3]), (size, size), (size, size))


def scaled_box(box: Box, sx: float, sy: float, dx: float = 0.0, dy: float = 0.0) -> Box:
    """``box`` moved by (-dx, -dy), then scaled by (sx, sy) and rounded: from a photo's pixels to an input's."""
    x0, y0, x1, y1 = box
    return round((x0 - dx) * sx), round((y0 - dy) * sy), round((x1 - dx) * sx), round((y1 - dy) * sy)


def photo_cases(model: nn.Module) -> list[PhotoCase]:
    """Each whole photo with its top class, then each composition of :data:`data.PAIRS` with each photo's class (its top
    class alone). Boxes are scaled to the network's 224 x 224 input: a whole photo is resized as a whole (each axis on its
    own); in a composition, the object's box is cut to the photo's square crop and placed in its tile.
    """
    size = models.INPUT_SIZE
    photos = {name: data.load_image(name) for name in SINGLE_PHOTOS}
    singles = {name: models.preprocess(photo) for name, photo in photos.items()}
    top = {name: models.top_classes(model, x, 1)[0][0][0] for name, x in singles.items()}
    cases = []
    for name, x in singles.items():
        width, height = photos[name].size
        box = data.PHOTO_OBJECTS.get(name)
        cases.append(PhotoCase(name, x, top[name], None, None if box is None else scaled_box(box, size / width, size / height)))
    for pair in data.PAIRS:
        canvas, tiles = data.in_a_row(*pair)
        x = models.preprocess(canvas)
        scale = size / canvas.width
        for name, tile in zip(pair, tiles):
            crop = data.square_crop(name, photos[name])
            x0, y0, x1, y1 = data.PHOTO_OBJECTS[name]
            inside = (max(x0, crop[0]), max(y0, crop[1]), min(x1, crop[2]), min(y1, crop[3]))
            zoom = (tile[2] - tile[0]) / (crop[2] - crop[0])
            in_tile = scaled_box(inside, zoom, zoom, crop[0], crop[1])
            object_box = scaled_box((in_tile[0] + tile[0], in_tile[1] + tile[1], in_tile[2] + tile[0], in_tile[3] + tile[1]), scale, scale)
            cases.append(PhotoCase(f"{' + '.join(pair)}: {models.imagenet_classes()[top[name]]}", x, top[name],
                                   scaled_box(tile, scale, scale), object_box))
    return cases


def occlusion_cells(occlusion: Tensor, stride: int) -> Tensor:
    """An occlusion map (H, W) whose windows start every ``stride`` pixels and span two strides, as one value per stride x stride cell.

    Every pixel of a cell lies under the same windows, so the map is constant on each cell and this loses nothing;
    ``cells.repeat_interleave(stride, 0).repeat_interleave(stride, 1)`` gives the map back.
    """
    cells = occlusion[::stride, ::stride]
    if not torch.equal(cells.repeat_interleave(stride, 0).repeat_interleave(stride, 1), occlusion):
        raise ValueError(f"the map is not constant on {stride} x {stride} cells")
    return cells


def load_photo_occlusion(window: int = 32) -> dict[str, Tensor]:
    """The shipped occlusion maps of :func:`photo_cases` with squares of ``window`` pixels (one of
    :data:`OCCLUSION_SETTINGS`): case name -> (224, 224), checksum verified."""
    path = data.verified_file(OCCLUSION_FILE, "python -m gradcam_lite.evaluation")
    stored = {entry["window"]: entry for entry in json.loads(path.read_text())["occlusions"]}
    if window not in stored:
        raise ValueError(f"no shipped occlusion maps with a window of {window} pixels; the windows are {sorted(stored)}")
    stride = stored[window]["stride"]
    return {name: torch.tensor(cells).repeat_interleave(stride, 0).repeat_interleave(stride, 1) for name, cells in stored[window]["maps"].items()}


def compute_photo_occlusion(model: nn.Module, cases: list[PhotoCase], window: int, stride: int) -> dict[str, Tensor]:
    """Occlusion maps (squares of ``window`` pixels every ``stride``, the ImageNet mean colour as the patch) of every case's class."""
    return {case.name: occlusion_map(model, case.image, case.target, window=window, stride=stride)[0]
            for case in tqdm(cases, desc=f"occlusion maps, window {window}")}


def attack_record(model: nn.Module, case: PhotoCase, budget: int, layer: str) -> dict:
    """One targeted attack (:func:`targeted_pgd`, towards :func:`far_class`, within ``budget`` grey levels) on a case with
    an object box, and what it does to the true class's Grad-CAM map at ``layer``: its share on the object's box and its
    rank correlation with the clean map, beside the same for 8-bit noise of random sign and the attack's size; and the
    logits :math:`y^c` of the true class and of the target, clean and attacked (what moved :math:`p(c)`)."""
    target = far_class(case.target)
    attack = targeted_pgd(model, case.image, target, case.target, epsilon=budget / 255)
    clean = to_8_bits(case.image)
    noisy = to_8_bits(random_sign_noise(clean, max(attack.grey_levels, 1) / 255, torch.Generator().manual_seed(0)))
    maps = grad_cam(model, torch.cat([clean, attack.image, noisy, attack.image]), [case.target] * 3 + [target], layer)
    box = box_mask(case.object_box, (models.INPUT_SIZE,) * 2, (models.INPUT_SIZE,) * 2)
    with torch.no_grad():
        logits = model(torch.cat([clean, attack.image, noisy]))
    y_true, y_target = logits[:, case.target].tolist(), logits[:, target].tolist()
    return {"case": case.name, "budget": budget, "target": target, "succeeded": attack.succeeded, "steps": attack.steps,
            "grey_levels": attack.grey_levels, "p_target": attack.target_probability, "p_true": attack.true_probability,
            "p_true_noise": float(logits[2].softmax(dim=0)[case.target]),
            "y_true_clean": y_true[0], "y_true_attacked": y_true[1], "y_true_noise": y_true[2], "y_target_clean": y_target[0], "y_target_attacked": y_target[1],
            "share_clean": mask_share(maps[0], box), "share_attacked": mask_share(maps[1], box), "share_noise": mask_share(maps[2], box),
            "share_target": mask_share(maps[3], box), "rho_attacked": rank_correlation(maps[0], maps[1]), "rho_noise": rank_correlation(maps[0], maps[2])}


def load_photo_attacks() -> list[dict]:
    """The shipped targeted attacks of :func:`attack_record` (every case with an object box, every budget), checksum verified."""
    return json.loads(data.verified_file(ATTACKS_FILE, "python -m gradcam_lite.evaluation").read_text())["attacks"]


def main() -> None:
    torch.set_num_threads(2)
    model = models.efficientnet_lite0()
    cases = photo_cases(model)
    occlusions = []
    for window, stride in OCCLUSION_SETTINGS:
        start = time.perf_counter()
        maps = compute_photo_occlusion(model, cases, window, stride)
        occlusions.append({"window": window, "stride": stride, "seconds": round(time.perf_counter() - start, 1),
                           "maps": {name: occlusion_cells(m, stride).tolist() for name, m in maps.items()}})
        print(f"window {window}: {len(maps)} occlusion maps in {time.perf_counter() - start:.0f} s")
    OCCLUSION_FILE.parent.mkdir(parents=True, exist_ok=True)
    OCCLUSION_FILE.write_text(json.dumps({"occlusions": occlusions}) + "\n")
    start = time.perf_counter()
    attacks = [attack_record(model, case, budget, "features.8") for case in tqdm(cases, desc="attacks") if case.object_box is not None
               for budget in ATTACK_BUDGETS]
    ATTACKS_FILE.write_text(json.dumps({"budgets": ATTACK_BUDGETS, "success": TARGETED_SUCCESS, "seconds": round(time.perf_counter() - start, 1),
                                        "attacks": attacks}, indent=1) + "\n")
    print(f"{ATTACKS_FILE}: {len(attacks)} attacks in {time.perf_counter() - start:.0f} s")
    data.write_manifest()


if __name__ == "__main__":
    main()
