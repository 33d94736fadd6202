"""The real side of an evaluation: the reference statistics and features of the real images.

FID compares the generated images' feature mean and covariance with the real images' (Heusel et al.
2017); KID and precision/recall also need the real features themselves. Those depend only on the
real data, the network and how the images reach it, so they are computed once and cached on disk,
keyed by the data's content fingerprint and everything else that changes them
(`ganforge.metrics.reference`); `cached_reference` reads what the cache has, `uncached_reference`
computes and stores the rest. `Collector` accumulates either side's network outputs batch by batch.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Optional, cast

import torch

from ganforge.data.base import default_cache_dir
from ganforge.errors import ConfigError
from ganforge.metrics import reference
from ganforge.metrics.definitions import Side
from ganforge.metrics.functional import FeatureStats
from ganforge.metrics.networks import _is_main, _Network
from ganforge.metrics.precision import maths_device


class Collector:
    """Accumulates one side's outputs of one network, keeping only what the metrics need, on the device
    the network gave them on (no copy to the host per batch)."""

    def __init__(self, needs: set[str]):
        self.needs, self.n = needs, 0
        self.stats: Optional[FeatureStats] = None
        self.features: list[torch.Tensor] = []
        self.logits: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []

    def add(self, feats: torch.Tensor, logits: Optional[torch.Tensor], labels: Optional[torch.Tensor]) -> None:
        self.n += len(feats)
        if "stats" in self.needs:
            self.stats = self.stats or FeatureStats(feats.shape[1])
            self.stats.update(feats)
        if "features" in self.needs:
            # Kept in float32, the precision the network computed them in, so nothing is lost: 50,000
            # Inception features are 400 MB so, 800 MB as float64. KID and P/R widen them for their maths.
            self.features.append(feats.float())
        if "logits" in self.needs and logits is not None:
            self.logits.append(logits)
        if labels is not None:  # the labels asked for, which cls-acc compares with the classifier's answer
            self.labels.append(labels.detach().long())

    def side(self) -> Side:
        s = Side(n=self.n)
        if self.stats is not None:
            s.mu, s.sigma = self.stats.mean(), self.stats.cov()
        if self.features:
            s.features = torch.cat(self.features)
        if self.logits:
            s.logits = torch.cat(self.logits)
        if self.labels:
            s.labels = torch.cat(self.labels)
        return s


def fingerprint_of(real_images, given: Optional[str]) -> tuple[str, Any]:
    """(fingerprint of the real data, the images if they had to be loaded to compute it, else None)."""
    from ganforge.metrics.reference import content_hash

    if given:
        return given, None
    own = getattr(real_images, "reference_key", "") or getattr(real_images, "fingerprint", "")
    if own:  # an ImageData's own key
        return own, None
    images = real_images() if callable(real_images) else real_images
    images = cast(torch.Tensor, getattr(images, "images", images))  # an ImageData or the tensor itself
    return content_hash(images), images


def subset(images: torch.Tensor, n_real: Optional[int], dataset_key: str, split: str) -> torch.Tensor:
    if n_real is None or n_real == len(images):
        return images
    if n_real > len(images):
        raise ConfigError(f"asked for {n_real} real images but {dataset_key} {split} has {len(images)}")
    # A fixed seed, not the evaluation's: the subset then depends on N real alone, so the cached
    # reference statistics of one N real serve every later evaluation with that N.
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(reference.SUBSET_SEED))
    return images[order[:n_real]]


def uncached_reference(networks, real_needs, real, real_info, images_real, *, batch_size, device, group,
                        advance) -> None:
    """Compute the real sides the cache did not have (into `real`) and store them; drop the cache keys
    from `real_info`, which goes into the record."""
    for k in real_needs:
        if k not in real:
            assert images_real is not None, "cached_reference loads the real images for every uncached network"
            real[k] = real_pass(networks[k], real_needs[k], images_real, batch_size, device,
                                 lambda m, k=k: advance(k, m))
            if not group or _is_main():  # every rank holds the same statistics; one writes them
                reference.save(Path(real_info[k]["cache"]), real_info[k].pop("key"), real[k])
        real_info[k].pop("key", None)


def cached_reference(networks, real_needs, real_images, real_fingerprint, *, device, group, key, cache_dir):
    """(cached real sides by network, cache info by network, the real images when some side must be
    computed, else None). A cached side's features are moved to where the metric maths runs."""
    real: dict[str, Side] = {}
    real_info: dict[str, dict] = {}
    images_real = None
    if not real_needs:
        return real, real_info, images_real
    data_key, images_real = fingerprint_of(real_images, real_fingerprint)
    folder = Path(cache_dir or default_cache_dir()) / "reference"
    for k in real_needs:
        net = networks[k]
        rk = reference.key(data=data_key, network=k, sha256=net.sha256, resize=net.resize,
                           precision=net.precision, device=device, **key)
        path = reference.path_for(folder, rk)
        side = reference.load(path, rk, real_needs[k])
        if reference.agree(side is not None, device=device, group=group):
            assert side is not None  # every rank found it, this one included
            if side.features is not None:  # saved on the CPU, so a cache is readable on any machine
                side.features = side.features.to(maths_device(device))
            real[k] = side
        real_info[k] = {"cache": str(path), "cached": k in real, "key": rk}
    if len(real) < len(real_needs):
        if images_real is None:
            images_real = real_images() if callable(real_images) else real_images
        images_real = subset(cast(torch.Tensor, getattr(images_real, "images", images_real)), key["n_real"],
                              key["dataset"], key["split"])
    return real, real_info, images_real


def real_pass(net: _Network, needs: set[str], images: torch.Tensor, batch_size: int, device: torch.device,
               advance) -> Side:
    collector = Collector(needs | {"stats"})
    t0 = time.perf_counter()
    for i in range(0, len(images), batch_size):
        feats, _ = net(images[i: i + batch_size], device)
        collector.add(feats, None, None)
        advance(len(feats))
    net.seconds_real, net.images_real = time.perf_counter() - t0, len(images)
    return collector.side()
