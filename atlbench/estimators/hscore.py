"""H-score (Bao et al., ICIP 2019) and its Ledoit-Wolf shrinkage variant (Ibrahim et al., 2022).

``H = tr(pinv(cov(f)) cov(E[f | y]))``: the between-class covariance measured in the metric of the
total covariance. It saturates when N <= D: the centred features then span every class-mean
direction, pinv(cov f) whitens that span exactly and H collapses to ``C - 1`` whatever
the features, so it cannot rank sources there. ``shrinkage_hscore`` replaces cov(f) by the
Ledoit-Wolf estimate ``(1 - a) cov f + a mu I`` (``mu = tr(cov f) / D``) and scales the
between-class term by
``1 - a``, which keeps the score informative for N <= D.

Both are computed from the eigendecomposition of the smaller Gram matrix (N x N or D x D).
"""

from __future__ import annotations

import torch

from atlbench.estimators._validate import ArrayLike, features_and_labels, one_hot
from atlbench.registry import register_estimator


def _spectrum(f: torch.Tensor, y: torch.Tensor, c: int):
    """Eigenvalues lam (r,) of cov f and q (r x C): class-mean offsets in cov f's eigenbasis."""
    n, d = f.shape
    fc = f - f.mean(0)
    e = one_hot(y, c)
    counts = e.sum(0)
    means = (e.T @ fc) / counts[:, None]  # C x D, centred class means
    if n >= d:
        lam, v = torch.linalg.eigh(fc.T @ fc / n)
        q = v.T @ means.T
    else:
        g, u = torch.linalg.eigh(fc @ fc.T / n)
        lam = g
        # v_i = fc^T u_i / sqrt(n g_i), so v_i^T m_c = sqrt(n g_i) u_i^T (e_c / n_c).
        q = (n * g.clamp_min(0)).sqrt()[:, None] * (u.T @ (e / counts))
    return lam.clamp_min(0), q, counts / n, fc


@register_estimator("hscore", input="features")
def hscore(features: ArrayLike, labels: ArrayLike) -> float:
    """H-score ``tr(pinv(cov f) cov(E[f|y]))``; saturates at about C - 1 when N <= D."""
    f, y, c = features_and_labels(features, labels)
    lam, q, w, _ = _spectrum(f, y, c)
    eps = torch.finfo(torch.float64).eps
    keep = lam > lam.max() * max(f.shape) * eps
    return float((w * (q[keep] ** 2 / lam[keep, None]).sum(0)).sum())


def ledoit_wolf_shrinkage(fc: torch.Tensor, lam: torch.Tensor) -> float:
    """Ledoit-Wolf shrinkage weight for centred data fc (N x D); lam: eigenvalues of its cov.

    Same estimator as ``sklearn.covariance.ledoit_wolf_shrinkage``, written with
    ``sum_i |x_i|^4`` and the spectrum so no D x D product beyond the Gram matrix is needed.
    """
    n, d = fc.shape
    mu = float(lam.sum()) / d
    frob2 = float((lam**2).sum())  # |S|_F^2 over the non-zero spectrum
    beta = (float((fc**2).sum(1).pow(2).sum()) / n - frob2) / (d * n)
    delta = (frob2 - d * mu**2) / d
    beta = min(beta, delta)
    return 0.0 if beta <= 0 else beta / delta


@register_estimator("shrinkage_hscore", input="features")
def shrinkage_hscore(features: ArrayLike, labels: ArrayLike) -> float:
    """H-score with Ledoit-Wolf shrinkage of cov f (Ibrahim et al. 2022), stable for N <= D."""
    f, y, c = features_and_labels(features, labels)
    lam, q, w, fc = _spectrum(f, y, c)
    a = ledoit_wolf_shrinkage(fc, lam)
    mu = float(lam.sum()) / f.shape[1]
    if mu == 0:
        raise ValueError("features are constant; H-score is undefined")
    # Class offsets have no component outside cov f's range, so only its eigenpairs matter.
    shrunk = (1 - a) * lam + a * mu
    return float((1 - a) * (w * (q**2 / shrunk[:, None]).sum(0)).sum())
