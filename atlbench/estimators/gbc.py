"""GBC (Pandy et al., CVPR 2022): Gaussian Bhattacharyya coefficient between target classes.

Each class is a diagonal Gaussian in feature space (optionally after PCA); ``GBC = -sum_{i != j}
BC(c_i, c_j)`` with ``BC = exp(-D_B)``, so less class overlap scores higher (the maximum is 0).
The log-determinants in D_B are sums of logs of variances, never determinants (which under/overflow
in hundreds of dimensions). Variances get a floor of ``var_floor`` times the feature's overall
variance, so a single-sample class is well defined and per-feature rescaling changes nothing.
"""

from __future__ import annotations

import torch

from atlbench.estimators._validate import ArrayLike, features_and_labels, one_hot


def gbc(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    n_components: int | None = None,
    var_floor: float = 1e-6,
) -> float:
    """GBC score (<= 0, higher is better); ``n_components`` projects on that many PCs first."""
    f, y, c = features_and_labels(features, labels)
    f = f - f.mean(0)
    if n_components is not None:
        if n_components < 1:
            raise ValueError(f"n_components must be >= 1, got {n_components}")
        _, _, vh = torch.linalg.svd(f, full_matrices=False)
        f = f @ vh[:n_components].T
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
