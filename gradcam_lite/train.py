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

from . import captioning, data, vqa
from .worlds import shapes


def optimise(model: nn.Module, loss_at: Callable[[int], torch.Tensor], steps: int, learning_rate: float, desc: str, progress: bool = True) -> list[float]:
    """AdamW with a one-cycle schedule over ``steps`` steps of ``loss_at(step)``; returns the losses, leaves the model in eval mode."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=learning_rate, total_steps=steps, pct_start=0.15)
    losses = []
    model.train()
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    for step in bar:
        loss = loss_at(step)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(loss.item())
        if step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    model.eval()
    return losses


def train_captioner(steps: int = 1800, batch_size: int = 64, seed: int = 0, learning_rate: float = 3e-3, progress: bool = True) -> tuple[captioning.Captioner, list[float]]:
    """Teacher-forced cross-entropy on fresh training scenes at every step (no scene is seen twice)."""
    torch.manual_seed(seed)
    model = captioning.Captioner()

    def loss_at(step: int) -> torch.Tensor:
        scenes = shapes.split_scenes("train", batch_size, start=step * batch_size)
        previous, following = captioning.teacher_forcing([s.caption for s in scenes])
        logits = model.logits(shapes.batch_images(scenes), previous)
        return nn.functional.cross_entropy(logits.flatten(0, 1), following.flatten(), ignore_index=captioning.PAD)

    return model, optimise(model, loss_at, steps, learning_rate, "training the captioner", progress)


def train_vqa(steps: int = 2500, scenes_per_step: int = 32, questions_per_scene: int = 8, seed: int = 0, learning_rate: float = 3e-3, progress: bool = True) -> tuple[vqa.VQAModel, list[float]]:
    """Cross-entropy on answer-balanced questions about fresh training scenes at every step; each scene is encoded once for all its questions.

    The image encoder starts from the shipped captioner's (trained from scratch on the same world):
    trained from a random start, the VQA loss found colour features within 2,000 steps but no shape
    features (shape questions stayed at chance, 33 %), while the captioner's word-by-word loss learns both.
    """
    torch.manual_seed(seed)
    model = vqa.VQAModel()
    model.encoder.load_state_dict(captioning.load_captioner().encoder.state_dict())

    def loss_at(step: int) -> torch.Tensor:
        scenes = shapes.split_scenes("train", scenes_per_step, start=step * scenes_per_step)
        pairs = shapes.balanced_questions(scenes, scenes_per_step * questions_per_scene, seed=seed * 1_000_003 + step)
        position = {id(scene): i for i, scene in enumerate(scenes)}
        image_of = torch.tensor([position[id(scene)] for scene, _ in pairs])
        logits = model(shapes.batch_images(scenes), vqa.encode_questions([q.text for _, q in pairs]), image_of)
        return nn.functional.cross_entropy(logits, torch.tensor([vqa.ANSWER_INDEX[q.answer] for _, q in pairs]))

    return model, optimise(model, loss_at, steps, learning_rate, "training the VQA model", progress)


def evaluate_captioner(model: captioning.Captioner) -> dict:
    exact, per_word = captioning.caption_accuracy(model, shapes.split_scenes("validation", 500))
    return {"validation_exact_match": exact, "validation_word_accuracy": round(per_word, 4)}


def evaluate_vqa(model: vqa.VQAModel) -> dict:
    pairs = shapes.balanced_questions(shapes.split_scenes("validation", 500), 1000, seed=0)
    return {"validation_accuracy": {kind: round(value, 4) for kind, value in vqa.accuracy_by_type(model, pairs).items()}}


TRAINERS: dict[str, tuple[Callable[..., tuple[nn.Module, list[float]]], Callable[[nn.Module], dict]]] = {
    "captioner": (train_captioner, evaluate_captioner),
    "vqa": (train_vqa, evaluate_vqa),
}


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
    trainer, evaluate = TRAINERS[args.name]
    model, losses = trainer(**options)
    seconds = time.perf_counter() - start
    record = {"steps": len(losses), "seconds": round(seconds, 1), "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4),
              **evaluate(model), "machine": f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}"}
    path = save(args.name, model, record)
    print(f"{path}: {json.dumps(record)}")


if __name__ == "__main__":
    main()
