r"""Every method of the engine through the confidence metrics on the photos: the records behind notebook 13's table.

For each case of :func:`gradcam_lite.evaluation.photo_cases` and each map of :data:`MAP_NAMES` (the methods of
:func:`photo_methods`, the centre blob, and :data:`RANDOM_DRAWS` random smooth maps), the map
:math:`L` scaled to [0, 1] by its maximum, its mean value (how much of the image it keeps), and:

- **Average Drop and Increase in Confidence** (:mod:`gradcam_lite.perturbation`): :math:`Y = p(c \mid I)` and
  :math:`O = p(c \mid E)` with the explanation image :math:`E = L \odot I` made on the *normalised* input (the model's,
  as pytorch-grad-cam does), and :math:`O` again with :math:`E` made on the *pixel* image
  (:class:`gradcam_lite.models.PixelInput`); :math:`y^c` beside each.
- **ROAD**: :math:`y^c` and :math:`p(c)` after removing :data:`ROAD_FRACTIONS` of the photo's pixels, most and least
  relevant first, by noisy linear imputation (noise 0.01, seeded by the case's index).
- **Deletion and insertion**: :math:`y^c` and :math:`p(c)` at :data:`CURVE_FRACTIONS` of the photo's pixels, the
  blurred photo as the baseline (notebook 10's curves).

Only the photo's pixels count (:attr:`gradcam_lite.evaluation.PhotoCase.photo_pixels`): a composition's flat padding
is never ranked, removed or restored. ``python -m gradcam_lite.scorecard`` writes :data:`SCORECARD_FILE` (about
seven minutes on 2 cores) and its checksum; :func:`load_photo_scorecard` reads it.
"""

from __future__ import annotations

import json
import time
from typing import NamedTuple

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import data, evaluation, models
from .checks import check_finite
from .metrics import blurred, deletion_curve, insertion_curve
from .perturbation import explanation_confidence, road

LAYER = "features.8"
LOWER_LAYER = "features.7"  # 7 x 7 as well, below the 1 x 1 convolution of features.8: the gradient varies over positions
RANDOM_DRAWS = 4
ROAD_FRACTIONS = (0.1, 0.3, 0.5, 0.7, 0.9)
ROAD_NOISE = 0.01
CURVE_FRACTIONS = (0.0, 0.1, 0.25, 0.5, 1.0)


def photo_methods() -> dict[str, evaluation.Method]:
    """:func:`gradcam_lite.evaluation.every_method` at :data:`LAYER`, where global average pooling follows and HiResCAM,
    CAM and Grad-CAM give one map, then Grad-CAM and HiResCAM at :data:`LOWER_LAYER`, where they differ."""
    lower = evaluation.every_method(LOWER_LAYER)
    return {**evaluation.every_method(LAYER), "Grad-CAM, a layer lower": lower["Grad-CAM"], "HiResCAM, a layer lower": lower["HiResCAM"]}


MAP_NAMES = (*photo_methods(), "centre", *(f"random {seed}" for seed in range(RANDOM_DRAWS)))
SCORECARD_FILE = data.DATA_DIR / "results" / "photo_scorecard.json"
FIELDS = ("map_mean", "p_before", "y_before", "p_after", "y_after", "p_after_pixels", "y_after_pixels",
          "road_most_score", "road_most_probability", "road_least_score", "road_least_probability",
          "deletion_score", "deletion_probability", "insertion_score", "insertion_probability")


def unit_maps(maps: Tensor) -> Tensor:
    """Each map (N, H, W), non-negative, divided by its maximum; an all-zero map stays all zero."""
    if maps.dim() != 3:
        raise ValueError(f"unit_maps takes a stack of maps (N, H, W), got shape {tuple(maps.shape)}")
    check_finite(maps, "the maps")
    if float(maps.min()) < 0:
        raise ValueError("unit_maps scales non-negative maps; this one has negative values")
    return maps / maps.flatten(1).amax(dim=1).clamp(min=torch.finfo(maps.dtype).tiny)[:, None, None]


def photo_maps(model: nn.Module, cases: list[evaluation.PhotoCase], name: str) -> Tensor:
    """The maps (N, 224, 224) named ``name`` (one of :data:`MAP_NAMES`) of every case, scaled by :func:`unit_maps`."""
    if name not in MAP_NAMES:
        raise ValueError(f"no map named {name!r}; the maps are {MAP_NAMES}")
    methods = photo_methods()
    if name in methods:
        maps = torch.cat([methods[name](model, c.image, [c.target]) for c in cases])
    elif name == "centre":
        maps = evaluation.baseline_maps(len(cases), models.INPUT_SIZE)["centre"]
    else:
        maps = evaluation.baseline_maps(len(cases), models.INPUT_SIZE, seed=int(name.split()[1]))["random"]
    return unit_maps(maps)


def case_record(model: nn.Module, case: evaluation.PhotoCase, index: int, saliency: Tensor) -> dict[str, float | list[float]]:
    """The :data:`FIELDS` of one case (the ``index``-th, which seeds ROAD's noise) and its map (224, 224), scaled to [0, 1]."""
    x, target, within = case.image, [case.target], case.photo_pixels
    normalised = explanation_confidence(model, x, saliency[None], target)
    on_pixels = explanation_confidence(models.PixelInput(model), models.to_display(x), saliency[None], target)
    scalars = {"p_before": normalised.before, "y_before": normalised.logit_before, "p_after": normalised.after, "y_after": normalised.logit_after,
               "p_after_pixels": on_pixels.after, "y_after_pixels": on_pixels.logit_after}
    record: dict[str, float | list[float]] = {"map_mean": float(saliency.mean()), **{key: float(value) for key, value in scalars.items()}}
    for order in ("most", "least"):
        curve = road(model, x, saliency[None], target, ROAD_FRACTIONS, order, ROAD_NOISE, torch.Generator().manual_seed(index), within[None])
        record[f"road_{order}_score"], record[f"road_{order}_probability"] = curve.score[0].tolist(), curve.probability[0].tolist()
    blur, fractions = blurred(x), torch.tensor(CURVE_FRACTIONS)
    with torch.no_grad():
        for kind, run in (("deletion", deletion_curve), ("insertion", insertion_curve)):
            curve = run(model, x, saliency, case.target, fractions, blur, within=within)
            record[f"{kind}_score"], record[f"{kind}_probability"] = curve.score.tolist(), curve.probability.tolist()
    return record


class Scorecard(NamedTuple):
    cases: list[str]  # the names of the cases, in the order of evaluation.photo_cases
    maps: dict[str, dict[str, Tensor]]  # map name -> field of FIELDS -> (N cases,) or (N cases, fractions)


def load_photo_scorecard() -> Scorecard:
    """The shipped records of every map of :data:`MAP_NAMES`, checksum verified."""
    stored = json.loads(data.verified_file(SCORECARD_FILE, "python -m gradcam_lite.scorecard").read_text())
    return Scorecard(stored["cases"], {name: {field: torch.tensor([record[field] for record in records]) for field in FIELDS}
                                       for name, records in stored["maps"].items()})


def main() -> None:
    torch.set_num_threads(2)
    model = models.efficientnet_lite0()
    cases = evaluation.photo_cases(model)
    start, records = time.perf_counter(), {}
    for name in tqdm(MAP_NAMES, desc="maps"):
        maps = photo_maps(model, cases, name)
        records[name] = [case_record(model, case, i, saliency) for i, (case, saliency) in enumerate(zip(cases, maps))]
    SCORECARD_FILE.parent.mkdir(parents=True, exist_ok=True)
    SCORECARD_FILE.write_text(json.dumps({"cases": [c.name for c in cases], "road_fractions": ROAD_FRACTIONS, "road_noise": ROAD_NOISE,
                                          "curve_fractions": CURVE_FRACTIONS, "seconds": round(time.perf_counter() - start, 1),
                                          "maps": records}) + "\n")
    print(f"{SCORECARD_FILE}: {len(MAP_NAMES)} maps x {len(cases)} cases in {time.perf_counter() - start:.0f} s")
    data.write_manifest()


if __name__ == "__main__":
    main()
