"""ETran (Gholami et al., ICCV 2023): "ETran: Energy-Based Transferability Estimation".

Three terms per candidate (:func:`etran_terms`):

* energy (how in-distribution the target data look to the model): the free energy of a sample
  with the features read as logits is ``-logsumexp_j f_j(x)``; the score is the mean of
  ``logsumexp_j f_j(x)`` over the ``energy_fraction`` of samples with the lowest values (0.5 %,
  as in the released code), higher = lower energy = more in-distribution;
* classification: the mean posterior of the true class under linear discriminant analysis,
  ``(1/N) sum_i p(y_i | x_i)``, with LDA's pooled within-class covariance shrunk as in SFDA
  (``lambda = max(exp(-5 sigma_max(S_w)), 1e-10)``);
* regression (SVD-based): the least-squares fit of the label indicators by the features through
  the pseudo-inverse ``x^ = V S^-1 U^T Y``, scored ``-mean((F x^ - Y)^2)`` over the N x C entries.

The candidate score (:func:`etran`) combines the terms after min-max normalising each over the
candidate set, so **it depends on which candidates are compared**:
``T_m = sum_t w_t (S_t,m - min_m S_t) / (max_m S_t - min_m S_t)``. The default weights
(energy 0.15, classification 0.85, regression 0) are those of the authors' classification
release; the paper adds the regression score for box regression in detection, pass ``weights``
to include it.

Deviations, on purpose: the released LDA code takes ``eigh(inv(S_w) S_b)``, an eigensolver for
symmetric matrices applied to a non-symmetric one, whose orthogonal eigenvectors turn the
classifier into a Euclidean nearest-mean one; here it is the LDA the paper describes
(``S_w^-1``). The regression fits an intercept (centred features and indicators); without it the
fit depends on the features' offset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from atlbench.estimators._linalg import (
    F64,
    centred_space,
    noise_floor,
    psd_solve,
)
from atlbench.estimators._setlevel import candidate_terms, min_max
from atlbench.estimators._validate import ArrayLike, features_and_labels, input_dtype
from atlbench.estimators.sfda import fisher_posteriors
from atlbench.registry import register_estimator

TERMS = ("energy", "classification", "regression")


def etran_terms(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    energy_fraction: float = 0.005,
    shrinkage: float | None = None,
) -> dict[str, float]:
    """The raw ETran terms of one candidate: ``energy``, ``classification``, ``regression``."""
    if not 0.0 < energy_fraction <= 1.0:
        raise ValueError(f"energy_fraction must be in (0, 1], got {energy_fraction}")
    f, y, c = features_and_labels(features, labels, dtype=input_dtype(features))
    n = f.shape[0]
    lse = torch.logsumexp(f, dim=1).to(F64)
    k = max(1, int(energy_fraction * n))
    energy = float(torch.topk(lse, k, largest=False).values.mean())

    cs = centred_space(f, y, c)
    p, _, counts, means = fisher_posteriors(cs, y, c, f.dtype, shrinkage)
    classification = float(p.gather(1, y[:, None]).mean())

    # |(I - P_F) Y_c|^2 = |Y_c|^2 - tr(B^T S^+ B), B = F_c^T Y_c = n_c (mu_c - mean) per column.
    b = (means * counts[:, None]).T
    tfloor = noise_floor(float(torch.trace(cs.scatter)), b.shape[0], n, f.shape[1], f.dtype)
    explained = float((b * psd_solve(cs.scatter, b, tfloor)).sum())
    total = float((counts - counts**2 / n).sum())
    regression = -max(total - explained, 0.0) / (n * c)
    return {"energy": energy, "classification": classification, "regression": regression}


@register_estimator("etran", input="features", set_level=True)
def etran(
    features_list: Sequence[ArrayLike],
    labels: ArrayLike,
    *,
    weights: tuple[float, float, float] = (0.15, 0.85, 0.0),
    energy_fraction: float = 0.005,
) -> np.ndarray:
    """ETran scores, one per candidate: weighted sum of the min-max normalised terms (set-level)."""
    if len(weights) != len(TERMS):
        raise ValueError(f"weights needs one value per term {TERMS}, got {weights}")
    terms = candidate_terms(features_list, labels, etran_terms, energy_fraction=energy_fraction)
    score = np.zeros(len(terms))
    for wt, name in zip(weights, TERMS, strict=True):
        score += wt * min_max([t[name] for t in terms])
    return score
