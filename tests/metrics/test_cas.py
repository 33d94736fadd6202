"""The downstream-accuracy protocol (`cas.downstream_accuracy`): real labelled digits standing in for a
generator give a high real-test accuracy, noise with arbitrary labels gives chance, the classes are
balanced, and the real test set is used once, after the epoch was chosen on generated images."""

import pytest
import torch

from conftest import shared_path
from ganforge.data import load_dataset
from ganforge.metrics import cas
from ganforge.metrics.cas import Recipe

# Short, as the CAS tests: 1,000 training images x 150 steps of 128 (about 19 epochs).
FAST = Recipe(epochs=1, min_steps=150)


@pytest.fixture(scope="module")
def mnist():
    root = shared_path("mnist")
    torch.set_num_threads(2)
    return (load_dataset(name="mnist", root=root, split="train", limit=4000, cache=False),
            load_dataset(name="mnist", root=root, split="test", limit=2000, cache=False))


class RealDigits:
    """generate_for(labels, gen): a random real training digit of each requested class; keeps the labels asked for."""

    def __init__(self, data):
        self.data, self.asked = data, []
        self.by_class = [(data.labels == k).nonzero()[:, 0] for k in range(10)]

    def __call__(self, labels, gen):
        self.asked.append(labels.clone())
        pools = [self.by_class[int(k)] for k in labels]
        pick = [pool[torch.randint(0, len(pool), (1,), generator=gen)] for pool in pools]
        return self.data.images[torch.cat(pick)]


def noise(labels, gen):
    return torch.randint(0, 256, (len(labels), 1, 28, 28), generator=gen, dtype=torch.uint8)


@pytest.mark.slow  # trains a classifier for 150 steps (about a minute on a quiet 2-core CPU)
def test_real_labelled_digits_give_a_high_accuracy_on_the_real_test_set(mnist, monkeypatch):
    train, test = mnist
    calls = []
    real_accuracy = cas.accuracy
    monkeypatch.setattr(cas, "accuracy", lambda model, x, y: calls.append(x is test.images)
                        or real_accuracy(model, x, y))
    stand_in = RealDigits(train)
    rec = cas.downstream_accuracy(stand_in, n_train=1000, num_classes=10, test_images=test.images,
                                  test_labels=test.labels, test_split="test", recipe=FAST)
    assert rec["accuracy"] > 0.9, rec
    assert rec["n_synthetic_train"] == 1000 and rec["n_synthetic_val"] == 200 and rec["n_test"] == 2000
    assert rec["epochs"] == 19 and 1 <= rec["selected_epoch"] <= 19 and len(rec["val_accuracy_by_epoch"]) == 19
    by_epoch = rec["val_accuracy_by_epoch"]
    assert by_epoch.index(max(by_epoch)) == rec["selected_epoch"] - 1
    assert abs(rec["val_accuracy"] - max(by_epoch)) < 1e-4
    assert "held-out generated images" in rec["selection"] and rec["test_split"] == "test"
    # the test set once, at the end; every epoch's choice on generated images
    assert calls == [False] * 19 + [True]
    asked = torch.cat(stand_in.asked)
    assert len(asked) == 1200 and torch.bincount(asked[:1000]).tolist() == [100] * 10
    assert torch.bincount(asked[1000:]).tolist() == [20] * 10


@pytest.mark.slow  # trains a classifier
def test_noise_with_arbitrary_labels_gives_chance(mnist):
    _, test = mnist
    rec = cas.downstream_accuracy(noise, n_train=500, num_classes=10, test_images=test.images,
                                  test_labels=test.labels, test_split="test", recipe=Recipe(epochs=2, min_steps=0))
    # chance: each class is 8.9% to 11.4% of MNIST's test digits, so any constant guess is in that range
    assert 0.05 < rec["accuracy"] < 0.16, rec


def test_balanced_labels():
    assert cas.balanced_labels(7, 3).tolist() == [0, 1, 2, 0, 1, 2, 0]
