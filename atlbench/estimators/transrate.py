"""TransRate (Huang et al., ICML 2022): coding-rate gain of the features from knowing the labels.

``TrR = R(Z, eps) - R_c(Z, eps | Y)`` on centred features, with (paper's definitions)
``R(Z, eps) = 1/2 logdet(I_d + d / (n eps^2) Z^T Z)`` and
``R_c = sum_c (n_c / n) R(Z_c, eps)``. Log-determinants are sums of ``log1p`` over eigenvalues
of the smaller Gram matrix, never determinants.
TransRate depends on the feature scale relative to eps.
The widely copied reference code instead uses ``1 / (n eps)`` and an unweighted class mean; its
numbers are not comparable with these.
"""

from __future__ import annotations

import torch

from atlbench.estimators._validate import ArrayLike, features_and_labels
from atlbench.registry import register_estimator


def coding_rate(z: torch.Tensor, eps: float) -> torch.Tensor:
    """``1/2 logdet(I + d/(n eps^2) Z^T Z)`` for Z (n x d), via the smaller Gram matrix."""
    n, d = z.shape
    gram = z.T @ z if d <= n else z @ z.T
    lam = torch.linalg.eigvalsh(gram).clamp_min(0)
    return 0.5 * torch.log1p(lam * (d / (n * eps**2))).sum()


@register_estimator("transrate", input="features")
def transrate(features: ArrayLike, labels: ArrayLike, *, eps: float = 1e-2) -> float:
    """TransRate ``R(Z) - sum_c n_c/n R(Z_c)`` on centred features; higher is better."""
    if not eps > 0:
        raise ValueError(f"eps must be positive, got {eps}")
    f, y, c = features_and_labels(features, labels)
    z = f - f.mean(0)
    n = z.shape[0]
    rate = coding_rate(z, eps)
    counts = torch.bincount(y, minlength=c).to(torch.float64)
    rate_c = sum(counts[k] / n * coding_rate(z[y == k], eps) for k in range(c))
    return float(rate - rate_c)
