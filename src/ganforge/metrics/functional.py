"""Pure, float64 metric functions over feature tensors: no networks, no files.

- Fréchet distance (FID) of two Gaussians fitted to features: Heusel et al. 2017, "GANs Trained
  by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium".
- Kernel distance (KID): unbiased MMD² with the cubic polynomial kernel k(x, y) = (x·y/d + 1)³,
  averaged over random subsets: Bińkowski et al. 2018, "Demystifying MMD GANs".
- Inception Score: exp(E_x KL(p(y|x) || p(y))), mean and std over splits: Salimans et al. 2016,
  "Improved Techniques for Training GANs".
- Improved precision and recall with k-nearest-neighbour balls (k = 3): Kynkäänniemi et al.
  2019, "Improved Precision and Recall Metric for Assessing Generative Models".

The matrix square root is scipy's `sqrtm`; the statistics are float64 sums checked against
numpy in the tests.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Optional, cast

import numpy as np
import scipy.linalg
import torch

# A relative imaginary part of sqrtm(sigma1 @ sigma2) below this is round-off and is dropped.
IMAG_TOLERANCE = 1e-3


def _sqrtm(a: np.ndarray) -> np.ndarray:
    # Without disp=False scipy returns the root alone; its inferred type also has disp=False's
    # (root, error) pair, which pyright cannot rule out.
    return cast(np.ndarray, scipy.linalg.sqrtm(a))


class FeatureStats:
    """Running mean and covariance of features, accumulated in float64 batch by batch, so that
    N is not limited by memory. The sums live where the first batch is (a GPU computes the
    [D, D] outer products far faster, and the features need not leave it); the CPU for devices
    without float64 (MPS)."""

    def __init__(self, dim: int):
        self.dim = dim
        self.n = 0
        # (shift, sum, outer), set by the first batch; the shift is that batch's mean, which keeps
        # the sums well conditioned.
        self._sums: Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = None

    def update(self, features: torch.Tensor) -> None:
        f = features.detach().reshape(len(features), -1)
        if f.shape[1] != self.dim:
            raise ValueError(f"expected {self.dim}-d features, got {f.shape[1]}")
        if self._sums is None:
            on = features.device if features.device.type in ("cpu", "cuda") else torch.device("cpu")
            f = f.to(on, torch.float64)
            self._sums = (f.mean(0), torch.zeros(self.dim, dtype=torch.float64, device=on),
                          torch.zeros(self.dim, self.dim, dtype=torch.float64, device=on))
        shift, total, outer = self._sums
        # float64 before any product: the covariance is built from sums over tens of thousands of
        # images, and FID then subtracts traces in the hundreds to get a few units; float32's 7
        # digits leave too few after both.
        f = f.to(shift.device, torch.float64) - shift
        self.n += len(f)
        total += f.sum(0)
        outer += f.T @ f

    def _state(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self._sums is None:
            raise ValueError("no features accumulated yet")
        return self._sums

    def mean(self) -> np.ndarray:
        shift, total, _ = self._state()
        return (total / self.n + shift).cpu().numpy()

    def cov(self) -> np.ndarray:
        if self.n < 2:
            raise ValueError("covariance needs at least 2 samples")
        _, total, outer = self._state()
        m = total / self.n  # the mean of the shifted features, near 0: the subtraction below loses little
        # n - 1: the unbiased covariance, as numpy's np.cov and the reference FID code compute it
        return ((outer - self.n * torch.outer(m, m)) / (self.n - 1)).cpu().numpy()


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray,
                     *, eps: float = 1e-6) -> float:
    """||mu1 - mu2||² + Tr(sigma1 + sigma2 - 2 (sigma1 sigma2)^½), in float64.

    sqrtm of a product of two PSD matrices is real in exact arithmetic; numerically it can pick
    up an imaginary part (small N, rank-deficient covariances). A negligible one is dropped; a
    larger one is dropped with a warning. A singular product gets eps on the diagonals, as in
    the reference TF implementation.
    """
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    sigma1, sigma2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f"statistics differ in shape: {mu1.shape}/{sigma1.shape} vs {mu2.shape}/{sigma2.shape}")
    diff = mu1 - mu2
    # float64 throughout: Tr(sigma1) + Tr(sigma2) and 2 Tr(covmean) are each in the hundreds for
    # Inception features, and FID is their difference, a few units for a good model; in float32
    # the round-off of that subtraction alone would be visible in the published digits.
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # a singular product (fewer images than feature dimensions): the reference TF code's retry
        offset = np.eye(len(sigma1)) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        imag = np.abs(np.imag(covmean)).max()
        scale = max(1.0, float(np.abs(np.real(covmean)).max()))
        if imag > IMAG_TOLERANCE * scale:
            warnings.warn(
                f"FID: sqrtm(sigma1 @ sigma2) has an imaginary part of {imag:.3g} (real part up to "
                f"{scale:.3g}); using the real part. The covariances are probably estimated from too "
                f"few samples.", RuntimeWarning, stacklevel=2)
        covmean = np.real(covmean)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.trace(covmean))


def polynomial_mmd2(x: torch.Tensor, y: torch.Tensor, *, degree: int = 3, gamma: Optional[float] = None,
                    coef: float = 1.0) -> float:
    """Unbiased MMD² between samples x [m, D] and y [n, D] with k(a, b) = (gamma a·b + coef)^degree,
    gamma = 1/D by default."""
    x, y = x.double(), y.double()
    m, n = len(x), len(y)
    if m < 2 or n < 2:
        raise ValueError("MMD needs at least 2 samples in each set")
    g = 1.0 / x.shape[1] if gamma is None else gamma
    kxx = (x @ x.T * g + coef) ** degree
    kyy = (y @ y.T * g + coef) ** degree
    kxy = (x @ y.T * g + coef) ** degree
    # The diagonal k(x_i, x_i) is left out of the within-set means: that is what makes the estimate
    # unbiased, so KID of two samples of one distribution averages 0 (and can come out negative).
    sxx = (kxx.sum() - kxx.diagonal().sum()) / (m * (m - 1))
    syy = (kyy.sum() - kyy.diagonal().sum()) / (n * (n - 1))
    return float(sxx + syy - 2.0 * kxy.mean())


def kernel_inception_distance(real: torch.Tensor, fake: torch.Tensor, *, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID as in Bińkowski et al.: the mean and std of the unbiased polynomial MMD² over
    `subsets` random subsets of min(subset_size, N_real, N_fake) samples from each set."""
    size = min(subset_size, len(real), len(fake))
    # Seeded, so the same features give the same KID and its std: the subsets are part of the
    # protocol a record states, not noise between two evaluations of one checkpoint.
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(subsets):
        i = torch.randperm(len(real), generator=gen)[:size]
        j = torch.randperm(len(fake), generator=gen)[:size]
        values.append(polynomial_mmd2(real[i], fake[j]))
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std()) if len(v) > 1 else 0.0


def inception_score(probs_or_logits: torch.Tensor, *, splits: int = 10, logits: bool = False) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) on each of `splits` consecutive chunks: (mean, std).

    Pass class probabilities [N, K], or logits with logits=True. Shuffle first if the order of
    the samples is not random.
    """
    p = probs_or_logits.double()
    p = torch.softmax(p, dim=1) if logits else p
    if splits < 1 or splits > len(p):
        raise ValueError(f"splits must be in 1..{len(p)}, got {splits}")
    scores = []
    # Consecutive chunks, not a shuffle, as in Salimans et al.'s code: the score of a given order of
    # images is then reproducible. p(y) is each chunk's own marginal, so 10 splits of 5,000 is the
    # published protocol.
    for chunk in torch.tensor_split(p, splits):
        py = chunk.mean(0, keepdim=True)
        # xlogy: 0 log 0 = 0, so a class a confident network gives probability 0 adds nothing, not NaN
        kl = (torch.special.xlogy(chunk, chunk) - torch.special.xlogy(chunk, py.expand_as(chunk))).sum(1)
        scores.append(math.exp(float(kl.mean())))
    s = torch.tensor(scores, dtype=torch.float64)
    # the population std (numpy's default), as the reference implementation reports it
    return float(s.mean()), float(s.std(unbiased=False)) if len(s) > 1 else 0.0


def _kth_neighbour_radii(x: torch.Tensor, k: int, batch: int) -> torch.Tensor:
    """Distance from each row of x to its k-th nearest other row (the row itself is 0th), on x's
    device. Rows go `batch` at a time, so memory is batch x N distances, never N x N."""
    if len(x) <= k:
        raise ValueError(f"precision/recall with k={k} needs more than {k} samples, got {len(x)}")
    radii = torch.empty(len(x), dtype=torch.float64, device=x.device)
    for i in range(0, len(x), batch):
        d = torch.cdist(x[i: i + batch], x)
        # k + 1: the row's distance to itself, 0, is the smallest; the k-th other row comes after it
        radii[i: i + batch] = d.kthvalue(k + 1, dim=1).values
    return radii


def _coverage(manifold: torch.Tensor, radii: torch.Tensor, probes: torch.Tensor, batch: int) -> float:
    """Fraction of probes that lie within radius of at least one manifold point."""
    inside = 0
    for i in range(0, len(probes), batch):
        d = torch.cdist(probes[i: i + batch], manifold)
        # "<=": a probe on a ball's surface counts as inside, as in Kynkäänniemi et al.'s definition
        # (a real sample is then always inside the real manifold, its own ball's radius included)
        inside += int((d <= radii[None, :]).any(dim=1).sum())
    return inside / len(probes)


@dataclass(frozen=True)
class PrecisionRecall:
    precision: float
    recall: float


def precision_recall(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3, batch_size: int = 1024) -> PrecisionRecall:
    """Improved precision (fake samples inside the real k-NN manifold) and recall (real samples
    inside the fake k-NN manifold), Kynkäänniemi et al. 2019. In float64 on real's device (fake is
    moved there), with distances in blocks of `batch_size` rows: 1024 x 50,000 is 400 MB."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    real, fake = real.double(), fake.to(real.device, torch.float64)
    real_radii = _kth_neighbour_radii(real, k, batch_size)
    fake_radii = _kth_neighbour_radii(fake, k, batch_size)
    return PrecisionRecall(
        precision=_coverage(real, real_radii, fake, batch_size),
        recall=_coverage(fake, fake_radii, real, batch_size),
    )
