"""Distribution shift between two feature sets: RBF-kernel MMD (permutation test), Frechet.

Used to ask whether a target (or newly arrived data) looks like the data a model was tuned on.
Both functions take ``(N, D)`` arrays (numpy, or anything ``np.asarray`` accepts such as CPU torch
tensors); a 1-D input is treated as ``(N, 1)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import linalg

DEFAULT_MAX_SAMPLES = 1500


def _as_2d(a: object, name: str) -> np.ndarray:
    x = np.asarray(a, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 1-D or 2-D array, got shape {x.shape}")
    if x.shape[0] < 2:
        raise ValueError(f"{name} needs at least 2 samples, got {x.shape[0]}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains NaN or inf")
    return x


def _subsample(x: np.ndarray, max_samples: int | None, rng: np.random.Generator) -> np.ndarray:
    """Uniform subsample without replacement: the N x N kernel is what limits memory, not D."""
    if max_samples is None or x.shape[0] <= max_samples:
        return x
    return x[np.sort(rng.choice(x.shape[0], size=max_samples, replace=False))]


def _sq_dists(z: np.ndarray) -> np.ndarray:
    """Pairwise squared Euclidean distances, clipped at 0 against round-off."""
    sq = np.einsum("ij,ij->i", z, z)
    d: np.ndarray = sq[:, None] + sq[None, :] - 2.0 * (z @ z.T)
    np.maximum(d, 0.0, out=d)
    np.fill_diagonal(d, 0.0)
    return d


def _mmd2_from_sums(
    kxx: np.ndarray, kyy: np.ndarray, kxy: np.ndarray, m: int, n: int
) -> np.ndarray:
    """Unbiased MMD^2 from block sums of an RBF Gram matrix (its diagonal is exactly 1)."""
    return (kxx - m) / (m * (m - 1)) + (kyy - n) / (n * (n - 1)) - 2.0 * kxy / (m * n)


def median_bandwidth2(z: np.ndarray) -> float:
    """The median heuristic: the median squared pairwise distance of ``z`` (positive ones if
    the median is 0)."""
    return _median_offdiag(_sq_dists(np.asarray(z, dtype=np.float64)))


def _median_offdiag(k: np.ndarray) -> float:
    off = k[np.triu_indices(len(k), k=1)]
    value = float(np.median(off)) if off.size else 1.0
    if value <= 0:
        positive = off[off > 0]
        value = float(np.median(positive)) if positive.size else 1.0
    return value


def mmd_rbf(
    x: object,
    y: object,
    n_permutations: int = 200,
    seed: int = 0,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
    bandwidth2: float | None = None,
) -> tuple[float, float]:
    """Unbiased squared MMD with an RBF kernel and its permutation p-value: ``(mmd2, p_value)``.

    The kernel is ``exp(-d^2 / (2 s^2))`` with ``s^2`` the median squared pairwise distance of the
    pooled sample (median heuristic), so no bandwidth has to be tuned; pass ``bandwidth2`` to
    fix ``s^2`` instead (distances of several samples to one reference then share one kernel).
    Each side is first subsampled (seeded by ``seed``) to at most ``max_samples`` rows, which
    bounds the pooled Gram matrix at ``(2 * max_samples)^2`` floats (36 MB at the default). The
    p-value is ``(1 + #{permuted >= observed}) / (1 + n_permutations)``, never exactly 0; NaN when
    ``n_permutations == 0``. Permutations are evaluated together as matrix products.
    """
    rng = np.random.default_rng(seed)
    xs = _subsample(_as_2d(x, "x"), max_samples, rng)
    ys = _subsample(_as_2d(y, "y"), max_samples, rng)
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(f"x and y have different widths: {xs.shape[1]} vs {ys.shape[1]}")
    m, n = xs.shape[0], ys.shape[0]
    z = np.concatenate([xs, ys])
    k = _sq_dists(z)
    if bandwidth2 is None:
        bandwidth2 = _median_offdiag(k)
    np.multiply(k, -1.0 / (2.0 * bandwidth2), out=k)
    np.exp(k, out=k)

    kxx = k[:m, :m].sum()
    kyy = k[m:, m:].sum()
    kxy = k[:m, m:].sum()
    observed = float(_mmd2_from_sums(kxx, kyy, kxy, m, n))
    if n_permutations <= 0:
        return observed, float("nan")

    exceed = 0
    total = k.sum()
    chunk = 64
    for start in range(0, n_permutations, chunk):
        b = min(chunk, n_permutations - start)
        # Indicator matrix: column j marks which pooled rows play "x" in permutation j.
        ind = np.zeros((m + n, b))
        for j in range(b):
            ind[rng.permutation(m + n)[:m], j] = 1.0
        k_ind = k @ ind
        pxx = np.einsum("ij,ij->j", ind, k_ind)
        rows_x = k_ind.sum(axis=0)  # sum over all pooled rows of K restricted to x columns
        pxy = rows_x - pxx
        pyy = total - pxx - 2.0 * pxy
        stats = _mmd2_from_sums(pxx, pyy, pxy, m, n)
        exceed += int(np.sum(stats >= observed))
    return observed, (1.0 + exceed) / (1.0 + n_permutations)


def frechet_distance(x: object, y: object, eps: float = 1e-6) -> float:
    """Frechet distance between Gaussians fitted to two samples (the FID formula).

    ``||mu_x - mu_y||^2 + Tr(S_x + S_y - 2 (S_x S_y)^{1/2})`` with sample covariances (ddof=1).
    ``eps`` is added to both covariance diagonals so the matrix square root stays well defined when
    a covariance is singular (fewer samples than dimensions, constant features); the imaginary part
    that ``sqrtm`` returns from round-off is dropped. Clipped at 0.
    """
    xs, ys = _as_2d(x, "x"), _as_2d(y, "y")
    if xs.shape[1] != ys.shape[1]:
        raise ValueError(f"x and y have different widths: {xs.shape[1]} vs {ys.shape[1]}")
    d = xs.shape[1]
    mu_x, mu_y = xs.mean(axis=0), ys.mean(axis=0)
    offset = eps * np.eye(d)
    s_x = np.atleast_2d(np.cov(xs, rowvar=False)) + offset
    s_y = np.atleast_2d(np.cov(ys, rowvar=False)) + offset
    covmean = linalg.sqrtm(s_x @ s_y)
    covmean = np.real(covmean)
    diff = mu_x - mu_y
    value = float(diff @ diff + np.trace(s_x) + np.trace(s_y) - 2.0 * np.trace(covmean))
    return max(value, 0.0)


@dataclass(frozen=True)
class DriftResult:
    """Outcome of ``drift_test``; ``drifted`` is the MMD permutation test at ``alpha``."""

    mmd2: float
    p_value: float
    frechet: float
    n_reference: int
    n_new: int
    drifted: bool
    verdict: str


def drift_test(
    reference: object,
    new: object,
    n_permutations: int = 200,
    seed: int = 0,
    alpha: float = 0.05,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
) -> DriftResult:
    """Has the feature distribution moved? MMD permutation test plus Frechet distance as a size.

    The decision uses only the MMD test (it is a proper two-sample test with an exact-level
    p-value); the Frechet distance is reported as an interpretable magnitude. ``n_reference`` and
    ``n_new`` are the sizes given, before any subsampling.
    """
    ref, cur = _as_2d(reference, "reference"), _as_2d(new, "new")
    mmd2, p = mmd_rbf(ref, cur, n_permutations=n_permutations, seed=seed, max_samples=max_samples)
    fd = frechet_distance(ref, cur)
    drifted = bool(np.isfinite(p) and p < alpha)
    if drifted:
        verdict = (
            f"Drift detected: the new data differ from the reference (MMD^2 = {mmd2:.4g}, "
            f"permutation p = {p:.3g} < {alpha:g}; Frechet distance {fd:.4g})."
        )
    else:
        verdict = (
            f"No evidence of drift at alpha = {alpha:g} (MMD^2 = {mmd2:.4g}, permutation "
            f"p = {p:.3g}; Frechet distance {fd:.4g}); this does not prove the distributions match."
        )
    return DriftResult(
        mmd2=float(mmd2),
        p_value=float(p),
        frechet=float(fd),
        n_reference=int(ref.shape[0]),
        n_new=int(cur.shape[0]),
        drifted=drifted,
        verdict=verdict,
    )
