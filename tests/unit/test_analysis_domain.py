"""MMD, Frechet distance and the drift test against plain formulas and known distributions."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.distance import pdist

from atlbench.analysis import DriftResult, drift_test, frechet_distance, mmd_rbf


def mmd2_unbiased_loop(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 written out as in Gretton et al. (2012), median-heuristic RBF kernel."""
    s2 = np.median(pdist(np.vstack([x, y]), "sqeuclidean"))

    def k(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.exp(-np.sum((a - b) ** 2) / (2 * s2)))

    m, n = len(x), len(y)
    kxx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kyy = sum(k(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kxy = sum(k(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return kxx + kyy - 2 * kxy


def test_mmd_matches_plain_formula() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(25, 3))
    y = rng.normal(0.3, 1.2, size=(31, 3))
    mmd2, _ = mmd_rbf(x, y, n_permutations=0)
    assert mmd2 == pytest.approx(mmd2_unbiased_loop(x, y), rel=1e-10, abs=1e-12)


def test_mmd_permutation_statistics_are_exchangeable() -> None:
    # Swapping which sample is "x" must not change the statistic (unbiased MMD is symmetric).
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(40, 4)), rng.normal(size=(25, 4)) + 0.2
    assert mmd_rbf(x, y, n_permutations=0)[0] == pytest.approx(mmd_rbf(y, x, n_permutations=0)[0])


def test_permutation_p_value_sanity() -> None:
    large = 0
    for rep in range(5):
        rng = np.random.default_rng(100 + rep)
        _, p_same = mmd_rbf(rng.normal(size=(80, 5)), rng.normal(size=(70, 5)), seed=rep)
        large += p_same > 0.05
        shifted = rng.normal(size=(70, 5)) + 1.0
        _, p_shift = mmd_rbf(rng.normal(size=(80, 5)), shifted, seed=rep)
        assert p_shift == pytest.approx(1 / 201)  # no permutation reaches a clear shift
    assert large >= 4


def test_mmd_subsamples_large_inputs_deterministically() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(10_000, 6))
    y = rng.normal(size=(10_000, 6)) + 0.5
    a = mmd_rbf(x, y, n_permutations=20, seed=3, max_samples=400)
    b = mmd_rbf(x, y, n_permutations=20, seed=3, max_samples=400)
    assert a == b
    assert a[0] > 0 and a[1] == pytest.approx(1 / 21)


def exact_moments(rng: np.random.Generator, n: int, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Sample whose empirical mean and (ddof=1) covariance are exactly ``mean`` and diag(sd^2)."""
    z = rng.normal(size=(n, mean.size))
    z -= z.mean(axis=0)
    chol = np.linalg.cholesky(np.cov(z, rowvar=False))
    z = np.linalg.solve(chol, z.T).T  # whitened: covariance is the identity
    return z * sd + mean


def test_frechet_closed_form_for_diagonal_gaussians() -> None:
    rng = np.random.default_rng(3)
    d = 5
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    sd1, sd2 = rng.uniform(0.5, 2.0, size=d), rng.uniform(0.5, 2.0, size=d)
    x = exact_moments(rng, 200, mu1, sd1)
    y = exact_moments(rng, 300, mu2, sd2)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((sd1 - sd2) ** 2)
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-5)


def test_frechet_general_matches_symmetric_square_root_route() -> None:
    # Tr((S1 S2)^1/2) = Tr((S1^1/2 S2 S1^1/2)^1/2): an eigh-only reference, no sqrtm.
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    x = rng.normal(size=(500, 4)) @ a
    y = rng.normal(size=(400, 4)) @ b + 0.5
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)

    def psd_sqrt(m: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(m)
        return (v * np.sqrt(np.clip(w, 0, None))) @ v.T

    r = psd_sqrt(s1)
    cross = np.trace(psd_sqrt(r @ s2 @ r))
    diff = x.mean(axis=0) - y.mean(axis=0)
    expected = diff @ diff + np.trace(s1) + np.trace(s2) - 2 * cross
    assert frechet_distance(x, y) == pytest.approx(expected, rel=1e-5)


def test_frechet_identical_gaussians_is_near_zero() -> None:
    rng = np.random.default_rng(5)
    cov = np.array([[1.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 0.5]])
    x = rng.multivariate_normal(np.ones(3), cov, size=20_000)
    y = rng.multivariate_normal(np.ones(3), cov, size=20_000)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-5)
    assert frechet_distance(x, y) < 0.01
    # Singular covariance (fewer samples than dimensions) stays finite thanks to the epsilon.
    small = rng.normal(size=(5, 20))
    assert np.isfinite(frechet_distance(small, small + 1.0))


def test_drift_test_result() -> None:
    rng = np.random.default_rng(6)
    ref = rng.normal(size=(120, 4))
    new_same = rng.normal(size=(90, 4))
    new_moved = rng.normal(size=(90, 4)) * 2.0 + 0.5
    same = drift_test(ref, new_same, seed=1)
    moved = drift_test(ref, new_moved, seed=1)
    assert isinstance(moved, DriftResult)
    assert (moved.n_reference, moved.n_new) == (120, 90)
    assert moved.drifted and "Drift detected" in moved.verdict
    assert not same.drifted and "No evidence" in same.verdict
    assert moved.frechet > same.frechet and moved.mmd2 > same.mmd2
    assert (moved.mmd2, moved.p_value) == mmd_rbf(ref, new_moved, seed=1)
    # Frechet distance of Gaussians with covariances I and 4I, mean shift 0.5 per axis, in 4-D:
    # 4 * 0.5^2 + 4 * (1 - 2)^2 = 5; the samples are finite, so allow sampling error.
    assert moved.frechet == pytest.approx(frechet_distance(ref, new_moved))
    assert moved.frechet == pytest.approx(5.0, rel=0.35)
    with pytest.raises(dataclasses.FrozenInstanceError):
        moved.drifted = False  # type: ignore[misc]


def test_bad_inputs_raise() -> None:
    rng = np.random.default_rng(7)
    with pytest.raises(ValueError, match="widths"):
        mmd_rbf(rng.normal(size=(10, 3)), rng.normal(size=(10, 4)))
    bad = rng.normal(size=(10, 3))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        frechet_distance(bad, rng.normal(size=(10, 3)))
