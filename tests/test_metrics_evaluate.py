"""evaluate(): streaming, one feature pass per network, the record, the reference cache.

A cheap stand-in network (pixel means on a 4x4 grid) replaces Inception here; the real
networks are tested in test_metrics_inception.py and test_metrics_classifier.py.
"""

import warnings

import pytest
import torch

from ganforge.metrics import evaluation as ev
from ganforge.metrics.definitions import Unavailable


class PooledPixels:
    name, sha256, resize = "pooled-pixels", "0" * 64, "adaptive-avg-4x4"

    def __init__(self, with_logits=False):
        self.calls, self.with_logits = 0, with_logits

    def __call__(self, images):
        self.calls += 1
        f = torch.nn.functional.adaptive_avg_pool2d(images.float() / 255, 4).flatten(1).double()
        return f, (f[:, :10] * 20 if self.with_logits else None)


@pytest.fixture
def nets(monkeypatch, tmp_path):
    monkeypatch.setenv("GANFORGE_CACHE", str(tmp_path / "cache"))
    made = {}

    def build(key, *, device, inception_path, cache_dir, classifier):
        if key == "classifier" and classifier == "nothing":
            raise Unavailable("no classifier for this dataset")
        net = PooledPixels(with_logits=key == "classifier")
        made[key] = net
        return ev._Network(key, net, name=net.name, sha256=net.sha256, resize=net.resize, source="test")

    monkeypatch.setattr(ev, "_build_network", build)
    return made


def _real(n=300, seed=0):
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def _replay(images, labels=None):
    """generate() that hands out `images` in order (deterministic, ignores the generator)."""
    state = {"i": 0}

    def generate(b, gen):
        i = state["i"]
        state["i"] += b
        return images[i: i + b], (labels[i: i + b] if labels is not None else None)

    return generate


def test_fid_of_the_real_set_against_itself_is_zero_and_record_is_complete(nets):
    real = _real()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rec = ev.evaluate(generate=_replay(real), real_images=real, dataset_key="toy", metrics=["fid", "kid", "pr"],
                          n=300, batch_size=64, device="cpu", seed=3)
    assert any("2048" in str(w.message) for w in caught)
    fid = rec["metrics"]["fid"]
    assert abs(fid["value"]) < 1e-6
    for field in ("value", "n_generated", "n_real", "reference_split", "feature_network", "feature_network_sha256",
                  "resize_method", "seed", "ganforge_version", "seconds", "warning"):
        assert field in fid, field
    assert fid["n_real"] == 300 and fid["seed"] == 3 and fid["reference_split"] == "train"
    assert rec["metrics"]["pr"]["value"] == {"precision": 1.0, "recall": 1.0}
    assert abs(rec["metrics"]["kid"]["value"]) < 1e-2
    flat = ev.flat_values(rec)
    assert set(flat) == {"fid", "kid", "pr_precision", "pr_recall"}
    # one feature pass per batch for all three metrics: 5 generated + 5 real batches
    assert nets["inception"].calls == 10


@pytest.mark.filterwarnings("ignore:fid with n=")
def test_reference_statistics_are_cached_on_disk(nets):
    real = _real()
    kwargs = dict(dataset_key="toy", metrics=["fid"], n=100, batch_size=50, device="cpu", n_real=200)
    first = ev.evaluate(generate=_replay(_real(seed=1)), real_images=real, **kwargs)
    assert first["networks"]["inception"]["reference"]["cached"] is False

    def must_not_load():
        raise AssertionError("the real images were loaded despite the cache")

    second = ev.evaluate(generate=_replay(_real(seed=1)), real_images=must_not_load, **kwargs)
    assert second["networks"]["inception"]["reference"]["cached"] is True
    assert second["metrics"]["fid"]["value"] == pytest.approx(first["metrics"]["fid"]["value"], rel=1e-12)
    # a different N real is a different key
    third = ev.evaluate(generate=_replay(_real(seed=1)), real_images=real, **dict(kwargs, n_real=150))
    assert third["networks"]["inception"]["reference"]["cached"] is False


@pytest.mark.filterwarnings("ignore:fid with n=")
def test_unavailable_metrics_say_why_instead_of_failing(nets):
    real = _real(100)
    rec = ev.evaluate(generate=_replay(real), real_images=real, dataset_key="toy", metrics=["is", "cls-acc"],
                      n=100, batch_size=50, device="cpu")
    assert rec["metrics"]["is"]["value"] is None and "pt_inception" in rec["metrics"]["is"]["unavailable"]
    assert rec["metrics"]["cls-acc"]["value"] is None and "unconditional" in rec["metrics"]["cls-acc"]["unavailable"]
    rec = ev.evaluate(generate=_replay(real), real_images=real, dataset_key="toy", metrics=["cls-is"], n=100,
                      batch_size=50, device="cpu", classifier="nothing")
    assert "no classifier" in rec["metrics"]["cls-is"]["unavailable"]


def test_class_accuracy_and_classifier_score_with_labels(nets):
    real = _real(100)
    labels = torch.arange(100) % 10
    rec = ev.evaluate(generate=_replay(real, labels), real_images=real, dataset_key="toy",
                      metrics=["cls-acc", "cls-is"], n=100, batch_size=25, device="cpu")
    assert 0.0 <= rec["metrics"]["cls-acc"]["value"] <= 1.0
    assert rec["metrics"]["cls-is"]["value"] >= 1.0 and rec["metrics"]["cls-is"]["splits"] == 10


def test_make_generate_maps_minus_one_one_to_uint8():
    class G(torch.nn.Module):
        def forward(self, z, labels=None):
            return torch.tanh(z[:, :4].view(-1, 1, 2, 2) * 10)

    generate = ev.make_generate(G(), z_dim=8)
    images, labels = generate(5, torch.Generator().manual_seed(0))
    assert images.dtype == torch.uint8 and images.shape == (5, 1, 2, 2) and labels is None
    assert set(images.unique().tolist()) <= {0, 255} | set(range(256))
    images, labels = ev.make_generate(G(), z_dim=8, num_classes=3)(6, torch.Generator().manual_seed(0))
    assert labels.shape == (6,) and int(labels.max()) < 3
