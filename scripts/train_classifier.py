"""Train the small MNIST / Fashion-MNIST classifier that the classifier metrics use.

    python scripts/train_classifier.py --dataset mnist [--root ../shared/data/mnist]

Trains `ganforge.metrics.classifier.DigitClassifier` on the full 60,000-image training set
(the recipe of `ganforge.metrics.cas.fit_classifier`: random +-2 pixel shifts), reports the test accuracy, and writes
`src/ganforge/weights/{dataset}_classifier.safetensors` with the accuracy in its metadata.
CPU is enough: a few minutes.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from ganforge.metrics.cas import Recipe, accuracy, fit_classifier
from ganforge.metrics.classifier import CLASSIFIER_DATASETS, weights_path

DEFAULT_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def load_split(dataset: str, root: Path, split: str, limit: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images [N, 1, 28, 28] and int64 labels (the first `limit`, when it is not 0)."""
    from ganforge.data import load_dataset

    data = load_dataset(name=dataset, root=root, split=split, limit=limit)
    return data.images, data.labels


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
    p.add_argument("--out", type=Path, default=None, help="default: the shipped weights file in the package")
    p.add_argument("--limit", type=int, default=0, help="use only the first N images of each split (a smoke run)")
    args = p.parse_args()

    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    root = args.root or DEFAULT_ROOT / args.dataset
    train_x, train_y = load_split(args.dataset, root, "train", args.limit)
    test_x, test_y = load_split(args.dataset, root, "test", args.limit)
    print(f"{args.dataset}: {len(train_x)} train, {len(test_x)} test images from {root}")

    recipe = Recipe(epochs=args.epochs, min_steps=0, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                    label_smoothing=args.label_smoothing)
    t0 = time.time()

    def report(epoch: int, loss: float, model) -> None:
        acc = accuracy(model, test_x, test_y)
        print(f"epoch {epoch + 1}/{args.epochs}  loss {loss:.4f}  test acc {acc:.4%}  "
              f"({time.time() - t0:.0f} s)", flush=True)

    model = fit_classifier(train_x, train_y, num_classes=10, recipe=recipe, on_epoch=report)
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
