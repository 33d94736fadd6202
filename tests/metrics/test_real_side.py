"""The real side of an evaluation: its fingerprint, its fixed subset, and the collector of outputs."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ganforge.errors import ConfigError
from ganforge.metrics.real_side import Collector, fingerprint_of, subset


def _images(n=20, seed=0):
    return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


def test_the_fingerprint_is_the_one_given_then_the_datas_own_then_the_content():
    images = _images()
    assert fingerprint_of(images, "files-v1") == ("files-v1", None)
    assert fingerprint_of(SimpleNamespace(fingerprint="idx:abc", images=images), None) == ("idx:abc", None)
    key, loaded = fingerprint_of(lambda: images, None)  # a loader: called once, its images handed back
    assert loaded is images and key == fingerprint_of(images.clone(), None)[0]
    changed = images.clone()
    changed[3, 0, 2, 2] ^= 1  # one pixel, one bit
    assert fingerprint_of(changed, None)[0] != key


def test_a_subset_depends_on_its_size_alone_and_too_many_is_one_line():
    images = _images(50)
    assert subset(images, None, "mnist", "test") is images and subset(images, 50, "mnist", "test") is images
    a, b = subset(images, 10, "mnist", "test"), subset(images.clone(), 10, "mnist", "test")
    assert torch.equal(a, b) and len(a) == 10  # the same 10 whenever 10 are asked for: one cache entry
    assert len({tuple(x.flatten().tolist()) for x in a}) == 10  # drawn without replacement
    with pytest.raises(ConfigError, match="asked for 51 real images but mnist test has 50"):
        subset(images, 51, "mnist", "test")


def test_the_collector_keeps_only_what_the_metrics_need():
    feats = [torch.randn(4, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)]
    stats_only = Collector({"stats"})
    everything = Collector({"stats", "features", "logits"})
    for i, f in enumerate(feats):
        stats_only.add(f, f[:, :2], torch.full((len(f),), i))
        everything.add(f, f[:, :2], torch.full((len(f),), i))
    s, e = stats_only.side(), everything.side()
    both = torch.cat(feats)
    assert s.n == e.n == 10 and s.features is None and s.logits is None
    assert np.allclose(s.mu, both.mean(0).numpy()) and np.allclose(s.sigma, np.cov(both.numpy().T))
    assert e.features is not None and e.features.dtype == torch.float32 and torch.allclose(e.features, both.float())
    assert e.logits is not None and e.logits.shape == (10, 2)
    assert e.labels is not None and e.labels.tolist() == [0] * 4 + [1] * 6  # the asked-for labels, in order
