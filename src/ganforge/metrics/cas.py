"""The classification accuracy score (CAS) and the training recipe of the shipped classifier.

CAS (Ravuri & Vinyals 2019, "Classification Accuracy Score for Conditional Generative Models"):
train a classifier on generated labelled images only, test it on real held-out images. Here the
classifier is `DigitClassifier` (the shipped classifier's architecture) trained with the same
fixed recipe as the shipped weights (`scripts/train_classifier.py` uses `fit_classifier` too):
AdamW (lr 3e-3, weight decay 5e-4), one-cycle schedule, batch 128, random +-2 pixel shifts,
8 epochs and at least 600 steps (so a small N is not also a short training).
The same recipe on the same number of real training images gives the number to compare with.

`downstream_accuracy` is the protocol of the differentially private GAN papers (Bie et al. 2023,
"Private GANs, Revisited"; Dockhorn et al. 2023, "Differentially Private Diffusion Models"): the
same classifier and recipe trained on class-balanced images of a conditional generator, the epoch
kept chosen on held-out *generated* images only, and the real test set used once, at the end.
Choosing the epoch on the real test set would make the reported number an optimistic, tuned one;
on private data it would also spend information about the real data that no privacy budget counts.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from ganforge.metrics.classifier import DigitClassifier, to_classifier_input


@dataclass(frozen=True)
class Recipe:
    epochs: int = 8
    min_steps: int = 600    # small N trains for more epochs, so every N gets a comparable budget
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 5e-4
    max_shift: int = 2
    label_smoothing: float = 0.0
    seed: int = 0

    def describe(self) -> str:
        return (f"DigitClassifier, {self.epochs} epochs and at least {self.min_steps} steps, batch "
                f"{self.batch_size}, AdamW lr {self.lr} wd {self.weight_decay}, one-cycle, "
                f"+-{self.max_shift} px shifts, "
                f"seed {self.seed}")


def random_shift(x: torch.Tensor, max_shift: int, gen: torch.Generator) -> torch.Tensor:
    """Translate each image by an integer offset in [-max_shift, max_shift] (zero fill)."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None]).view(b, 1, h, 1).expand(b, 1, h, w + 2 * max_shift)
    cols = (dx[:, None] + torch.arange(w)[None]).view(b, 1, 1, w).expand(b, 1, h, w)
    return padded.gather(2, rows).gather(3, cols)


@torch.no_grad()
def accuracy(model: DigitClassifier, images: torch.Tensor, labels: torch.Tensor, batch: int = 1000) -> float:
    """Top-1 accuracy of `model` on uint8 images [N, C, H, W] with int labels [N]."""
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        logits = model(to_classifier_input(images[i: i + batch]))
        correct += int((logits.argmax(1) == labels[i: i + batch]).sum())
    return correct / len(images)


def fit_classifier(images: torch.Tensor, labels: torch.Tensor, *, num_classes: int = 10,
                   recipe: Recipe = Recipe(), on_epoch: Optional[Callable[[int, float, DigitClassifier], None]] = None
                   ) -> DigitClassifier:
    """Train a fresh DigitClassifier on uint8 images [N, C, H, W] and labels [N] with `recipe`;
    on_epoch(epoch, mean loss, model) is called after each epoch. Deterministic for a seed."""
    torch.manual_seed(recipe.seed)
    model = DigitClassifier(num_classes=num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    steps_per_epoch = math.ceil(len(images) / recipe.batch_size)
    epochs = max(recipe.epochs, math.ceil(recipe.min_steps / steps_per_epoch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=recipe.lr, total_steps=epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(recipe.seed)
    labels = labels.long()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=gen)
        total = 0.0
        for i in range(0, len(order), recipe.batch_size):
            idx = order[i: i + recipe.batch_size]
            x = random_shift(to_classifier_input(images[idx]), recipe.max_shift, gen)
            loss = F.cross_entropy(model(x), labels[idx], label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        if on_epoch is not None:
            on_epoch(epoch, total / len(order), model)
    return model.eval()


def classification_accuracy_score(images: torch.Tensor, labels: torch.Tensor, test_images: torch.Tensor,
                                  test_labels: torch.Tensor, *, num_classes: int = 10,
                                  recipe: Recipe = Recipe()) -> float:
    """Accuracy on (test_images, test_labels) of a classifier trained on (images, labels) alone."""
    model = fit_classifier(images, labels, num_classes=num_classes, recipe=recipe)
    return accuracy(model, test_images, test_labels)


def make_generate_for(generator: torch.nn.Module, *, z_dim: int,
                      device: str | torch.device = "cpu") -> Callable[[torch.Tensor, torch.Generator], torch.Tensor]:
    """A conditional generator as generate_for(labels [B], CPU torch.Generator) -> uint8 images of those
    classes (z ~ N(0, I) from that generator), for protocols that choose the labels themselves."""
    from ganforge.outputs.model import to_uint8

    dev = torch.device(device)

    @torch.inference_mode()
    def generate_for(labels: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn(len(labels), z_dim, generator=gen).to(dev)
        return to_uint8(generator(z, labels.to(dev)))

    return generate_for


VAL_SHARE = 0.2     # held-out generated images, as a share of the generated training images
SELECTION = "the epoch with the highest accuracy on the held-out generated images (the first among ties)"


def balanced_labels(n: int, num_classes: int) -> torch.Tensor:
    """n labels cycling through the classes: every class n // K or n // K + 1 times."""
    return torch.arange(n) % num_classes


def _draw(generate_for: Callable, labels: torch.Tensor, gen: torch.Generator, batch: int) -> torch.Tensor:
    return torch.cat([generate_for(labels[i: i + batch], gen).cpu() for i in range(0, len(labels), batch)])


def downstream_accuracy(generate_for: Callable[[torch.Tensor, torch.Generator], torch.Tensor], *, n_train: int,
                        num_classes: int, test_images: torch.Tensor, test_labels: torch.Tensor, test_split: str,
                        n_val: Optional[int] = None, recipe: Recipe = Recipe(), seed: int = 0,
                        batch: int = 250) -> dict:
    """Accuracy on the real test set of a classifier trained on n_train balanced generated images,
    the epoch kept being the best on n_val other balanced generated images.
    generate_for(labels [B], torch.Generator) -> uint8 [B, C, H, W] of the requested classes."""
    n_val = n_val if n_val is not None else max(num_classes, round(VAL_SHARE * n_train))
    gen = torch.Generator().manual_seed(seed)
    y_train, y_val = balanced_labels(n_train, num_classes), balanced_labels(n_val, num_classes)
    x_train, x_val = _draw(generate_for, y_train, gen, batch), _draw(generate_for, y_val, gen, batch)
    best: dict = {"accuracy": -1.0}
    history: list[float] = []

    def keep_best(epoch: int, loss: float, model: DigitClassifier) -> None:
        acc = accuracy(model, x_val, y_val)
        history.append(acc)
        if acc > best["accuracy"]:
            best.update(accuracy=acc, epoch=epoch, state=copy.deepcopy(model.state_dict()))

    model = fit_classifier(x_train, y_train, num_classes=num_classes, recipe=recipe, on_epoch=keep_best)
    model.load_state_dict(best["state"])
    return {"accuracy": accuracy(model, test_images, test_labels), "n_synthetic_train": n_train,
            "n_synthetic_val": n_val, "classes": "balanced", "epochs": len(history),
            "selected_epoch": best["epoch"] + 1,
            "val_accuracy": best["accuracy"], "val_accuracy_by_epoch": [round(a, 4) for a in history],
            "selection": SELECTION, "test_split": test_split, "n_test": len(test_images),
            "recipe": recipe.describe(), "seed": seed,
            "papers": "Bie et al. 2023 (Private GANs, Revisited); Dockhorn et al. 2023"}
