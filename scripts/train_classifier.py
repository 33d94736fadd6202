"""Train the small MNIST / Fashion-MNIST classifier that the classifier metrics use.

    python scripts/train_classifier.py --dataset mnist [--root ../shared/data/mnist]

Trains `ganforge.metrics.classifier.DigitClassifier` on the full 60,000-image training set
(random +-2 pixel shifts as augmentation), reports the test accuracy, and writes
`src/ganforge/weights/{dataset}_classifier.safetensors` with the accuracy in its metadata.
CPU is enough: a few minutes.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ganforge.metrics.classifier import CLASSIFIER_DATASETS, DigitClassifier, weights_path

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_split(dataset: str, root: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 1, 28, 28] and int64 labels."""
    from ganforge.data import load_dataset

    data = load_dataset(name=dataset, root=root, split=split)
    return data.images, data.labels


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
    model.eval()
    correct = 0
    for i in range(0, len(images), batch):
        logits = model(images[i: i + batch].float() / 255.0)
        correct += int((logits.argmax(1) == labels[i: i + batch]).sum())
    return correct / len(images)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=CLASSIFIER_DATASETS, default="mnist")
    p.add_argument("--root", type=Path, default=None, help="folder with the four IDX .gz files")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--label-smoothing", type=float, default=0.0,
                   help="keep 0: smoothing caps the softmax and so the classifier Inception Score")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    root = args.root or DEFAULT_ROOT / args.dataset
    train_x, train_y = load_split(args.dataset, root, "train")
    test_x, test_y = load_split(args.dataset, root, "test")
    print(f"{args.dataset}: {len(train_x)} train, {len(test_x)} test images from {root}")

    model = DigitClassifier(num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=5e-4)
    steps_per_epoch = math.ceil(len(train_x) / args.batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.time()
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_x), generator=gen)
        total = 0.0
        for i in range(0, len(order), args.batch_size):
            idx = order[i: i + args.batch_size]
            x = random_shift(train_x[idx].float() / 255.0, 2, gen)
            loss = F.cross_entropy(model(x), train_y[idx], label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        acc = accuracy(model, test_x, test_y)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {total / len(order):.4f}  test acc {acc:.4%}  "
              f"({time.time() - t0:.0f} s)", flush=True)

    acc = accuracy(model, test_x, test_y)
    out = args.out or weights_path(args.dataset)
    out.parent.mkdir(parents=True, exist_ok=True)
    from safetensors.torch import save_file

    meta = {
        "dataset": args.dataset, "num_classes": "10", "test_accuracy": f"{acc:.4f}",
        "epochs": str(args.epochs), "seed": str(args.seed), "label_smoothing": str(args.label_smoothing),
        "arch": "DigitClassifier(width=16, feature_dim=128)",
    }
    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, str(out), metadata=meta)
    print(f"test accuracy {acc:.4%}; wrote {out} ({out.stat().st_size / 1024:.0f} KB) in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
