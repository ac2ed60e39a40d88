"""GBC (Pandy et al., CVPR 2022): "Transferability Estimation using Bhattacharyya Class
Separability". Gaussian Bhattacharyya coefficient between target classes.

As in the paper, the features are first reduced by PCA (default 64 components, fewer when D or
N - 1 is smaller); each class c is then a Gaussian ``N(mu_c, Sigma_c)`` and

    GBC = -sum_{i != j} BC(c_i, c_j),   BC = exp(-D_B),
    D_B = 1/8 (mu_i - mu_j)^T S^-1 (mu_i - mu_j) + 1/2 log(det S / sqrt(det S_i det S_j)),
    S = (S_i + S_j) / 2,

so less class overlap scores higher (the maximum is 0). Two covariance models, as in the paper
and its official code (``gaussian_type``), each under its own name:

- ``gbc``: diagonal, ``S_c = diag(var_c)``, so
  ``D_B = 1/8 sum_d (mu_i - mu_j)_d^2 / v_d + 1/2 sum_d log(v_d / sqrt(var_i,d var_j,d))``,
  ``v = (var_i + var_j) / 2``. The name ``gbc`` keeps this meaning so that existing suites and
  stored estimates stay comparable.
- ``gbc_spherical``: spherical, ``S_c = s_c I`` with ``s_c = mean_d var_c,d``, the official
  configuration (the released config sets ``gaussian_type='spherical'`` and 64 PCA components):
  ``D_B = |mu_i - mu_j|^2 / (8 s) + w/2 log(s / sqrt(s_i s_j))``, ``s = (s_i + s_j) / 2``.
  The official code sums the log term over a scalar, so ``w = 1``; the exact D_B of two isotropic
  Gaussians in D dimensions has ``w = D`` (``exact_logdet=True``). With w = 1 the score is
  dominated by the distances between class means; with w = D unequal class spreads count as much
  as they do in the diagonal model.

The log-determinants are sums of logs of variances, never determinants (which under/overflow in
hundreds of dimensions). Variances get a floor of ``var_floor`` times the coordinate's overall
variance, so a single-sample class is well defined and rescaling a coordinate changes nothing
(the official code floors each variance at an absolute 1e-4, which depends on the feature scale;
on PCA features of unit-order variance the two differ only for near-degenerate classes).
Coordinates with no variance at all carry no information and are dropped.

Without the reduction GBC saturates on high-dimensional features: every dimension adds the
sampling noise of the class means and variances to D_B (about D / (2 n_c) in total), so all BCs
vanish and every candidate scores ~0. :func:`gbc_details` flags that regime.
"""

from __future__ import annotations

from typing import Literal

import torch

from atlbench.estimators._linalg import F64, centred_space, principal_coordinates
from atlbench.estimators._validate import ArrayLike, features_and_labels, input_dtype, one_hot
from atlbench.registry import register_estimator

Gaussian = Literal["diagonal", "spherical"]


def gbc_details(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    n_components: int | None = 64,
    var_floor: float = 1e-6,
    gaussian: Gaussian = "diagonal",
    exact_logdet: bool = False,
) -> tuple[float, bool]:
    """GBC score and whether it is *saturated*: so close to 0 that round-off orders candidates.

    Threshold: ``-GBC < C (C - 1) eps`` with eps the machine epsilon of the features' precision
    (float32: 1.2e-7, float64: 2.2e-16). D_B is known to relative precision eps, so each
    ``exp(-D_B)`` carries an absolute error up to ``eps * max_x x e^-x = eps / e``; a total below
    ``C (C - 1) eps`` is within the round-off of its C (C - 1) terms.
    ``n_components=None`` skips the PCA (the unreduced GBC). ``gaussian`` picks the covariance
    model; ``exact_logdet`` (spherical only) weighs the log term by D, as the exact D_B does.
    """
    if gaussian not in ("diagonal", "spherical"):
        raise ValueError(f"gaussian must be 'diagonal' or 'spherical', got {gaussian!r}")
    if exact_logdet and gaussian != "spherical":
        raise ValueError("exact_logdet applies to spherical Gaussians (the diagonal D_B is exact)")
    if var_floor < 0:
        raise ValueError(f"var_floor must be >= 0, got {var_floor}")
    dtype = input_dtype(features)
    f, y, c = features_and_labels(features, labels, dtype=dtype)
    if n_components is None:
        x = f.to(F64)
        x = x - x.mean(0)
    else:
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        x, _ = principal_coordinates(centred_space(f, y, c), min(n_components, f.shape[0] - 1))
    if gaussian == "diagonal":
        score = _gbc_diagonal(x, y, c, var_floor)
    else:
        score = _gbc_spherical(x, y, c, var_floor, exact_logdet)
    return score, -score < c * (c - 1) * torch.finfo(dtype).eps


@register_estimator("gbc", input="features")
def gbc(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    n_components: int | None = 64,
    var_floor: float = 1e-6,
) -> float:
    """GBC with diagonal Gaussians (Pandy et al. 2022); <= 0, higher is better.

    On the leading ``n_components`` PCs (None: all dims). :func:`gbc_spherical` is the official
    configuration.
    """
    return gbc_details(features, labels, n_components=n_components, var_floor=var_floor)[0]


@register_estimator("gbc_spherical", input="features")
def gbc_spherical(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    n_components: int | None = 64,
    var_floor: float = 1e-6,
    exact_logdet: bool = False,
) -> float:
    """GBC with spherical Gaussians (official setup, Pandy et al. 2022); <= 0, higher is better.

    On the leading ``n_components`` PCs (None: all dims), with the official code's log term
    (weight 1); ``exact_logdet=True`` weighs it by D, the exact D_B of isotropic Gaussians.
    """
    return gbc_details(
        features,
        labels,
        n_components=n_components,
        var_floor=var_floor,
        gaussian="spherical",
        exact_logdet=exact_logdet,
    )[0]


def _class_moments(
    f: torch.Tensor, y: torch.Tensor, c: int, var_floor: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Class means (C x D) and floored biased class variances (C x D) of the informative
    coordinates (those with non-zero overall variance)."""
    total = f.var(0, unbiased=False)
    keep = total > 0
    if not bool(keep.any()):
        raise ValueError("features are constant; GBC is undefined")
    f, total = f[:, keep], total[keep]
    e = one_hot(y, c)
    counts = e.sum(0)[:, None]
    mean = e.T @ f / counts
    var = (e.T @ f**2) / counts - mean**2
    return mean, var.clamp_min(0) + var_floor * total


def _gbc_diagonal(f: torch.Tensor, y: torch.Tensor, c: int, var_floor: float) -> float:
    mean, var = _class_moments(f, y, c, var_floor)
    logvar = var.log()
    score = torch.zeros((), dtype=torch.float64, device=f.device)
    rows = max(1, int(2**23 // (c * mean.shape[1])))  # bound the C x chunk x D temporaries
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


def _gbc_spherical(
    f: torch.Tensor, y: torch.Tensor, c: int, var_floor: float, exact_logdet: bool
) -> float:
    mean, var = _class_moments(f, y, c, var_floor)
    s = var.mean(1)  # the spherical variance of each class
    pooled = 0.5 * (s[:, None] + s[None, :])
    sq = torch.cdist(mean, mean, compute_mode="donot_use_mm_for_euclid_dist") ** 2
    weight = mean.shape[1] if exact_logdet else 1
    logs = s.log()
    dist = 0.125 * sq / pooled + 0.5 * weight * (pooled.log() - 0.5 * (logs[:, None] + logs[None]))
    bc = torch.exp(-dist)
    bc.fill_diagonal_(0.0)  # i != j
    return float(-bc.sum())
