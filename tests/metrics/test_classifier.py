"""The shipped MNIST / Fashion-MNIST classifiers on real test images."""


import pytest
import torch

from conftest import SHARED_DATA
from ganforge.errors import GanforgeError
from ganforge.metrics import functional as mf
from ganforge.metrics.classifier import DigitClassifier, ShippedClassifier, to_classifier_input, weights_path


def _test_split(name: str):
    from ganforge.data import load_dataset

    folder = SHARED_DATA / name
    if not (folder / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real {name} test images not found in {folder}")
    if not weights_path(name).is_file():
        pytest.skip(f"shipped classifier weights {weights_path(name)} are missing")
    data = load_dataset(name=name, root=folder, split="test")
    return data.images, data.labels


def _run(clf, images, batch=2000):
    feats, logits = zip(*(clf(images[i: i + batch]) for i in range(0, len(images), batch)))
    return torch.cat(feats), torch.cat(logits)


def test_mnist_classifier_scores_real_test_digits():
    images, labels = _test_split("mnist")
    clf = ShippedClassifier("mnist")
    feats, logits = _run(clf, images)
    assert feats.shape == (10000, 128) and feats.dtype == torch.float64
    accuracy = float((logits.argmax(1) == labels).double().mean())
    score, _ = mf.inception_score(logits, splits=10, logits=True)
    assert accuracy >= 0.99, accuracy
    assert score >= 9.8, score


def test_fashion_classifier_is_usable():
    images, labels = _test_split("fashion-mnist")
    clf = ShippedClassifier("fashion-mnist")
    _, logits = _run(clf, images[:2000])
    assert float((logits.argmax(1) == labels[:2000]).double().mean()) >= 0.88


def test_classifier_input_handles_colour_and_other_sizes():
    x = to_classifier_input(torch.full((2, 3, 32, 32), 255, dtype=torch.uint8))
    assert x.shape == (2, 1, 28, 28) and torch.allclose(x, torch.ones_like(x))


def test_missing_or_corrupt_weights_are_one_line_errors(tmp_path):
    with pytest.raises(GanforgeError, match="missing"):
        ShippedClassifier("mnist", path=tmp_path / "nope.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(GanforgeError) as err:
        ShippedClassifier("mnist", path=bad)
    assert "\n" not in str(err.value)
    with pytest.raises(GanforgeError, match="no shipped classifier"):
        weights_path("cifar10")


def test_classifier_is_small():
    assert sum(p.numel() for p in DigitClassifier().parameters()) < 100_000
