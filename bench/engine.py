"""Benchmark of gradcam_lite.grad_cam against a plain forward and three other libraries.

One run, calls interleaved round-robin (so a slow spell of the machine hits every row alike), many
repetitions, medians. EfficientNet-Lite0 at ``features[-1]`` on CPU. Each library is asked for what
it does in one call: gradcam_lite and pytorch-grad-cam return maps at the input's size, normalised;
torchcam returns normalised maps at the layer's 7 x 7; captum's LayerGradCam the raw layer map
(bilinear upsampling and normalisation are added to it for the agreement check only).

    python bench/engine.py                 # print the table
    python bench/engine.py --write-readme  # also put it into README.md between the bench markers
"""

from __future__ import annotations

import argparse
import datetime
import platform
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from captum.attr import LayerGradCam
from pytorch_grad_cam import GradCAM as PGCGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torchcam.methods import GradCAM as TorchCAMGradCAM
from tqdm import tqdm

from gradcam_lite import data, grad_cam, models
from gradcam_lite.maps import normalize_maps, upsample

ROOT = Path(__file__).resolve().parent.parent
LAYER = "features.8"
GOALS = {"forward": 1.15, "pytorch-grad-cam": 0.8, "ten targets": 0.3, "agreement": 1e-4}
GOAL_NAMES = {
    "forward": "grad_cam / plain forward, batch 8",
    "pytorch-grad-cam": "grad_cam / pytorch-grad-cam, batch 8",
    "ten targets": "10 targets in one call / 10 calls",
    "agreement": "max abs difference from captum (normalised maps, batch 8)",
}


def median_times(calls: dict[str, Callable[[], object]], repetitions: int, desc: str) -> dict[str, float]:
    for call in calls.values():  # warm-up
        call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in tqdm(range(repetitions), desc=desc):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def cpu_name() -> str:
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    match = re.search(r"model name\s*:\s*(.+)", text)
    return match[1].strip() if match else platform.processor() or platform.machine()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--write-readme", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = models.efficientnet_lite0()
    layer = model.get_submodule(LAYER)
    photos = [data.load_image(n) for n in data.image_names()]
    captum = LayerGradCam(model, layer)

    # Each library registers its hooks per call and removes them after, as gradcam_lite does:
    # hooks left on the model would run inside every other row's calls.
    def pytorch_grad_cam_call(x: torch.Tensor, classes: list[int]) -> object:
        with PGCGradCAM(model=model, target_layers=[layer]) as cam:
            return cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in classes])

    def torchcam_call(x: torch.Tensor, classes: list[int]) -> list[torch.Tensor]:
        with TorchCAMGradCAM(model, target_layer=LAYER) as extractor:
            return extractor(classes, model(x))

    rows, results = [], {}
    for batch in (1, 8):
        x = models.preprocess([photos[i % len(photos)] for i in range(batch)])
        with torch.no_grad():
            classes = model(x).argmax(dim=1).tolist()

        def forward() -> None:
            with torch.no_grad():
                model(x)

        calls = {
            "plain forward (no_grad)": forward,
            "gradcam_lite.grad_cam": lambda: grad_cam(model, x, classes, LAYER),
            "pytorch-grad-cam GradCAM": lambda: pytorch_grad_cam_call(x, classes),
            "torchcam GradCAM": lambda: torchcam_call(x, classes),
            "captum LayerGradCam": lambda: captum.attribute(x, target=classes, relu_attributions=True),
        }
        times = median_times(calls, args.repetitions, f"batch {batch}")
        results[batch] = times
        for name, seconds in times.items():
            rows.append((name, batch, seconds * 1e3, seconds / times["plain forward (no_grad)"]))

    x1 = models.preprocess(photos[0])
    ten = list(range(280, 290))
    one_call = median_times(
        {
            "10 targets in one call": lambda: grad_cam(model, x1, [ten], LAYER),
            "10 calls of one target": lambda: [grad_cam(model, x1, c, LAYER) for c in ten],
        },
        args.repetitions,
        "10 targets",
    )

    x8 = models.preprocess([photos[i % len(photos)] for i in range(8)])
    with torch.no_grad():
        classes8 = model(x8).argmax(dim=1).tolist()
    ours = grad_cam(model, x8, classes8, LAYER)
    theirs = normalize_maps(upsample(captum.attribute(x8, target=classes8, relu_attributions=True)[:, 0].detach(), (224, 224)))
    agreement = float((ours - theirs).abs().max())

    measured = {
        "forward": results[8]["gradcam_lite.grad_cam"] / results[8]["plain forward (no_grad)"],
        "pytorch-grad-cam": results[8]["gradcam_lite.grad_cam"] / results[8]["pytorch-grad-cam GradCAM"],
        "ten targets": one_call["10 targets in one call"] / one_call["10 calls of one target"],
        "agreement": agreement,
    }
    stamp = datetime.date.today().isoformat()
    lines = [
        f"Measured {stamp} on {cpu_name()}, {args.threads} threads, torch {torch.__version__}, "
        f"median of {args.repetitions} interleaved repetitions (`make bench`).",
        "",
        "| call | batch | median (ms) | x plain forward |",
        "|---|---:|---:|---:|",
        *[f"| {name} | {batch} | {ms:.1f} | {ratio:.2f} |" for name, batch, ms, ratio in rows],
        *[f"| {name} | 1 | {s * 1e3:.1f} | {s / results[1]['plain forward (no_grad)']:.2f} |" for name, s in one_call.items()],
        "",
        "| goal | measured | target | met |",
        "|---|---:|---:|:---:|",
        *[f"| {GOAL_NAMES[key]} | {value:.3g} | <= {GOALS[key]:g} | {'yes' if value <= GOALS[key] else 'no'} |" for key, value in measured.items()],
    ]
    table = "\n".join(lines)
    print(table)
    if args.write_readme:
        readme = ROOT / "README.md"
        text = readme.read_text()
        start, end = "<!-- bench:start -->", "<!-- bench:end -->"
        if start not in text or end not in text:
            raise SystemExit(f"README.md lacks the markers {start} ... {end}")
        head, rest = text.split(start, 1)
        readme.write_text(head + start + "\n" + table + "\n" + end + rest.split(end, 1)[1])


if __name__ == "__main__":
    main()
