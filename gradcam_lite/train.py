"""Train the course's task models: ``python -m gradcam_lite.train NAME``.

Each model trains from a fixed seed on its world's training split, reports its validation
accuracy, and writes ``data/models/<checkpoint>.pt`` (the state dict), ``<checkpoint>.json`` (how it
was made, how long its training took, how well it does) and the new checksums in
``data/SHA256SUMS``. ``clinic`` writes two checkpoints (``clinic_biased``, ``clinic_balanced``) and
``clinic_sweep.json``, the bias-ratio sweep of notebook 09; ``clinic_seeds`` trains both again from five seeds and writes
only their figures (``clinic_seeds.json``); ``clinic_learned_pooling`` and ``clinic_badge`` write the two models each of
notebook 14; ``presence_data_randomisation`` writes three
(``presence_shuffled_labels``, ``presence_fixed_scenes``, ``presence_fixed_scenes_seed1``), the data-randomisation
test of notebook 13. Training
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
from torch import Tensor, nn
from tqdm.auto import tqdm

from . import bias, captioning, data, presence, vqa
from .worlds import clinic, shapes


def optimise(model: nn.Module, loss_at: Callable[[int], torch.Tensor], steps: int, learning_rate: float, desc: str, progress: bool = True,
             after_step: Callable[[int, float], None] | None = None) -> list[float]:
    """AdamW with a one-cycle schedule over ``steps`` steps of ``loss_at(step)``; returns the losses, leaves the model in eval mode.

    ``after_step(step, loss)``, if given, runs after each step (a validation along the way: it may switch the model to
    eval mode, and training mode is restored after it)."""
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
        if after_step is not None:
            after_step(step, losses[-1])
            model.train()
    model.eval()
    return losses


ATTENTION_CAPTIONER_STEPS = 1500


def train_captioner(steps: int = 1800, batch_size: int = 64, seed: int = 0, learning_rate: float = 3e-3, progress: bool = True,
                    kind: captioning.Kind = "show_and_tell") -> tuple[nn.Module, list[float]]:
    """Teacher-forced cross-entropy on fresh training scenes at every step (no scene is seen twice), for either kind
    of captioner (:data:`captioning.KINDS`)."""
    torch.manual_seed(seed)
    model = captioning.KINDS[kind][0]()

    def loss_at(step: int) -> torch.Tensor:
        scenes = shapes.split_scenes("train", batch_size, start=step * batch_size)
        previous, following = captioning.teacher_forcing([s.caption for s in scenes])
        logits = model.logits(shapes.batch_images(scenes), previous)
        return nn.functional.cross_entropy(logits.flatten(0, 1), following.flatten(), ignore_index=captioning.PAD)

    return model, optimise(model, loss_at, steps, learning_rate, f"training the {kind.replace('_', '-')} captioner", progress)


VQA_STEPS = 2500


def train_vqa(steps: int = VQA_STEPS, scenes_per_step: int = 32, questions_per_scene: int = 8, seed: int = 0, learning_rate: float = 3e-3, progress: bool = True,
              encoder_from_captioner: bool = True, after_step: Callable[[int, float], None] | None = None,
              model: vqa.VQAModel | None = None) -> tuple[vqa.VQAModel, list[float]]:
    """Cross-entropy on answer-balanced questions about fresh training scenes at every step; each scene is encoded once for all its questions.

    The image encoder starts from the shipped captioner's (trained from scratch on the same world), unless
    ``encoder_from_captioner`` is False: from a random start the same steps reach a lower validation accuracy,
    shape and left_of questions staying near chance for the first half (``python -m gradcam_lite.train
    vqa_from_scratch`` records that run's curve).
    ``model`` (default: a new one) is the model trained, so that ``after_step`` can watch it.
    """
    torch.manual_seed(seed)
    model = vqa.VQAModel() if model is None else model
    if encoder_from_captioner:
        model.encoder.load_state_dict(captioning.load_captioner().encoder.state_dict())

    def loss_at(step: int) -> torch.Tensor:
        scenes = shapes.split_scenes("train", scenes_per_step, start=step * scenes_per_step)
        pairs = shapes.balanced_questions(scenes, scenes_per_step * questions_per_scene, seed=seed * 1_000_003 + step)
        position = {id(scene): i for i, scene in enumerate(scenes)}
        image_of = torch.tensor([position[id(scene)] for scene, _ in pairs])
        logits = model(shapes.batch_images(scenes), vqa.encode_questions([q.text for _, q in pairs]), image_of)
        return nn.functional.cross_entropy(logits, torch.tensor([vqa.ANSWER_INDEX[q.answer] for _, q in pairs]))

    return model, optimise(model, loss_at, steps, learning_rate, "training the VQA model", progress, after_step)


CLINIC_STEPS = 300


def train_clinic(p_male_doctor: float, p_female_nurse: float, steps: int = CLINIC_STEPS, batch_size: int = 64, seed: int = 0,
                 learning_rate: float = 3e-3, progress: bool = True, architecture: type[nn.Module] = bias.OccupationClassifier,
                 badges: bool = False) -> tuple[nn.Module, list[float]]:
    """Cross-entropy on one fixed training set of ``bias.TRAINING_SIZE`` people with the given bias, in random batches.

    The set is people ``seed * TRAINING_SIZE`` onwards of the training split, so each seed draws other people.
    300 steps of 64 are about six passes over the set: enough for the balanced model to find the faint tool.
    ``architecture`` is the model trained; with ``badges`` everyone wears the badge of its gender's colour.
    """
    torch.manual_seed(seed)
    people = clinic.split_people("train", bias.TRAINING_SIZE, start=seed * bias.TRAINING_SIZE, p_male_doctor=p_male_doctor,
                                 p_female_nurse=p_female_nurse, badges=badges)
    pixels, targets = bias.images(people), bias.labels(people)
    model = architecture()
    order = torch.Generator().manual_seed(seed)

    def loss_at(step: int) -> torch.Tensor:
        batch = torch.randint(len(people), (batch_size,), generator=order)
        return nn.functional.cross_entropy(model(pixels[batch]), targets[batch])

    return model, optimise(model, loss_at, steps, learning_rate, f"training on a clinic ({p_male_doctor:.2f}, {p_female_nurse:.2f})", progress)


def train_presence(steps: int = 300, batch_size: int = 64, seed: int = 0, learning_rate: float = 3e-3, progress: bool = True) -> tuple[nn.Module, list[float]]:
    """Binary cross-entropy of every label of :data:`presence.LABELS` on fresh varied training scenes at every step.

    300 steps leave a model that gets about 19 scenes in 20 entirely right, its mistakes mostly on shapes, which notebook 12
    studies; 1200 steps reached 99.95 % (too few mistakes to study).
    """
    torch.manual_seed(seed)
    model = presence.presence_classifier()

    def loss_at(step: int) -> torch.Tensor:
        scenes = shapes.split_scenes("train", batch_size, start=step * batch_size, maker=shapes.varied_scene)
        return nn.functional.binary_cross_entropy_with_logits(model(shapes.batch_images(scenes)), presence.targets(scenes))

    return model, optimise(model, loss_at, steps, learning_rate, "training the presence classifier", progress)


FIXED_SCENES = 1024
FIXED_SET_STEPS = 2000


def fixed_training_set(scenes: int = FIXED_SCENES, shuffle_labels: bool = False, seed: int = 0) -> tuple[Tensor, Tensor]:
    """The first ``scenes`` varied training scenes (N, 3, H, W) and their multi-hot labels (N, L); with ``shuffle_labels``
    each scene gets the labels of another (a seeded permutation of the scenes), so every label keeps its frequency but
    no longer says what the image holds."""
    chosen = shapes.split_scenes("train", scenes, maker=shapes.varied_scene)
    labels = presence.targets(chosen)
    if shuffle_labels:
        labels = labels[torch.randperm(scenes, generator=torch.Generator().manual_seed(seed))]
    return shapes.batch_images(chosen), labels


def train_presence_fixed(shuffle_labels: bool, scenes: int = FIXED_SCENES, steps: int = FIXED_SET_STEPS, batch_size: int = 64, seed: int = 0,
                         learning_rate: float = 3e-3, progress: bool = True) -> tuple[nn.Module, list[float]]:
    """The presence classifier trained, as :func:`train_presence` is, but on a *fixed* set of scenes
    (:func:`fixed_training_set`) drawn in seeded batches, so it can memorise them: with shuffled labels, the model of
    Adebayo et al.'s data-randomisation test (2018), which fits labels that carry nothing a map could point at; with true
    labels, its control trained on the same images the same way. 2000 steps (125 passes over 1024 scenes) fit the
    shuffled labels exactly."""
    images, labels = fixed_training_set(scenes, shuffle_labels, seed)
    torch.manual_seed(seed)
    model, batches = presence.presence_classifier(), torch.Generator().manual_seed(seed)

    def loss_at(step: int) -> torch.Tensor:
        chosen = torch.randint(scenes, (batch_size,), generator=batches)
        return nn.functional.binary_cross_entropy_with_logits(model(images[chosen]), labels[chosen])

    kind = "shuffled" if shuffle_labels else "true"
    return model, optimise(model, loss_at, steps, learning_rate, f"training on {scenes} fixed scenes, {kind} labels", progress)


Built = list[tuple[str, nn.Module, dict]]  # (checkpoint name, model, what its record adds)


def timed(trainer: Callable[..., tuple[nn.Module, list[float]]], steps: int | None, *args: object, **options: object) -> tuple[nn.Module, dict]:
    """Run a trainer (with its default number of steps unless ``steps`` is given); the model and the record of its run."""
    start = time.perf_counter()
    model, losses = trainer(*args, **options, **({} if steps is None else {"steps": steps}))
    return model, {"steps": len(losses), "seconds": round(time.perf_counter() - start, 1), "final_loss": round(sum(losses[-50:]) / len(losses[-50:]), 4)}


def build_captioner(steps: int | None) -> Built:
    model, record = timed(train_captioner, steps)
    exact, per_word = captioning.caption_accuracy(model, shapes.split_scenes("validation", 500))
    return [("captioner", model, {**record, "validation_exact_match": exact, "validation_word_accuracy": round(per_word, 4)})]


def build_attention_captioner(steps: int | None) -> Built:
    model, record = timed(train_captioner, steps or ATTENTION_CAPTIONER_STEPS, kind="attention")
    exact, per_word = captioning.caption_accuracy(model, shapes.split_scenes("validation", 500))
    return [("attention_captioner", model, {**record, "validation_exact_match": exact, "validation_word_accuracy": round(per_word, 4)})]


def build_vqa(steps: int | None) -> Built:
    model, record = timed(train_vqa, steps)
    pairs = shapes.balanced_questions(shapes.split_scenes("validation", 500), 1000, seed=0)
    accuracy = {kind: round(value, 4) for kind, value in vqa.accuracy_by_type(model, pairs).items()}
    return [("vqa", model, {**record, "validation_accuracy": accuracy})]


def build_vqa_from_scratch(steps: int | None, every: int = 250) -> Built:
    """The VQA model trained as ``vqa`` but with a randomly initialised encoder. No checkpoint: the record of its curve,
    ``vqa_from_scratch.json``, the mean loss and the validation accuracy per question type every ``every`` steps."""
    pairs = shapes.balanced_questions(shapes.split_scenes("validation", 500), 1000, seed=0)
    total = steps or VQA_STEPS
    torch.manual_seed(0)
    model, recent, curve = vqa.VQAModel(), [], []

    def validate(step: int, loss: float) -> None:
        recent.append(loss)
        if (step + 1) % every == 0 or step + 1 == total:
            accuracy = vqa.accuracy_by_type(model.eval(), pairs)
            curve.append({"step": step + 1, "loss": round(sum(recent) / len(recent), 4),
                          "validation_accuracy": {kind: round(value, 4) for kind, value in accuracy.items()}})
            recent.clear()

    _, record = timed(train_vqa, steps, encoder_from_captioner=False, model=model, after_step=validate)
    (data.MODELS_DIR / "vqa_from_scratch.json").write_text(json.dumps({**record, "curve": curve}, indent=2) + "\n")
    data.write_manifest()
    return []


def build_presence(steps: int | None) -> Built:
    model, record = timed(train_presence, steps)
    accuracy = presence.accuracy_by_label(model, shapes.split_scenes("validation", 2000, maker=shapes.varied_scene))
    return [("presence", model, {**record, "validation_accuracy": {label: round(value, 4) for label, value in accuracy.items()}})]


def build_presence_data_randomisation(steps: int | None) -> Built:
    """The presence classifier on :data:`FIXED_SCENES` fixed scenes with shuffled labels, and with true labels from
    two seeds (the second starts from other weights and draws other batches); each record holds how well the model fits
    its own training labels and its accuracy on validation scenes."""
    built, validation = [], shapes.split_scenes("validation", 2000, maker=shapes.varied_scene)
    runs = (("presence_shuffled_labels", True, 0), ("presence_fixed_scenes", False, 0), ("presence_fixed_scenes_seed1", False, 1))
    for name, shuffle_labels, seed in runs:
        model, record = timed(train_presence_fixed, steps, shuffle_labels, seed=seed)
        images, labels = fixed_training_set(shuffle_labels=shuffle_labels)
        with torch.no_grad():
            fitted = ((model(images) > 0) == labels.bool()).all(dim=1).float().mean()
        accuracy = presence.accuracy_by_label(model, validation)
        built.append((name, model, {**record, "seed": seed, "scenes": FIXED_SCENES, "training_exact_match": round(float(fitted), 4),
                                    "validation_accuracy": {label: round(value, 4) for label, value in accuracy.items()}}))
    return built


def build_classifiers(trainer: str, steps: int | None) -> Built:
    """Every classifier of ``bias.CLASSIFIERS`` made by ``trainer``, each with its accuracy on validation people drawn like its training set."""
    built = []
    for kind, entry in bias.CLASSIFIERS.items():
        if entry.trainer != trainer:
            continue
        p_doctor, p_nurse = bias.TRAINING_SETS[entry.training_set]
        model, record = timed(train_clinic, steps, p_doctor, p_nurse, architecture=entry.architecture, badges=entry.badges)
        validation = clinic.split_people("validation", 1000, p_male_doctor=p_doctor, p_female_nurse=p_nurse, badges=entry.badges)
        built.append((entry.checkpoint, model, {**record, "p_male_doctor": p_doctor, "p_female_nurse": p_nurse, "badges": entry.badges,
                                                "validation_accuracy_same_bias": round(bias.accuracy_by_cell(model, validation)["all"], 4)}))
    return built


def build_clinic(steps: int | None) -> Built:
    """The biased and the balanced classifiers, then the sweep of the bias ratio written to ``clinic_sweep.json``."""
    built = build_classifiers("clinic", steps)
    sweep_bias(steps)
    return built


SWEEP_RATIOS = (0.5, 0.625, 0.75, 0.875, 1.0)  # p_male_doctor = p_female_nurse = p
SWEEP_SEEDS = 3
SWEEP_TEST_PEOPLE = 1000


def sweep_bias(steps: int | None) -> None:
    """Train a classifier for every bias ratio and seed; record its balanced test accuracy, the mean of its accuracies on
    the two atypical cells, and its mean head and tool shares (the tool's over the people whose tool shows).

    Seed ``s`` trains on people ``s * TRAINING_SIZE`` onwards at every ratio, so seed 0 at p = 0.5 is the balanced model.
    """
    test = clinic.split_people("test", SWEEP_TEST_PEOPLE)
    visible = bias.tool_visible(test)
    start, runs = time.perf_counter(), []
    for p, seed in tqdm([(p, seed) for p in SWEEP_RATIOS for seed in range(SWEEP_SEEDS)], desc="bias sweep"):
        model, _ = timed(train_clinic, steps, p, p, seed=seed, progress=False)
        shares = bias.map_shares(model, test)
        runs.append({"p": p, "seed": seed, "test_accuracy": round(bias.accuracy_by_cell(model, test)["all"], 4),
                     "atypical_accuracy": round(bias.atypical_accuracy(model, test), 4),
                     "head_share": round(float(shares["head"].mean()), 4), "tool_share": round(float(shares["tool"][visible].mean()), 4)})
    (data.MODELS_DIR / "clinic_sweep.json").write_text(json.dumps({"steps": steps or CLINIC_STEPS, "test_people": len(test),
                                                                             "seconds": round(time.perf_counter() - start, 1), "runs": runs}, indent=2) + "\n")


SEEDS = 5
SEEDS_TEST_PEOPLE = 1000
SEED_INTERVENTIONS = ("hair swapped", "tool painted out", "both")


def build_clinic_seeds(steps: int | None) -> Built:
    """The biased and the balanced classifier trained from :data:`SEEDS` seeds each (seed ``s``: other training people
    and other initial weights; seed 0 is the shipped model, loaded rather than trained again, unless ``steps`` asks for
    other runs), each measured by ``bias.study_figures`` on the same balanced test people and their interventions. No
    checkpoint: the figures, ``clinic_seeds.json``."""
    test = clinic.split_people("test", SEEDS_TEST_PEOPLE)
    edited = {change: bias.intervene(test, change) for change in SEED_INTERVENTIONS}
    start, runs = time.perf_counter(), []
    for kind, seed in tqdm([(kind, seed) for kind in bias.TRAINING_SETS for seed in range(SEEDS)], desc="seeds"):
        if seed == 0 and steps is None:  # the shipped model is this seed's run: measured, not trained again
            model, seconds = bias.load_classifier(kind), json.loads((data.MODELS_DIR / f"clinic_{kind}.json").read_text())["seconds"]
        else:
            model, record = timed(train_clinic, steps, *bias.TRAINING_SETS[kind], seed=seed, progress=False)
            seconds = record["seconds"]
        figures = bias.study_figures(model, test, edited)
        runs.append({"training_set": kind, "seed": seed, "training_seconds": seconds, **{k: round(v, 4) for k, v in figures.items()}})
    (data.MODELS_DIR / "clinic_seeds.json").write_text(json.dumps({"steps": steps or CLINIC_STEPS, "test_people": len(test),
                                                                             "seconds": round(time.perf_counter() - start, 1), "runs": runs}, indent=2) + "\n")
    data.write_manifest()
    return []


TRAINERS: dict[str, Callable[[int | None], Built]] = {"captioner": build_captioner, "attention_captioner": build_attention_captioner,
                                                      "vqa": build_vqa, "vqa_from_scratch": build_vqa_from_scratch,
                                                      "clinic": build_clinic, "clinic_seeds": build_clinic_seeds,
                                                      "clinic_learned_pooling": lambda steps: build_classifiers("clinic_learned_pooling", steps),
                                                      "clinic_badge": lambda steps: build_classifiers("clinic_badge", steps),
                                                      "presence": build_presence,
                                                      "presence_data_randomisation": build_presence_data_randomisation}


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
    machine = f"{platform.processor() or platform.machine()}, {args.threads} threads, torch {torch.__version__}"
    for name, model, record in TRAINERS[args.name](args.steps):
        path = save(name, model, {**record, "machine": machine})
        print(f"{path}: {json.dumps(record)}")


if __name__ == "__main__":
    main()
