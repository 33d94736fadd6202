"""A small CNN classifier for 28x28 grey images (MNIST digits, Fashion-MNIST clothing).

It is the feature network of the classifier metrics: its softmax gives a classifier Inception
Score (Salimans et al. 2016, "Improved Techniques for Training GANs", with this network in place
of Inception-v3), its 128-d penultimate activations give a classifier-feature FID (Heusel et al.
2017), and its argmax gives the class accuracy of a conditional generator. The weights are
trained by `scripts/train_classifier.py` on the full training set and ship in
`ganforge/weights/{dataset}_classifier.safetensors`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ganforge import fsutil
from ganforge.errors import ConfigError, GanforgeError
from ganforge.metrics.precision import float64_on_device, strict_fp32

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"
CLASSIFIER_DATASETS = ("mnist", "fashion-mnist")
# Datasets whose images the shipped classifiers were trained on (mnist-5k is a subset of MNIST).
CLASSIFIER_FOR = {"mnist": "mnist", "mnist-5k": "mnist", "fashion-mnist": "fashion-mnist"}
INPUT_SIZE = 28
FEATURE_DIM = 128


class ClassifierWeightsError(GanforgeError):
    """The shipped classifier weights are missing or unreadable."""


def _block(cin: int, cout: int) -> nn.Sequential:
    # no conv bias: the batch norm that follows subtracts the mean, which would cancel it
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class DigitClassifier(nn.Module):
    """Six 3x3 conv layers (16-32-64 channels, two 2x2 max-pools), global average pooling,
    a 128-unit hidden layer (the "penultimate features") and a linear head.

    Input: float [B, 1, 28, 28] in 0..1. About 81k parameters.
    """

    def __init__(self, num_classes: int = 10, width: int = 16, feature_dim: int = FEATURE_DIM):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            _block(1, w), _block(w, w), nn.MaxPool2d(2),
            _block(w, 2 * w), _block(2 * w, 2 * w), nn.MaxPool2d(2),
            _block(2 * w, 4 * w), _block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        # A hidden layer between the pooled map and the head, so the features FID is computed on are
        # trained to separate the classes (as Inception's pool_3 is), not raw pooled activations.
        self.hidden = nn.Sequential(nn.Linear(4 * w, feature_dim), nn.ReLU(inplace=True))
        # dropout on the training path only: `features` and `features_and_logits` bypass it, so the
        # metrics see the deterministic network whatever mode it is in
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations [B, feature_dim]."""
        return self.hidden(self.body((x - 0.5) / 0.5))  # [B, 1, 28, 28] in 0..1 -> -1..1 -> [B, 128]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(x)))

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = self.features(x)
        return f, self.head(f)


def weights_path(dataset: str) -> Path:
    if dataset not in CLASSIFIER_DATASETS:
        raise ConfigError(
            f"no shipped classifier for dataset {dataset!r}; classifier metrics exist for: "
            f"{', '.join(CLASSIFIER_DATASETS)}"
        )
    return WEIGHTS_DIR / f"{dataset}_classifier.safetensors"


def to_classifier_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [B, C, H, W] -> float [B, 1, 28, 28] in 0..1 (colour averaged to grey; other sizes
    resized with antialiased bilinear interpolation)."""
    x = images.float() / 255.0
    if x.shape[1] != 1:
        # The classifiers know grey digits and garments only; the mean keeps a grey image that was
        # stored as RGB exactly what it was.
        x = x.mean(dim=1, keepdim=True)
    if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False, antialias=True)
    return x


class ShippedClassifier:
    """The trained classifier for one dataset, ready for feature extraction."""

    def __init__(self, dataset: str, *, device: str | torch.device = "cpu", path: Optional[Path] = None):
        from safetensors import SafetensorError
        from safetensors.torch import load_file, safe_open

        self.dataset = dataset
        self.path = Path(path) if path is not None else weights_path(dataset)
        if not self.path.is_file():
            raise ClassifierWeightsError(
                f"classifier weights {self.path} are missing; train them with "
                f"`python scripts/train_classifier.py --dataset {dataset}`"
            )
        try:
            state = load_file(str(self.path))
            with safe_open(str(self.path), framework="pt") as f:
                self.meta = dict(f.metadata() or {})
        except (SafetensorError, OSError, ValueError) as e:
            raise ClassifierWeightsError(f"classifier weights {self.path} are unreadable: {e}") from None
        self.sha256 = fsutil.sha256_file(self.path)
        self.device = torch.device(device)
        self.model = DigitClassifier(num_classes=int(self.meta.get("num_classes", 10)))
        try:
            self.model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
        except RuntimeError:
            raise ClassifierWeightsError(f"{self.path} does not hold DigitClassifier weights") from None
        self.model.to(self.device).eval()
        self.name = f"ganforge-{dataset}-classifier"

    @torch.inference_mode()
    def __call__(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 [B, C, H, W] on any device -> (features float64 [B, 128], logits float64 [B, classes]) on
        this network's device (the CPU for MPS); strict float32 inside (`ganforge.metrics.precision`)."""
        with strict_fp32(self.device.type):
            f, logits = self.model.features_and_logits(to_classifier_input(images.to(self.device)))
        return float64_on_device(f), float64_on_device(logits)
