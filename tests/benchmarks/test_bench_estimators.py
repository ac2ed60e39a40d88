"""Estimator speed: LogME versus its floor (one float32 Gram matrix + one symmetric
eigendecomposition), a plain per-class fixed point and transformer-ranker; SFDA, NCTI, ETran, PED
and PCA-GBC versus straightforward float64 numpy implementations of their formulas (written here)
and versus LogME on the same features; all registered estimators on one matrix. Run explicitly:

    pytest tests/benchmarks/test_bench_estimators.py -p no:cacheprovider -s \
        --benchmark-columns=min,median,rounds

Sizes come from ATLBENCH_BENCH_LOGME="N,D,C" (default 20000,2048,100). On a shared machine whose
speed drifts between blocks of rounds, ``test_selection_interleaved`` runs every estimator once per
round, back to back, and prints the per-round ratios to LogME and to the floor (``-s``).
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.special import log_softmax, logsumexp, softmax

from atlbench.estimators import (
    ESTIMATORS,
    etran_terms,
    gbc_details,
    hscore,
    knn_accuracy,
    logme,
    ncti_terms,
    ped_features,
    sfda,
    shrinkage_hscore,
)

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


@pytest.fixture(scope="module")
def overlapping() -> tuple[np.ndarray, np.ndarray]:
    """Same size as ``big`` but with overlapping classes (on ``big`` every class is separable and
    SFDA / NCTI / ETran sit at their maxima) and a common mean, as ReLU features have."""
    rng = np.random.default_rng(3)
    y = np.arange(N) % C
    rng.shuffle(y)
    f = 0.05 * rng.standard_normal((C, D))[y] + rng.standard_normal((N, D)) + 1.0
    return f.astype(np.float32), y


def _once(benchmark, fn, *args, **kwargs):
    return benchmark.pedantic(fn, args=args, kwargs=kwargs, rounds=1, iterations=1)


def logme_floor(f: np.ndarray) -> None:
    """The floor for LogME: one float32 Gram matrix F^T F and one symmetric eigendecomposition."""
    t = torch.from_numpy(f)
    torch.linalg.eigh(t.T @ t)


@pytest.mark.benchmark(group=f"logme N={N} D={D} C={C}")
def test_logme_ours(benchmark, big) -> None:
    f, y = big
    score = _once(benchmark, logme, f, y)
    benchmark.extra_info["score"] = score


@pytest.mark.benchmark(group=f"logme N={N} D={D} C={C}")
def test_logme_floor_gram_eigh(benchmark, big) -> None:
    f, _ = big
    benchmark.pedantic(logme_floor, args=(f,), rounds=3, iterations=1)


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
    """Every registered estimator once; a set-level one scores the one-candidate set [f]."""
    out = {}
    for name, spec in ESTIMATORS.items():
        x = f if spec.input == "features" else p
        out[name] = float(spec.fn([x], y)[0]) if spec.set_level else spec.fn(x, y)
    return out


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


# ------------------------------------------------------- straightforward float64 implementations
def _classes(y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    classes = np.unique(y)
    return classes, np.array([np.mean(y == k) for k in classes]), np.searchsorted(classes, y)


def naive_fisher(x: np.ndarray, y: np.ndarray, lam: float | None = None):
    """SFDA's regularised Fisher classifier as the official code writes it: per-class covariance
    loop, shrunk S_w and S_t, generalised eigenvectors of (S_t - S_w, S_w), coef = mu U U^T."""
    classes, pri, _ = _classes(y)
    d = x.shape[1]
    mu = np.array([x[y == k].mean(0) for k in classes])
    sw = np.zeros((d, d))
    for p, k in zip(pri, classes, strict=True):
        sw += p * np.cov(x[y == k].T, bias=True)
    if lam is None:
        lam = max(math.exp(-5 * np.linalg.eigvalsh(sw)[-1]), 1e-10)
    eye = np.eye(d)
    sw_s = (1 - lam) * sw + lam * np.trace(sw) / d * eye
    st = np.cov(x.T, bias=True)
    st_s = (1 - lam) * st + lam * np.trace(st) / d * eye
    _, u = scipy.linalg.eigh(st_s - sw_s, sw_s)
    coef = mu @ u @ u.T
    return x @ coef.T - 0.5 * np.sum(mu * coef, 1) + np.log(pri), lam, mu


def naive_sfda(f: np.ndarray, y: np.ndarray) -> float:
    x = np.asarray(f, dtype=np.float64)
    _, _, idx = _classes(y)
    logits, lam, mu = naive_fisher(x, y)
    q = softmax(softmax(logits, 1), 1)[np.arange(len(y)), idx]
    outer = (mu.sum(0) - mu) / (len(mu) - 1)
    mixed = q[:, None] * x + (1 - q[:, None]) * outer[idx]
    logits2, _, _ = naive_fisher(mixed, y, lam)
    return float(log_softmax(logits2, 1)[np.arange(len(y)), idx].mean())


def naive_ncti_terms(f: np.ndarray, y: np.ndarray, k: int = 64) -> dict[str, float]:
    """PCA by SVD of the centred features, then LDA as sklearn's eigen / SVD solvers define it."""
    x = np.asarray(f, dtype=np.float64)
    n = len(y)
    classes, pri, idx = _classes(y)
    c = len(classes)
    xc = x - x.mean(0)
    _, s, vt = np.linalg.svd(xc, full_matrices=False)
    z = xc @ vt[:k].T
    lam = max(math.exp(-(s[:32] ** 2 / (n - 1)).sum()), 1e-10)
    mu = np.array([z[y == j].mean(0) for j in classes])
    sw = sum(p * np.cov(z[y == j].T, bias=True) for p, j in zip(pri, classes, strict=True))
    st = np.cov(z.T, bias=True)
    if lam > 1e-10:
        sw_s = (1 - lam) * sw + lam * np.trace(sw) / k * np.eye(k)
        st_s = (1 - lam) * st + lam * np.trace(st) / k * np.eye(k)
    else:
        sw_s, st_s = sw * n / (n - c), st
    _, u = scipy.linalg.eigh(st_s - sw_s, sw_s)
    h = z @ u[:, ::-1][:, : min(c - 1, k)]
    coef = np.linalg.solve(sw_s, mu.T).T
    p = softmax(z @ coef.T - 0.5 * np.sum(mu * coef, 1) + np.log(pri), 1)
    return {
        "seli": float(np.linalg.norm(h - h.mean(0), ord="nuc")),
        "ncc": float(p[np.arange(n), idx].mean()),
        "vc": float(np.log(sum(np.linalg.norm(p[y == j], ord="nuc") for j in classes))),
    }


def naive_etran_terms(f: np.ndarray, y: np.ndarray, frac: float = 0.005) -> dict[str, float]:
    """logsumexp energy of the lowest 0.5 %, LDA posterior of the true class, least squares of the
    one-hot labels (with intercept) by lstsq."""
    x = np.asarray(f, dtype=np.float64)
    n = len(y)
    classes, _, idx = _classes(y)
    energy = float(np.sort(logsumexp(x, axis=1))[: max(1, int(frac * n))].mean())
    logits, _, _ = naive_fisher(x, y)
    cls = float(softmax(logits, 1)[np.arange(n), idx].mean())
    onehot = np.eye(len(classes))[idx]
    design = np.hstack([x, np.ones((n, 1))])
    resid = onehot - design @ np.linalg.lstsq(design, onehot, rcond=None)[0]
    return {"energy": energy, "classification": cls, "regression": float(-np.mean(resid**2))}


def naive_ped(f, y, dt=0.1, nsigma=0.6, k=1.0, exit_ratio=0.5, eps=1e-3, steps=6) -> np.ndarray:
    """The official loop: standardise, recompute centres and radii each step, push every
    overlapping pair apart (a Python loop over pairs), stop when the displacement halves."""
    x = np.asarray(f, dtype=np.float64)
    m, s = x.mean(0), np.maximum(x.std(0), eps)
    classes, _, idx = _classes(y)
    first = None
    for _ in range(steps):
        z = (x - m) / s
        mu = np.array([z[y == c].mean(0) for c in classes])
        rad = np.array([np.sqrt(z[y == c].var(0).sum()) for c in classes])
        move = np.zeros_like(mu)
        for i in range(len(classes)):
            for j in range(i + 1, len(classes)):
                diff = mu[i] - mu[j]
                dist = np.linalg.norm(diff)
                overlap = max(nsigma * (rad[i] + rad[j]) - dist, 0.0)
                shift = min(0.5 * dt**2 * k * overlap, overlap) * diff / dist
                move[i] += shift
                move[j] -= shift
        change = np.abs(move).sum()
        first = change if first is None else first
        if first == 0 or change / first <= exit_ratio:
            break
        x = (z + move[idx]) * s + m
    return x


def naive_gbc(f: np.ndarray, y: np.ndarray, k: int = 64, floor: float = 1e-6) -> float:
    """PCA by SVD, then the Bhattacharyya coefficient of every ordered class pair in a loop."""
    x = np.asarray(f, dtype=np.float64)
    xc = x - x.mean(0)
    z = xc @ np.linalg.svd(xc, full_matrices=False)[2][:k].T
    total = z.var(0)
    stats = [(z[y == c].mean(0), z[y == c].var(0) + floor * total) for c in np.unique(y)]
    score = 0.0
    for i, (mi, vi) in enumerate(stats):
        for j, (mj, vj) in enumerate(stats):
            if i != j:
                v = (vi + vj) / 2
                db = np.sum((mi - mj) ** 2 / v) / 8 + 0.5 * np.sum(
                    np.log(v) - 0.5 * np.log(vi) - 0.5 * np.log(vj)
                )
                score -= math.exp(-db)
    return score


# ------------------------------------------------------------- ours versus the naive way
SEL = f"N={N} D={D} C={C}"


@pytest.mark.benchmark(group=f"sfda {SEL}")
def test_sfda_ours(benchmark, overlapping) -> None:
    f, y = overlapping
    benchmark.extra_info["score"] = _once(benchmark, sfda, f, y)


@pytest.mark.benchmark(group=f"sfda {SEL}")
def test_sfda_naive(benchmark, overlapping) -> None:
    f, y = overlapping
    ref = _once(benchmark, naive_sfda, f, y)
    assert sfda(f, y) == pytest.approx(ref, rel=1e-4)


@pytest.mark.benchmark(group=f"ncti {SEL}")
def test_ncti_terms_ours(benchmark, overlapping) -> None:
    f, y = overlapping
    benchmark.extra_info.update(_once(benchmark, ncti_terms, f, y))


@pytest.mark.benchmark(group=f"ncti {SEL}")
def test_ncti_terms_naive(benchmark, overlapping) -> None:
    f, y = overlapping
    ref = _once(benchmark, naive_ncti_terms, f, y)
    ours = ncti_terms(f, y)
    for name, value in ref.items():
        assert ours[name] == pytest.approx(value, rel=1e-4), name


@pytest.mark.benchmark(group=f"etran {SEL}")
def test_etran_terms_ours(benchmark, overlapping) -> None:
    f, y = overlapping
    benchmark.extra_info.update(_once(benchmark, etran_terms, f, y))


@pytest.mark.benchmark(group=f"etran {SEL}")
def test_etran_terms_naive(benchmark, overlapping) -> None:
    f, y = overlapping
    ref = _once(benchmark, naive_etran_terms, f, y)
    ours = etran_terms(f, y)
    for name, value in ref.items():
        assert ours[name] == pytest.approx(value, rel=1e-4), name


@pytest.mark.benchmark(group=f"ped {SEL}")
def test_ped_features_ours(benchmark, overlapping) -> None:
    f, y = overlapping
    _once(benchmark, ped_features, f, y)


@pytest.mark.benchmark(group=f"ped {SEL}")
def test_ped_features_naive(benchmark, overlapping) -> None:
    f, y = overlapping
    ref = _once(benchmark, naive_ped, f, y)
    np.testing.assert_allclose(ped_features(f, y), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.benchmark(group=f"gbc (64 PCs) {SEL}")
def test_gbc_ours(benchmark, overlapping) -> None:
    f, y = overlapping
    benchmark.extra_info["score"], benchmark.extra_info["saturated"] = _once(
        benchmark, gbc_details, f, y
    )


@pytest.mark.benchmark(group=f"gbc (64 PCs) {SEL}")
def test_gbc_naive(benchmark, overlapping) -> None:
    f, y = overlapping
    ref = _once(benchmark, naive_gbc, f, y)
    assert gbc_details(f, y)[0] == pytest.approx(ref, rel=1e-3)


# ------------------------------------------------- everything against LogME, interleaved
_SELECTION = {
    "floor": lambda f, y: logme_floor(f),
    "logme": logme,
    "sfda": sfda,
    "ncti_terms": ncti_terms,
    "etran_terms": etran_terms,
    "ped_features": ped_features,
    "gbc": gbc_details,
}


@pytest.mark.benchmark(group=f"selection interleaved {SEL}")
def test_selection_interleaved(benchmark, overlapping) -> None:
    """Each round times every estimator once, back to back; ratios are taken within a round."""
    f, y = overlapping
    rounds: list[dict[str, float]] = []

    def one_round() -> None:
        times = {}
        for name, fn in _SELECTION.items():
            start = time.perf_counter()
            fn(f, y)
            times[name] = time.perf_counter() - start
        rounds.append(times)

    benchmark.pedantic(one_round, rounds=3, iterations=1)
    for name in _SELECTION:
        benchmark.extra_info[f"{name}_s"] = min(r[name] for r in rounds)
        benchmark.extra_info[f"{name}/logme"] = float(
            np.median([r[name] / r["logme"] for r in rounds])
        )
        benchmark.extra_info[f"{name}/floor"] = float(
            np.median([r[name] / r["floor"] for r in rounds])
        )
    print("\nper-round median ratios:", {k: round(v, 3) for k, v in benchmark.extra_info.items()})
