"""Leave-one-out k-nearest-neighbour accuracy of the target labels in feature space.

Distances are computed in row chunks so memory stays at ``chunk x N`` (N = 20,000 never builds the
N x N matrix). Each point votes among its k nearest *other* points (excluded by index, so duplicate
points still count as neighbours); a tied vote goes to the tied class holding the nearest neighbour.
"""

from __future__ import annotations

from typing import Literal

import torch

from atlbench.estimators._validate import ArrayLike, features_and_labels
from atlbench.registry import register_estimator


@register_estimator("knn", input="features")
def knn_accuracy(
    features: ArrayLike,
    labels: ArrayLike,
    *,
    k: int = 5,
    metric: Literal["cosine", "euclidean"] = "cosine",
    chunk_size: int | None = None,
) -> float:
    """Fraction of points whose k nearest other points (majority vote) carry their label."""
    # Neighbours need only the ranking of distances: float32 halves the memory traffic of the
    # dominant N x N matmul (scores agree with float64 except for exact float32 ties).
    f, y, c = features_and_labels(features, labels, dtype=torch.float32)
    n = f.shape[0]
    if not 1 <= k <= min(n - 1, 50):
        raise ValueError(f"k must be in [1, min(N - 1, 50)] = [1, {min(n - 1, 50)}], got {k}")
    if metric == "cosine":
        f = f / f.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        offset = torch.zeros(1, n, dtype=f.dtype, device=f.device)  # rank by -<x_i, x_j>
    elif metric == "euclidean":
        # |x_i - x_j|^2 = |x_i|^2 + |x_j|^2 - 2 <x_i, x_j>; the first term is the same for a
        # whole row, so rows rank by |x_j|^2 - 2 <x_i, x_j>: one fused matmul, no extra passes
        offset = (f * f).sum(1)[None, :]
    else:
        raise ValueError(f"metric must be 'cosine' or 'euclidean', got {metric!r}")
    chunk = chunk_size or max(1, min(n, 2**23 // n))  # ~32 MiB of float32 distances per chunk
    # Rank r gets weight 2^-(r+1): sums to < 1, so it only breaks ties, in favour of nearer ranks.
    rank_w = 2.0 ** -torch.arange(1, k + 1, dtype=torch.float64, device=f.device)
    alpha = -1.0 if metric == "cosine" else -2.0
    correct = 0
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        dist = torch.addmm(offset, f[start:stop], f.T, alpha=alpha)
        rows = torch.arange(stop - start, device=f.device)
        dist[rows, rows + start] = float("inf")
        nn = dist.topk(k, dim=1, largest=False).indices  # sorted nearest first
        votes = torch.zeros(stop - start, c, dtype=torch.float64, device=f.device)
        votes.scatter_add_(1, y[nn], 1.0 + rank_w.expand(stop - start, k))
        correct += int((votes.argmax(1) == y[start:stop]).sum())
    return correct / n
