"""NCTI (Wang et al., ICCV 2023): "How Far Pre-trained Models Are from Neural Collapse on the Target
Dataset Informs their Transferability".

A fine-tuned network ends in neural collapse; NCTI measures how close the pre-trained features
already are, with three proxies computed after PCA to 64 dimensions (the official pipeline) and a
linear discriminant analysis (LDA) there. With ``lambda = max(exp(-sum of the 32 largest PCA
variances), 1e-10)``, ``S_w`` the pooled within-class covariance and ``S_t`` the total covariance
(both biased, shrunk ``(1 - lambda) S + lambda tr(S) / k I``):

* ``seli`` (simplex ETF / simplex-encoded-label-interpolation geometry): the nuclear norm
  ``||H||_*`` of the centred features projected on the ``min(C - 1, k)`` Fisher directions
  (generalised eigenvectors of ``(S_t - S_w, S_w)``, ``U^T S_w U = I``); larger when the classes
  spread over more, equally strong directions;
* ``ncc`` (nearest-centre classifier): the mean LDA posterior of the true class,
  ``(1/N) sum_i p(y_i | x_i)``, ``p(c | x) = softmax_c(x^T S_w^-1 mu_c - mu_c^T S_w^-1 mu_c / 2
  + log pi_c)``, i.e. a soft nearest-class-centre rule in the whitened space;
* ``vc`` (within-class variability collapse): ``log sum_c ||P_c||_*``, P_c the n_c x C matrix of
  the posteriors of class c's samples: a collapsed class has identical rows (rank 1) and the
  smallest nuclear norm, so lower is better.

The paper min-max normalises each term over the candidate models, ``NCTI = S_seli + S_ncc - S_vc``
(:func:`ncti`), so **the score depends on which candidates are compared**; :func:`ncti_terms`
returns the raw terms of one candidate.

Like the official code, when lambda hits its floor 1e-10 the LDA is the unshrunk one with the
unbiased pooled covariance (sklearn's SVD solver, within-class scatter / (N - C)); constant
factors of that kind cancel in the normalisation except inside the posteriors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from atlbench.estimators._linalg import (
    F64,
    centred_space,
    lda_logits,
    noise_floor,
    principal_coordinates,
    shrink,
    within_scatter,
)
from atlbench.estimators._setlevel import candidate_terms, min_max
from atlbench.estimators._validate import ArrayLike, features_and_labels, input_dtype, one_hot
from atlbench.registry import register_estimator

_FLOOR = 1e-10
# Relative eigenvalue cut for S_w: sklearn's SVD solver drops singular values below 1e-4.
_RANK_TOL = 1e-8


def ncti_terms(
    features: ArrayLike, labels: ArrayLike, *, n_components: int = 64
) -> dict[str, float]:
    """The raw NCTI terms of one candidate: ``seli`` and ``ncc`` (higher is better), ``vc``
    (lower is better)."""
    if n_components < 1:
        raise ValueError(f"n_components must be >= 1, got {n_components}")
    f, y, c = features_and_labels(features, labels, dtype=input_dtype(features))
    n = f.shape[0]
    x, lam = principal_coordinates(centred_space(f, y, c), min(n_components, n - 1))
    k = x.shape[1]
    shrinkage = max(math.exp(-float((lam[:32] / (n - 1)).sum())), _FLOOR)

    e = one_hot(y, c)
    counts = e.sum(0)
    means = (e.T @ x) / counts[:, None]  # x is centred
    priors = counts / n
    st = x.T @ x / n
    sw = within_scatter(x.T @ x, n, counts, means)
    if shrinkage > _FLOOR:
        sw_s, st_s = shrink(sw, shrinkage, k), shrink(st, shrinkage, k)
    else:
        sw_s, st_s = sw * (n / max(n - c, 1)), st
    floor = noise_floor(float(torch.trace(st)), k, n, f.shape[1], f.dtype)

    # Whitening basis B = Q Omega^-1/2 of S_w (B^T S_w B = I). Like sklearn's SVD solver, within-
    # class directions at round-off level are dropped rather than amplified (N - C < k).
    omega, vecs = torch.linalg.eigh(sw_s)
    keep = omega > max(floor, float(omega.max()) * _RANK_TOL)
    white = vecs[:, keep] / omega[keep].sqrt()
    # Fisher directions: generalised eigenvectors of (S_t - S_w, S_w), i.e. eigenvectors of
    # B^T S_b B mapped back by B.
    sb = white.T @ (st_s - sw_s) @ white
    _, u = torch.linalg.eigh(0.5 * (sb + sb.T))
    q = min(c - 1, u.shape[1])
    h = x @ (white @ u[:, -q:])
    seli = float(torch.linalg.eigvalsh(h.T @ h).clamp_min(0).sqrt().sum())

    w = white @ (white.T @ means.T)  # S_w^-1 mu_c on the kept directions
    p = torch.softmax(lda_logits(x @ w, w, means, priors), dim=1)
    ncc = float(p.gather(1, y[:, None]).mean())
    vc = math.log(sum(_nuclear_norm(p[y == j]) for j in range(c)))
    return {"seli": seli, "ncc": ncc, "vc": vc}


@register_estimator("ncti", input="features", set_level=True)
def ncti(
    features_list: Sequence[ArrayLike], labels: ArrayLike, *, n_components: int = 64
) -> np.ndarray:
    """NCTI scores, one per candidate: ``S_seli + S_ncc - S_vc``, min-max over the set."""
    terms = candidate_terms(features_list, labels, ncti_terms, n_components=n_components)
    return (
        min_max([t["seli"] for t in terms])
        + min_max([t["ncc"] for t in terms])
        - min_max([t["vc"] for t in terms])
    )


def _nuclear_norm(m: torch.Tensor) -> float:
    """Sum of singular values, from the eigenvalues of the smaller Gram matrix."""
    g = m.T @ m if m.shape[0] >= m.shape[1] else m @ m.T
    return float(torch.linalg.eigvalsh(g.to(F64)).clamp_min(0).sqrt().sum())
