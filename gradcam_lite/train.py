"""Train the course's task models: ``python -m gradcam_lite.train NAME``.

Each model trains from a fixed seed on scenes of its world's training split, reports its
validation accuracy, and writes ``data/models/NAME.pt`` (the state dict), ``data/models/NAME.json``
(how it was made and how well it does) and the new checksums in ``data/SHA256SUMS``. Training
runs once, on a CPU, in minutes; the notebooks load the shipped checkpoint. Retraining on another
machine need not reproduce the same bytes (floating-point sums differ between CPUs), so the tests
check what a retrained model *does* (its loss after a short run), never bitwise equality.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import captioning, data
from .worlds import shapes


def train_captioner(steps: int = 1800, batch_size: int = 64, seed: int = 0, learning_rate: float = 3e-3, progress: bool = True) -> tuple[captioning.Captioner, list[float]]:
    """Teacher-forced cross-entropy on fresh training scenes at every step (no scene is seen twice); returns the model and the losses."""
    torch.manual_seed(seed)
    model = captioning.Captioner()
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.15)
    losses = []
    bar = tqdm(range(steps), desc="training the captioner", disable=not progress)
    for step in bar:
        scenes = shapes.split_scenes("train", batch_size, start=step * batch_size)
        previous, following = captioning.teacher_forcing([s.caption for s in scenes])
        logits = model.logits(shapes.batch_images(scenes), previous)
        loss = nn.functional.cross_entropy(logits.flatten(0, 1), following.flatten(), ignore_index=captioning.PAD)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss:.3f}")
    return model.eval(), losses


TRAINERS: dict[str, Callable[..., tuple[nn.Module, list[float]]]] = {"captioner": train_captioner}


def save(name: str, model: nn.Module, record: dict) -> Path:
    """Write the checkpoint and its record under data/models/, then rewrite data/SHA256SUMS."""
    data.MODELS_DIR.mkdir(parents=True, exist_ok=True)
    path = data.MODELS_DIR / f"{name}.pt"
    torch.save(model.state_dict(), path)
    (data.MODELS_DIR / f"{name}.json").write_text(json.dumps(record, indent=2) + "\n")
    data.write_manifest()
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", choices=sorted(TRAINERS))
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the trainer's)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the checkpoint shipped was made with 2)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    options = {} if args.steps is None else {"steps": args.steps}
    start = time.perf_counter()
    model, losses = TRAINERS[args.name](**options)
    seconds = time.perf_counter() - start
    validation = shapes.split_scenes("validation", 500)
    exact, per_word = captioning.caption_accuracy(model, validation)
    record = {"steps": len(losses), "seconds": round(seconds, 1), "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
              "validation_exact_match": exact, "validation_word_accuracy": round(per_word, 4),
              "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}"}
    path = save(args.name, model, record)
    print(f"{path}: {json.dumps(record)}")


if __name__ == "__main__":
    main()
