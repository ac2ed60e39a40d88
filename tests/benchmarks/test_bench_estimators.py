"""Estimator speed: LogME versus a plain per-class fixed point, transformer-ranker, and all
registered estimators on one matrix. Run explicitly:

    pytest tests/benchmarks/test_bench_estimators.py -p no:cacheprovider \
        --benchmark-columns=min,mean,rounds

Sizes come from ATLBENCH_BENCH_LOGME="N,D,C" (default 20000,2048,100).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from atlbench.estimators import ESTIMATORS, hscore, knn_accuracy, logme, shrinkage_hscore

N, D, C = (int(v) for v in os.environ.get("ATLBENCH_BENCH_LOGME", "20000,2048,100").split(","))


def _features(n: int, d: int, c: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Class-structured features (every class informative, so plain fixed points converge)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % c
    rng.shuffle(y)
    f = rng.standard_normal((c, d))[y] + 2.0 * rng.standard_normal((n, d))
    return f.astype(np.float32), y


def reference_logme(f: np.ndarray, y: np.ndarray, tol: float = 1e-10, max_iter: int = 100_000):
    """Straightforward LogME: per class, MacKay fixed point with m and the residual formed in the
    original N x D space each iteration; log|A| over all D eigenvalues."""
    f = np.asarray(f, dtype=np.float64)
    n, d = f.shape
    sigma, v = np.linalg.eigh(f.T @ f)
    sigma = np.clip(sigma, 0, None)
    evidences = []
    for c in np.unique(y):
        t = (y == c).astype(np.float64)
        proj = v.T @ (f.T @ t)
        alpha, beta = 1.0, 1.0
        for _ in range(max_iter):
            m = v @ (beta * proj / (alpha + beta * sigma))
            gamma = np.sum(beta * sigma / (alpha + beta * sigma))
            mm = m @ m
            res = np.sum((f @ m - t) ** 2)
            new_alpha, new_beta = gamma / mm, (n - gamma) / res
            done = abs(new_alpha - alpha) / alpha < tol and abs(new_beta - beta) / beta < tol
            alpha, beta = new_alpha, new_beta
            if done:
                break
        m = v @ (beta * proj / (alpha + beta * sigma))
        res = np.sum((f @ m - t) ** 2)
        ev = (
            d / 2 * math.log(alpha)
            + n / 2 * math.log(beta)
            - 0.5 * np.sum(np.log(alpha + beta * sigma))
            - beta / 2 * res
            - alpha / 2 * (m @ m)
            - n / 2 * math.log(2 * math.pi)
        )
        evidences.append(ev / n)
    return float(np.mean(evidences))


@pytest.fixture(scope="module")
def big() -> tuple[np.ndarray, np.ndarray]:
    return _features(N, D, C)


@pytest.fixture(scope="module")
def mid() -> tuple[np.ndarray, np.ndarray]:
    return _features(5000, 512, 20, seed=1)


def _once(benchmark, fn, *args, **kwargs):
    return benchmark.pedantic(fn, args=args, kwargs=kwargs, rounds=1, iterations=1)


@pytest.mark.benchmark(group=f"logme N={N} D={D} C={C}")
def test_logme_ours(benchmark, big) -> None:
    f, y = big
    score = _once(benchmark, logme, f, y)
    benchmark.extra_info["score"] = score


@pytest.mark.benchmark(group=f"logme N={N} D={D} C={C}")
def test_logme_reference_per_class(benchmark, big) -> None:
    f, y = big
    ref = _once(benchmark, reference_logme, f, y)
    assert logme(f, y) == pytest.approx(ref, rel=1e-6)


@pytest.mark.benchmark(group=f"logme N={N} D={D} C={C}")
def test_logme_transformer_ranker(benchmark, big) -> None:
    """transformer-ranker 0.2: 11 iterations, +1e-5 epsilons, alpha/beta carried over from the
    previous class, and log|A| without the (D - r) log(alpha) term; scores differ from ours."""
    tr = pytest.importorskip("transformer_ranker.estimators")
    f, y = big
    score = _once(benchmark, tr.LogME().fit, torch.from_numpy(f), torch.from_numpy(y))
    benchmark.extra_info["score"] = score
    benchmark.extra_info["ours"] = logme(f, y)


@pytest.mark.benchmark(group="hscore N=5000 D=512")
def test_shrinkage_hscore_ours(benchmark, mid) -> None:
    f, y = mid
    benchmark.extra_info["score"] = _once(benchmark, shrinkage_hscore, f, y)


@pytest.mark.benchmark(group="hscore N=5000 D=512")
def test_hscore_transformer_ranker(benchmark, mid) -> None:
    """Its HScore is the shrinkage H-score with cov(E[f|y]) divided by N - 1 (ours: N, as
    sklearn's 1/N covariance): the same up to a factor N / (N - 1)."""
    tr = pytest.importorskip("transformer_ranker.estimators")
    f, y = mid
    score = _once(benchmark, tr.HScore().fit, torch.from_numpy(f), torch.from_numpy(y))
    n = len(y)
    assert score * (n - 1) / n == pytest.approx(shrinkage_hscore(f, y), rel=1e-5)
    benchmark.extra_info["score"] = score
    benchmark.extra_info["plain_hscore"] = hscore(f, y)


@pytest.mark.benchmark(group="knn k=3 euclidean N=5000 D=512")
def test_knn_ours(benchmark, mid) -> None:
    f, y = mid
    benchmark.extra_info["score"] = _once(benchmark, knn_accuracy, f, y, k=3, metric="euclidean")


@pytest.mark.benchmark(group="knn k=3 euclidean N=5000 D=512")
def test_knn_transformer_ranker(benchmark, mid) -> None:
    """micro-F1 = accuracy; ties (three different labels) go to the smallest label there, to the
    nearest neighbour's label here, so the two may differ by a few ties."""
    tr = pytest.importorskip("transformer_ranker.estimators")
    f, y = mid
    est = tr.NearestNeighbors(k=3)
    score = _once(benchmark, est.fit, torch.from_numpy(f), torch.from_numpy(y))
    ours = knn_accuracy(f, y, k=3, metric="euclidean")
    assert score == pytest.approx(ours, abs=0.01)
    benchmark.extra_info["score"] = score
    benchmark.extra_info["ours"] = ours


def _all_estimators(f: np.ndarray, p: np.ndarray, y: np.ndarray) -> dict[str, float]:
    return {n: s.fn(f if s.input == "features" else p, y) for n, s in ESTIMATORS.items()}


@pytest.mark.benchmark(group="all estimators N=5000 D=512")
def test_all_estimators(benchmark, mid) -> None:
    f, y = mid
    rng = np.random.default_rng(2)
    logits = f[:, :100] + rng.standard_normal((len(y), 100))
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    scores = _once(benchmark, _all_estimators, f, p, y)
    assert all(np.isfinite(list(scores.values())))
    benchmark.extra_info.update(scores)


@pytest.mark.benchmark(group="all estimators N=5000 D=512")
def test_forward_pass_that_makes_such_features(benchmark) -> None:
    """The cost estimators must stay below: a resnet18 (D=512) forward over 5,000 64x64 images."""
    import timm

    torch.manual_seed(0)
    model = timm.create_model("resnet18", pretrained=False, num_classes=0).eval()
    images = torch.randn(5000, 3, 64, 64)

    def forward() -> torch.Tensor:
        with torch.inference_mode():
            return torch.cat([model(images[i : i + 250]) for i in range(0, 5000, 250)])

    out = _once(benchmark, forward)
    assert out.shape == (5000, 512)
