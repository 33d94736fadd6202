"""The classification accuracy score (CAS) and the training recipe of the shipped classifier.

CAS (Ravuri & Vinyals 2019, "Classification Accuracy Score for Conditional Generative Models"):
train a classifier on generated labelled images only, test it on real held-out images. Here the
classifier is `DigitClassifier` (the shipped classifier's architecture) trained with the same
fixed recipe as the shipped weights (`scripts/train_classifier.py` uses `fit_classifier` too):
AdamW (lr 3e-3, weight decay 5e-4), one-cycle schedule, batch 128, random +-2 pixel shifts,
8 epochs and at least 600 steps (so a small N is not also a short training).
The same recipe on the same number of real training images gives the number to compare with.
"""

from __future__ import annotations

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
