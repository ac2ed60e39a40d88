"""PED (Li et al., ICCV 2023): "Exploring Model Transferability through the Lens of Potential
Energy".

A booster, not an estimator: fine-tuning pushes overlapping classes apart, so PED simulates that
motion on the static features and any estimator then scores the moved features. In standardised
feature space (per-dimension mean and std of a reference set; the paper uses the source model's
ImageNet validation features, the default here is the target features themselves), each class c
is a ball with centre ``mu_c`` and radius ``R_c = sqrt(sum_d var_c,d)``. Two balls closer than
``n_sigma (R_i + R_j)`` repel along ``(mu_i - mu_j) / d_ij`` with the potential-energy force

    F_ij = k max(n_sigma (R_i + R_j) - d_ij, 0),      d_ij = |mu_i - mu_j|,

and in one step of length dt from rest each class moves, with all its samples, by
``sum_j (mu_i - mu_j) / d_ij min(dt^2 F_ij / 2, overlap_ij)``. Steps repeat while the total
displacement ``sum |move|`` stays above ``exit_ratio`` times the first step's, at most
``max_steps`` times (defaults as in the official evaluation: dt = 0.1, n_sigma = 0.6, k = 1,
exit ratio 0.5, 6 steps). Moves are rigid, so the class variances never change and one pass over
the features gives every step; the cost is O(N D + steps C^2 D) plus the estimator's.

Two pairings are registered: ``ped_sfda``, the official default (the released evaluation's
``--type SFDA``, scored by SFDA's official mean probability, :func:`~.sfda.sfda_prob`), and
``ped_logme``. :func:`ped` pairs the booster with any other estimator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from atlbench.estimators._linalg import F64, column_sums, row_blocks
from atlbench.estimators._validate import (
    ArrayLike,
    as_matrix,
    features_and_labels,
    input_dtype,
)
from atlbench.estimators.logme import logme
from atlbench.estimators.sfda import sfda_prob
from atlbench.registry import register_estimator


def ped_features(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    reference: ArrayLike | None = None,
    time_step: float = 0.1,
    n_sigma: float = 0.6,
    force_constant: float = 1.0,
    exit_ratio: float = 0.5,
    max_steps: int = 6,
    std_floor: float = 1e-3,
) -> np.ndarray:
    """The features after PED's simulated fine-tuning motion (N x D, the input's precision).

    ``reference`` (M x D) sets the standardisation (the official code: the source model's
    ImageNet-val features); default: the target features. ``std_floor`` bounds the per-dimension
    std from below (absolute, as in the official code).
    """
    if time_step <= 0 or n_sigma <= 0 or force_constant <= 0 or max_steps < 0:
        raise ValueError("time_step, n_sigma and force_constant must be > 0, max_steps >= 0")
    dtype = input_dtype(features)
    f, y, c = features_and_labels(features, labels, dtype=dtype)
    n, d = f.shape
    shift = column_sums(f) / n  # fc = f - shift is centred up to rounding
    counts = torch.bincount(y, minlength=c).to(F64)
    s1 = torch.zeros(c, d, dtype=dtype, device=f.device)
    s2 = torch.zeros(c, d, dtype=dtype, device=f.device)
    for rows in row_blocks(f):  # class sums of F - shift and of its square, in F's precision
        fc = f[rows] - shift.to(dtype)
        s1.index_add_(0, y[rows], fc)
        s2.index_add_(0, y[rows], fc.mul_(fc))
    s1, s2 = s1.to(F64), s2.to(F64)
    if reference is None:
        mean = s1.sum(0) / n
        std = (s2.sum(0) / n - mean**2).clamp_min(0).sqrt()
        mean = mean + shift
    else:
        ref = as_matrix(reference, "reference", dtype).to(f.device)
        if ref.shape[1] != d:
            raise ValueError(f"reference has {ref.shape[1]} columns but features has {d}")
        mean = column_sums(ref) / ref.shape[0]
        std = ref.to(F64).std(0, unbiased=False)
    std = std.clamp_min(std_floor)
    mu = (s1 / counts[:, None] + shift - mean) / std  # standardised class centres
    var = s2 / counts[:, None] - (s1 / counts[:, None]) ** 2
    radius = (var.clamp_min(0) / std**2).sum(1).sqrt()
    reach = n_sigma * (radius[:, None] + radius[None, :])
    off = ~torch.eye(c, dtype=torch.bool, device=f.device)

    total = torch.zeros_like(mu)
    first = 0.0
    for step in range(max_steps):
        dist = torch.cdist(mu, mu, compute_mode="donot_use_mm_for_euclid_dist")
        overlap = torch.where(off, (reach - dist).clamp_min(0), torch.zeros_like(dist))
        disp = torch.minimum(0.5 * time_step**2 * force_constant * overlap, overlap)
        coef = torch.where(dist > 0, disp / dist.clamp_min(1e-300), torch.zeros_like(dist))
        move = coef.sum(1)[:, None] * mu - coef @ mu  # sum_j (mu_i - mu_j) / d_ij * disp_ij
        change = float(move.abs().sum())
        if step == 0:
            first = change
        if first == 0 or change / first <= exit_ratio:
            break
        mu = mu + move
        total = total + move
    step_rows = (total * std).to(dtype)
    out = torch.empty_like(f)
    for rows in row_blocks(f):
        torch.add(f[rows], step_rows[y[rows]], out=out[rows])
    return out.cpu().numpy()


def ped(
    features: ArrayLike,
    labels: ArrayLike,
    estimator: Callable[[np.ndarray, ArrayLike], float] = logme,
    **kwargs: Any,
) -> float:
    """``estimator`` on the PED-moved features (keyword arguments go to :func:`ped_features`)."""
    return estimator(ped_features(features, labels, **kwargs), labels)


@register_estimator("ped_logme", input="features")
def ped_logme(features: ArrayLike, labels: ArrayLike) -> float:
    """LogME after PED's simulated fine-tuning motion (Li et al. 2023); higher is better."""
    return ped(features, labels, estimator=logme)


@register_estimator("ped_sfda", input="features")
def ped_sfda(
    features: ArrayLike, labels: ArrayLike, *, reference: ArrayLike | None = None
) -> float:
    """SFDA's official mean-probability score after PED's motion (Li et al. 2023, the default).

    The official default pairing; higher is better. ``reference``: see :func:`ped_features`.
    """
    return sfda_prob(ped_features(features, labels, reference=reference), labels)
