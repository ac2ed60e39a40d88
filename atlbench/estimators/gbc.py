"""GBC (Pandy et al., CVPR 2022): Gaussian Bhattacharyya coefficient between target classes.

As in the paper, the features are first reduced by PCA (default 64 components, fewer when D or
N - 1 is smaller); each class is then a diagonal Gaussian ``N(mu_c, diag(var_c))`` and

    GBC = -sum_{i != j} BC(c_i, c_j),   BC = exp(-D_B),
    D_B = 1/8 sum_d (mu_i - mu_j)_d^2 / v_d + 1/2 sum_d log(v_d / sqrt(var_i,d var_j,d)),
    v = (var_i + var_j) / 2,

so less class overlap scores higher (the maximum is 0). The log-determinants are sums of logs of
variances, never determinants (which under/overflow in hundreds of dimensions). Variances get a
floor of ``var_floor`` times the coordinate's overall variance, so a single-sample class is well
defined and rescaling a coordinate changes nothing.

Without the reduction GBC saturates on high-dimensional features: every dimension adds the
sampling noise of the class means and variances to D_B (about D / (2 n_c) in total), so all BCs
vanish and every candidate scores ~0. :func:`gbc_details` flags that regime.
"""

from __future__ import annotations

import torch

from atlbench.estimators._linalg import F64, centred_space, principal_coordinates
from atlbench.estimators._validate import ArrayLike, features_and_labels, input_dtype, one_hot
from atlbench.registry import register_estimator


def gbc_details(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    n_components: int | None = 64,
    var_floor: float = 1e-6,
) -> tuple[float, bool]:
    """GBC score and whether it is *saturated*: so close to 0 that round-off orders candidates.

    Threshold: ``-GBC < C (C - 1) eps`` with eps the machine epsilon of the features' precision
    (float32: 1.2e-7, float64: 2.2e-16). D_B is known to relative precision eps, so each
    ``exp(-D_B)`` carries an absolute error up to ``eps * max_x x e^-x = eps / e``; a total below
    ``C (C - 1) eps`` is within the round-off of its C (C - 1) terms.
    ``n_components=None`` skips the PCA (the unreduced GBC).
    """
    dtype = input_dtype(features)
    f, y, c = features_and_labels(features, labels, dtype=dtype)
    if n_components is None:
        x = f.to(F64)
        x = x - x.mean(0)
    else:
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        x, _ = principal_coordinates(centred_space(f, y, c), min(n_components, f.shape[0] - 1))
    score = _gbc(x, y, c, var_floor)
    return score, -score < c * (c - 1) * torch.finfo(dtype).eps


@register_estimator("gbc", input="features")
def gbc(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    n_components: int | None = 64,
    var_floor: float = 1e-6,
) -> float:
    """GBC score (<= 0, higher is better) on the leading ``n_components`` PCs (None: all dims)."""
    return gbc_details(features, labels, n_components=n_components, var_floor=var_floor)[0]


def _gbc(f: torch.Tensor, y: torch.Tensor, c: int, var_floor: float) -> float:
    total = f.var(0, unbiased=False)
    keep = total > 0
    if not bool(keep.any()):
        raise ValueError("features are constant; GBC is undefined")
    f, total = f[:, keep], total[keep]
    e = one_hot(y, c)
    counts = e.sum(0)[:, None]
    mean = e.T @ f / counts  # C x D
    var = (e.T @ f**2) / counts - mean**2
    var = var.clamp_min(0) + var_floor * total
    logvar = var.log()
    score = torch.zeros((), dtype=torch.float64, device=f.device)
    rows = max(1, int(2**23 // (c * f.shape[1])))  # bound the C x chunk x D temporaries
    for start in range(0, c, rows):
        sl = slice(start, start + rows)
        pooled = 0.5 * (var[sl, None, :] + var[None, :, :])  # chunk x C x D
        dist = 0.125 * ((mean[sl, None, :] - mean[None, :, :]) ** 2 / pooled).sum(-1) + 0.5 * (
            pooled.log() - 0.5 * (logvar[sl, None, :] + logvar[None, :, :])
        ).sum(-1)
        bc = torch.exp(-dist)
        idx = torch.arange(start, min(start + rows, c), device=f.device)
        bc[idx - start, idx] = 0.0  # i != j
        score = score - bc.sum()
    return float(score)
