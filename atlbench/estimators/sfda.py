"""SFDA (Shao et al., ECCV 2022): "Not All Models Are Equal: Predicting Model Transferability in a
Self-challenging Fisher Space".

1. Regularised Fisher discriminant analysis. With the pooled within-class covariance
   ``S_w = sum_c (n_c / N) cov_c`` (biased covariances) and the paper's adaptive shrinkage
   ``lambda = max(exp(-a sigma_max(S_w)), 1e-10)``, a = 5, sigma_max the largest eigenvalue,
   ``S_w <- (1 - lambda) S_w + lambda tr(S_w) / D I``. The Fisher space is spanned by the
   generalised eigenvectors U of ``(S_b, S_w)``, normalised ``U^T S_w U = I``; the classifier
   there is ``p(c | x) = softmax_c(x^T U U^T mu_c - mu_c^T U U^T mu_c / 2 + log pi_c)``. The
   official code keeps all D directions, so ``U U^T = S_w^-1`` and S_b only orders them: the
   logits take one Cholesky solve with S_w (no generalised eigenproblem).
2. Self-challenging (ConfMix). The posteriors are softened by a second softmax,
   ``q_i = softmax(p(. | x_i))_{y_i}``, and every sample is pulled towards the mean of the *other*
   classes' means, ``x_i <- q_i x_i + (1 - q_i) mean_{c != y_i} mu_c``: confidently classified
   samples barely move, hard ones move most, and models that still separate them rank higher.
3. A second Fisher classifier is fitted on the mixed features with the same lambda and scores
   the true classes. Two scores are offered, as the paper and its official code differ:

   - ``sfda``: the mean log-probability ``(1/N) sum_i log p(y_i | x~_i)``, the paper's formula
     (computed with a log-softmax, so it has no instability);
   - ``sfda_prob``: the mean probability ``(1/N) sum_i p(y_i | x~_i)``, the official code's score
     (it drops the log "in case of instability"), which the released evaluation reports and
     PED's default pairing uses. It lies in (0, 1] and is at least ``exp(sfda)`` (Jensen): in the
     log mean a few hard samples with tiny p weigh far more, so the two can rank models apart.

Cost: two Gram matrices (the second of the ConfMix-weighted centred features) and two D x D
Cholesky factorizations; when N <= D everything runs in the N-dimensional span of the samples.
"""

from __future__ import annotations

import math

import torch

from atlbench.estimators._linalg import (
    F64,
    Centred,
    GramSum,
    centred_space,
    class_stats,
    largest_eigenvalue,
    lda_logits,
    noise_floor,
    project,
    psd_solve,
    shrink,
    within_scatter,
)
from atlbench.estimators._validate import ArrayLike, features_and_labels, input_dtype
from atlbench.registry import register_estimator


def adaptive_shrinkage(sw: torch.Tensor, a: float = 5.0) -> float:
    """SFDA's regularisation strength ``max(exp(-a sigma_max(S_w)), 1e-10)``.

    sigma_max >= max_d (S_w)_dd, so when that bound already puts lambda at its floor the
    eigenvalue is not needed (the common case: features of unit-order variance)."""
    if float(sw.diagonal().max()) * a >= _LOG_FLOOR:
        return _FLOOR
    return max(math.exp(-a * largest_eigenvalue(sw)), _FLOOR)


_FLOOR = 1e-10
_LOG_FLOOR = -math.log(_FLOOR)


def fisher_classifier(
    cs: Centred, y: torch.Tensor, c: int, dtype: torch.dtype, shrinkage: float | None = None
) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """``W = S_w^-1 [mu_1 .. mu_C]`` (r x C) of the regularised Fisher classifier, its lambda, the
    class counts and centred class means. ``dtype``: the precision the features were accumulated
    in (sets the round-off floor of the solve)."""
    n = cs.n
    counts, means = class_stats(cs, y, c)
    sw = within_scatter(cs.scatter, n, counts, means)
    lam = adaptive_shrinkage(sw) if shrinkage is None else shrinkage
    floor = noise_floor(float(torch.trace(sw)), sw.shape[0], n, cs.dim, dtype)
    return psd_solve(shrink(sw, lam, cs.dim), means.T, floor), lam, counts, means


def fisher_posteriors(
    cs: Centred, y: torch.Tensor, c: int, dtype: torch.dtype, shrinkage: float | None = None
) -> tuple[torch.Tensor, float, torch.Tensor, torch.Tensor]:
    """Posteriors (N x C) of the regularised Fisher classifier, lambda, counts, class means."""
    w, lam, counts, means = fisher_classifier(cs, y, c, dtype, shrinkage)
    p = torch.softmax(lda_logits(project(cs, w), w, means, counts / cs.n), dim=1)
    return p, lam, counts, means


@register_estimator("sfda", input="features")
def sfda(features: ArrayLike, labels: ArrayLike, *, shrinkage: float | None = None) -> float:
    """SFDA, the paper's score: mean log p(true class) after ConfMix (Shao et al. 2022).

    Higher is better. :func:`sfda_prob` is the official code's mean-probability score.
    """
    return float(sfda_log_probs(features, labels, shrinkage=shrinkage).mean())


@register_estimator("sfda_prob", input="features")
def sfda_prob(features: ArrayLike, labels: ArrayLike, *, shrinkage: float | None = None) -> float:
    """SFDA, the official code's score: mean p(true class) after ConfMix (Shao et al. 2022).

    In (0, 1], higher is better. :func:`sfda` is the paper's mean log-probability.
    """
    return float(sfda_log_probs(features, labels, shrinkage=shrinkage).exp().mean())


def sfda_log_probs(
    features: ArrayLike, labels: ArrayLike, *, shrinkage: float | None = None
) -> torch.Tensor:
    """Per-sample ``log p(y_i | x~_i)`` (N,, float64) of SFDA's second Fisher classifier on the
    ConfMix features: both scores are means of it (log or probability), so it is computed once.
    ``shrinkage`` fixes lambda (None: the paper's adaptive value)."""
    f, y, c = features_and_labels(features, labels, dtype=input_dtype(features))
    if shrinkage is not None and not 0.0 <= shrinkage <= 1.0:
        raise ValueError(f"shrinkage must be in [0, 1], got {shrinkage}")
    cs = centred_space(f, y, c)
    n = cs.n
    w, lam, counts, means = fisher_classifier(cs, y, c, f.dtype, shrinkage)
    outer = (means.sum(0) - means) / (c - 1)  # mean of the other classes' means
    q, means2, sw2 = _confmix(cs, y, c, w, means, counts, outer)
    floor2 = noise_floor(float(torch.trace(sw2)), sw2.shape[0], n, cs.dim, f.dtype)
    w2 = psd_solve(shrink(sw2, lam, cs.dim), means2.T, floor2)
    xw = q[:, None] * project(cs, w2) + (1 - q)[:, None] * (outer @ w2)[y]
    logp = torch.log_softmax(lda_logits(xw, w2, means2, counts / n), dim=1)
    return logp.gather(1, y[:, None])[:, 0]


def _confmix(
    cs: Centred,
    y: torch.Tensor,
    c: int,
    w: torch.Tensor,
    means: torch.Tensor,
    counts: torch.Tensor,
    outer: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One pass over the samples: stage-1 posteriors, softened confidences q and the statistics of
    the mixed samples ``x~_i = q_i x_i + (1 - q_i) o_{y_i}`` (never formed).

    With ``x~_i - mean~_c = q_i (x_i - o_c) - a_c``, ``a_c = mean_c q (x - o_c)``:
    ``N S_w~ = sum_i q_i^2 (x_i - o_c)(x_i - o_c)^T - N sum_c pi_c a_c a_c^T``, whose first term is
    the Gram matrix of ``q x`` (centred x) plus class-wise rank-one corrections.
    Returns (q, class means of x~, S_w~)."""
    n = cs.n
    r = cs.x.shape[1]
    bias = -0.5 * (means * w.T).sum(1) + torch.log(counts / n)
    wd = w.to(cs.x.dtype)
    acc = GramSum()
    # Class sums accumulate in the coordinates' dtype: float64 copies of the blocks would cost more
    # (page faults) than the sums themselves.
    s1 = torch.zeros(c, r, dtype=cs.x.dtype, device=w.device)  # sum_i q_i x_i
    s2 = torch.zeros_like(s1)  # sum_i q_i^2 x_i
    q = torch.empty(n, dtype=F64, device=w.device)
    for rows, xb in cs.blocks(centre_fully=True):
        p = torch.softmax((xb @ wd).to(F64) + bias, dim=1)
        q[rows] = torch.softmax(p, dim=1).gather(1, y[rows, None])[:, 0]  # softened confidence
        qb = q[rows, None].to(xb.dtype)
        xq = xb.mul_(qb)
        acc.add(xq)
        s1.index_add_(0, y[rows], xq)
        s2.index_add_(0, y[rows], xq.mul_(qb))
    s1, s2 = s1.to(F64), s2.to(F64)
    q1 = torch.bincount(y, weights=q, minlength=c)
    q2 = torch.bincount(y, weights=q**2, minlength=c)
    means2 = (s1 + (counts - q1)[:, None] * outer) / counts[:, None]
    a = (s1 - q1[:, None] * outer) / counts[:, None]
    cross = s2.T @ outer
    weighted = acc.result() - cross - cross.T + (outer.T * q2) @ outer
    sw2 = weighted / n - (a.T * (counts / n)) @ a
    return q, means2, sw2
