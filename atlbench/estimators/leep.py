"""Estimators from source predictions: LEEP, NCE, and NLEEP (LEEP on a Gaussian mixture).

LEEP (Nguyen et al., ICML 2020): the mean log-likelihood of the "expected empirical predictor"
``p(y | x) = sum_z p(y | z) theta_z(x)`` where ``p(y | z)`` comes from the empirical joint of target
labels and source probabilities. NCE (Tran et al., ICCV 2019): ``-H(Y | Z)`` with Z the source
model's hard predictions. Source classes no target sample lands in carry no mass and are
skipped, so hard one-hot probabilities never produce ``log(0)``.
"""

from __future__ import annotations

import numpy as np
import torch

from atlbench.estimators._validate import ArrayLike, features_and_labels, one_hot, probs_and_labels
from atlbench.registry import register_estimator


def _leep(p: torch.Tensor, y: torch.Tensor, c: int) -> float:
    n = p.shape[0]
    joint = one_hot(y, c).T @ p / n  # C x Z
    pz = joint.sum(0)
    cond = torch.where(pz > 0, joint / pz.clamp_min(torch.finfo(torch.float64).tiny), 0.0)
    # sum_z cond[y_i, z] p_iz >= p_iz^2 / (n p(z)) > 0 for any z with p_iz > 0: no log(0).
    eep = (p * cond[y]).sum(1)
    return float(torch.log(eep.clamp_min(torch.finfo(torch.float64).tiny)).mean())


@register_estimator("leep", input="probs")
def leep(probs: ArrayLike, labels: ArrayLike) -> float:
    """LEEP from source softmax outputs (N x Z) on the target; higher is better (always <= 0)."""
    p, y, c = probs_and_labels(probs, labels)
    return _leep(p, y, c)


@register_estimator("nce", input="probs")
def nce(probs: ArrayLike, labels: ArrayLike) -> float:
    """Negative conditional entropy -H(Y | Z), Z = argmax of the source probabilities (N x Z)."""
    p, y, c = probs_and_labels(probs, labels)
    z = p.argmax(1)
    n, nz = p.shape
    counts = torch.bincount(y * nz + z, minlength=c * nz).reshape(c, nz).to(torch.float64)
    joint = counts / n
    pz = joint.sum(0, keepdim=True).expand_as(joint)
    mask = joint > 0
    return float((joint[mask] * torch.log(joint[mask] / pz[mask])).sum())


@register_estimator("nleep", input="features")
def nleep(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    variance: float = 0.8,
    components_per_class: int = 5,
    covariance_type: str = "diag",
    seed: int = 0,
) -> float:
    """NLEEP (Li et al., CVPR 2021): LEEP with a Gaussian mixture's soft assignments as "source".

    Features are reduced by PCA to ``variance`` of the variance, then a mixture of
    ``components_per_class * C`` Gaussians (capped at N) gives the N x M assignment probabilities.
    ``covariance_type="diag"`` by default: full covariances in a few hundred PCA dimensions cost
    minutes and are ill-conditioned at small N; pass "full" for the paper's setting. Seeded.
    """
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    f, y, c = features_and_labels(features, labels)
    x = f.cpu().numpy()
    if x.shape[1] > 1:
        x = PCA(n_components=variance, svd_solver="full").fit_transform(x)
    m = max(1, min(components_per_class * c, x.shape[0]))
    gmm = GaussianMixture(n_components=m, covariance_type=covariance_type, random_state=seed)
    q = gmm.fit(x).predict_proba(x)
    p = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float64)).to(y.device)
    return _leep(p / p.sum(1, keepdim=True), y, c)
