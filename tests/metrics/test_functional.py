"""The float64 metric functions against closed forms and independent references."""

import math
import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from ganforge.metrics import functional as mf


def _random_features(n=400, d=16, seed=0, shift=0.0):
    g = np.random.default_rng(seed)
    a = g.normal(size=(d, d)) / math.sqrt(d)
    return torch.from_numpy(g.normal(size=(n, d)) @ a + shift)


def _statistics(features):
    """(mean, covariance) of features [N, D] through FeatureStats, as `evaluate` streams them."""
    stats = mf.FeatureStats(features.shape[1])
    stats.update(features)
    return stats.mean(), stats.cov()


def _fid(real, fake):
    """FID of two feature sets, as `evaluate` computes it: the statistics of each, then the distance."""
    return mf.frechet_distance(*_statistics(real), *_statistics(fake))


def test_feature_statistics_match_numpy():
    f = _random_features(n=300, d=12, shift=5.0)
    mu, sigma = _statistics(f)
    np.testing.assert_allclose(mu, f.numpy().mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f.numpy(), rowvar=False), rtol=1e-10, atol=1e-12)
    stats = mf.FeatureStats(12)     # streamed in uneven batches: same result
    for chunk in torch.split(f, 77):
        stats.update(chunk)
    np.testing.assert_allclose(stats.cov(), sigma, rtol=1e-10, atol=1e-12)


def test_fid_of_a_set_against_itself_is_zero():
    f = _random_features(n=500, d=8)
    assert abs(_fid(f, f)) < 1e-6


def test_fid_of_two_gaussians_matches_closed_form():
    # Diagonal covariances commute, so Tr((S1 S2)^1/2) = sum sqrt(s1 s2).
    mu1, mu2 = np.array([0.0, 1.0, -2.0]), np.array([1.0, 1.0, 0.5])
    s1, s2 = np.array([1.0, 4.0, 0.25]), np.array([9.0, 1.0, 0.25])
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert mf.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-12)
    # and a rotated (non-diagonal) pair: FID is invariant to a common rotation
    q, _ = np.linalg.qr(np.random.default_rng(1).normal(size=(3, 3)))
    rotated = mf.frechet_distance(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-9)


def test_fid_matches_independent_float64_scipy_computation():
    a, b = _random_features(n=600, d=32, seed=2), _random_features(n=500, d=32, seed=3, shift=0.3)
    ours = _fid(a, b)
    mu1, mu2 = a.numpy().mean(0), b.numpy().mean(0)
    s1, s2 = np.cov(a.numpy(), rowvar=False), np.cov(b.numpy(), rowvar=False)
    # Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2): a symmetric PSD matrix, eigenvalues via eigh.
    w, v = scipy.linalg.eigh(s1)
    r1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    inner = scipy.linalg.eigvalsh(r1 @ s2 @ r1)
    ref = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * np.sum(np.sqrt(np.clip(inner, 0, None)))
    assert ours == pytest.approx(ref, rel=1e-6)


def test_fid_with_few_samples_stays_real_and_finite():
    a, b = _random_features(n=10, d=32, seed=4), _random_features(n=10, d=32, seed=5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        value = _fid(a, b)
    assert isinstance(value, float) and math.isfinite(value)


def test_kid_is_unbiased_on_identical_and_separates_shifted_sets():
    a = _random_features(n=1000, d=16, seed=6)
    same, _ = mf.kernel_inception_distance(a, a.clone(), subsets=1, subset_size=1000)
    # unbiased MMD² of a set with itself is -2 (mean k(x,x) - mean k(x,y)) / (m - 1): O(1/m), not > 0
    k = (a @ a.T / 16 + 1) ** 3
    m = len(a)
    assert same == pytest.approx(-2 * (k.diagonal().mean() - k.mean()).item() / (m - 1), rel=1e-9)
    shifted, _ = mf.kernel_inception_distance(a, a + 0.3, subsets=10, subset_size=200)
    assert abs(same) < 0.1 * shifted
    # two independent samples of one distribution: the mean over subsets is ~0 (a biased
    # V-statistic would be clearly positive)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 16, generator=g, dtype=torch.float64)
    y = torch.randn(2000, 16, generator=g, dtype=torch.float64)
    mean, std = mf.kernel_inception_distance(x, y, subsets=30, subset_size=200)
    assert abs(mean) < 3 * std / math.sqrt(30) + 1e-3


def test_polynomial_mmd_matches_torchmetrics_reference():
    from torchmetrics.image.kid import poly_mmd

    x, y = _random_features(n=50, d=8, seed=8), _random_features(n=50, d=8, seed=9, shift=0.2)
    ref = float(poly_mmd(x, y, degree=3, gamma=1 / 8, coef=1.0))
    assert mf.polynomial_mmd2(x, y) == pytest.approx(ref, rel=1e-9)


def test_inception_score_of_perfect_classifier_is_number_of_classes():
    k, per_class = 10, 50
    probs = torch.eye(k, dtype=torch.float64).repeat(per_class, 1)   # classes interleaved: every split balanced
    mean, std = mf.inception_score(probs, splits=10)
    assert mean == pytest.approx(k, rel=1e-12) and std == pytest.approx(0, abs=1e-12)
    assert mf.inception_score(torch.full((40, k), 1.0 / k), splits=4)[0] == pytest.approx(1.0)


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_inception_score_matches_torchmetrics_with_one_split():
    from torchmetrics.image.inception import InceptionScore

    logits = torch.randn(64, 5, generator=torch.Generator().manual_seed(0)) * 3
    metric = InceptionScore(feature=torch.nn.Identity(), splits=1)
    metric.update(logits)
    ref = float(metric.compute()[0])
    assert mf.inception_score(logits, splits=1, logits=True)[0] == pytest.approx(ref, rel=1e-5)


def test_precision_recall_of_identical_sets_is_one():
    a = _random_features(n=200, d=8, seed=10)
    pr = mf.precision_recall(a, a.clone(), k=3)
    assert pr.precision == 1.0 and pr.recall == 1.0


def test_precision_recall_of_disjoint_sets_is_zero_and_k_radius_is_third_neighbour():
    a = _random_features(n=100, d=4, seed=11)
    pr = mf.precision_recall(a, a + 100.0, k=3)
    assert pr.precision == 0.0 and pr.recall == 0.0
    pts = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.0]], dtype=torch.float64)
    radii = mf._kth_neighbour_radii(pts, 3, batch=2)
    assert radii.tolist() == [6.0, 5.0, 3.0, 5.0, 9.0]
