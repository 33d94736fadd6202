"""The audit's metrics, pure functions over features: memorisation and coverage (`metrics.auditing` runs the audit).

- Nearest-neighbour search of many query rows against a large reference set (60,000 training
  images) by blocked matrix products: argmin ||q - r||² = argmin (||r||² - 2 q·r), a running
  minimum over reference blocks, no Python loop over pairs. The winning distance is then recomputed
  exactly, so a verbatim copy has distance 0, not float32 round-off.
- Authenticity (Alaa et al. 2022, "How Faithful is your Synthetic Data? Sample-level Metrics
  for Evaluating and Auditing Generative Models"): a sample is inauthentic when it is at least
  as close to its nearest training image as that training image is to its own nearest training
  neighbour.
- Density and coverage (Naeem et al. 2020, "Reliable Fidelity and Diversity Metrics for
  Generative Models") over k-nearest-neighbour balls around the real samples, using the same
  k-NN radii as improved precision/recall (`functional.precision_recall`).
- The class histogram of generated images against the real one, and its total variation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ganforge.metrics.functional import _kth_neighbour_radii

# Row blocks of the query and the reference: a 2048 x 8192 float32 block of distances is 64 MiB.
QUERY_BLOCK = 2048
REFERENCE_BLOCK = 8192
# A generated sample closer to its nearest training image than this fraction of that image's own
# nearest-neighbour distance is counted as a near-copy.
COPY_RATIO = 0.5


@dataclass(frozen=True)
class Neighbours:
    distance: torch.Tensor   # float64 [N]: Euclidean distance to the nearest reference row
    index: torch.Tensor      # int64 [N]: which reference row


def nearest_neighbours(query: torch.Tensor, reference: torch.Tensor, *, exclude_self: torch.Tensor | None = None,
                       query_block: int = QUERY_BLOCK, reference_block: int = REFERENCE_BLOCK) -> Neighbours:
    """The nearest row of `reference` [M, D] to each row of `query` [N, D] (Euclidean).

    exclude_self: int64 [N], the reference index of each query row when the query rows are
    themselves reference rows; that row is skipped, so the answer is the nearest *other* row.
    """
    q = query.reshape(len(query), -1).float()
    r = reference.reshape(len(reference), -1).float()
    if q.shape[1] != r.shape[1]:
        raise ValueError(f"query rows have {q.shape[1]} features, reference rows {r.shape[1]}")
    if len(r) < 1 + (exclude_self is not None):
        raise ValueError("nearest-neighbour search needs a non-empty reference set")
    r_sq = (r * r).sum(1)
    best = torch.full((len(q),), float("inf"))
    best_idx = torch.zeros(len(q), dtype=torch.int64)
    for i in range(0, len(q), query_block):
        qb = q[i: i + query_block]
        for j in range(0, len(r), reference_block):
            # ||r||² - 2 q·r in one fused product: ||q||² is the same along a row, so it does not
            # change which reference row wins, and the winner's distance is recomputed below.
            d2 = torch.addmm(r_sq[None, j: j + reference_block], qb, r[j: j + reference_block].T, alpha=-2.0)
            if exclude_self is not None:
                own = exclude_self[i: i + query_block] - j
                hit = (own >= 0) & (own < d2.shape[1])
                d2[hit.nonzero(as_tuple=True)[0], own[hit]] = float("inf")
            m, a = d2.min(dim=1)
            better = m < best[i: i + query_block]
            best[i: i + query_block] = torch.where(better, m, best[i: i + query_block])
            best_idx[i: i + query_block] = torch.where(better, a + j, best_idx[i: i + query_block])
    nearest = reference.reshape(len(reference), -1)[best_idx].double()
    exact = (query.reshape(len(query), -1).double() - nearest).norm(dim=1)
    return Neighbours(distance=exact, index=best_idx)


@dataclass(frozen=True)
class Memorisation:
    authenticity: float       # share of samples that are authentic (Alaa et al. 2022)
    near_copies: float        # share closer than COPY_RATIO x the training image's own NN distance
    median_distance: float    # median distance to the nearest training image
    distance: torch.Tensor    # float64 [N]: each sample's distance to its nearest training image
    index: torch.Tensor       # int64 [N]: the nearest training image
    train_distance: torch.Tensor  # float64 [N]: that training image's distance to its own nearest neighbour

    def summary(self) -> dict:
        return {"authenticity": self.authenticity, "near_copies": self.near_copies,
                "median_nn_distance": self.median_distance}


def memorisation(samples: torch.Tensor, train: torch.Tensor, *, copy_ratio: float = COPY_RATIO) -> Memorisation:
    """Authenticity and near-copies of `samples` [N, D] against the training features [M, D].

    Only the training rows that are somebody's nearest neighbour need their own nearest
    neighbour, so the cost is two searches of at most N rows against M, never M x M.
    """
    nn = nearest_neighbours(samples, train)
    hit, inverse = torch.unique(nn.index, return_inverse=True)
    own = nearest_neighbours(train[hit], train, exclude_self=hit)
    train_distance = own.distance[inverse]
    # Inauthentic when d(sample, nn) <= d(nn, nn's nn): "<=" so a verbatim copy of a training
    # image that has an exact duplicate in the training set (both distances 0) is still caught.
    authentic = nn.distance > train_distance
    copies = nn.distance <= copy_ratio * train_distance
    return Memorisation(authenticity=float(authentic.double().mean()), near_copies=float(copies.double().mean()),
                        median_distance=float(nn.distance.median()), distance=nn.distance, index=nn.index,
                        train_distance=train_distance)


def closest_pairs(mem: Memorisation, count: int) -> torch.Tensor:
    """Indices of the `count` samples nearest to a training image, the closest first."""
    return mem.distance.argsort()[:count]


@dataclass(frozen=True)
class DensityCoverage:
    density: float
    coverage: float


def density_coverage(real: torch.Tensor, fake: torch.Tensor, *, k: int = 5, batch_size: int = 1024) -> DensityCoverage:
    """Density and coverage of Naeem et al. 2020 with k-NN balls around the real samples.

    density = (1 / kM) sum_j #{real balls containing fake_j}  (about 1 when fake looks like real,
    above 1 when fake crowds dense regions); coverage = share of real balls holding at least one
    fake sample (0..1, drops when modes are missing).
    """
    real, fake = real.double(), fake.double()
    radii = _kth_neighbour_radii(real, k, batch_size)
    inside_count = 0
    covered = torch.zeros(len(real), dtype=torch.bool)
    for i in range(0, len(fake), batch_size):
        inside = torch.cdist(fake[i: i + batch_size], real) <= radii[None, :]
        inside_count += int(inside.sum())
        covered |= inside.any(dim=0)
    return DensityCoverage(density=inside_count / (k * len(fake)), coverage=float(covered.double().mean()))


def random_subset(n_total: int, n: int, seed: int) -> torch.Tensor:
    """n distinct indices below n_total, drawn by `seed` alone."""
    return torch.randperm(n_total, generator=torch.Generator().manual_seed(seed))[:n]


def class_histogram(predicted: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Share of each class among predicted labels [N]: float64 [num_classes], sums to 1."""
    counts = torch.bincount(predicted.long(), minlength=num_classes).double()
    return counts / max(1, len(predicted))


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """Half the L1 distance of two histograms: 0 when equal, 1 when disjoint."""
    return float(0.5 * (p.double() - q.double()).abs().sum())
