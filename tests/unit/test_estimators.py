"""Estimators versus straightforward float64 references written here, plus paper invariances."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.special import softmax
from sklearn.covariance import LedoitWolf

from atlbench.estimators import (
    ESTIMATORS,
    gbc,
    hscore,
    knn_accuracy,
    leep,
    logme,
    logme_details,
    logme_regression,
    logme_regression_details,
    nce,
    nleep,
    shrinkage_hscore,
    transrate,
)


def _data(seed: int, n: int, d: int, c: int, signal: float = 1.5):
    """Features with class structure (class means + noise) and labels 0..c-1 (all present)."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    rng.shuffle(y)
    centers = rng.standard_normal((c, d)) * signal
    f = centers[y] + rng.standard_normal((n, d)) + rng.standard_normal(d)
    return f, y


def _probs(seed: int, n: int, z: int, y: np.ndarray, temp: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, z)) + 2.0 * np.eye(z)[y % z]
    return softmax(logits / temp, axis=1)


# ---------------------------------------------------------------------------------------- LogME
def _brute_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """Evidence / N with the full D x D matrix A and slogdet (You et al. 2021, eq. 2)."""
    n, d = f.shape
    a = alpha * np.eye(d) + beta * f.T @ f
    m = beta * np.linalg.solve(a, f.T @ y)
    sign, logdet = np.linalg.slogdet(a)
    assert sign > 0
    ev = (
        d / 2 * np.log(alpha)
        + n / 2 * np.log(beta)
        - n / 2 * np.log(2 * np.pi)
        - beta / 2 * np.sum((f @ m - y) ** 2)
        - alpha / 2 * m @ m
        - logdet / 2
    )
    return ev / n


def _marginal_evidence(f: np.ndarray, y: np.ndarray, alpha: float, beta: float) -> float:
    """Evidence / N as the Gaussian density y ~ N(0, I / beta + F F^T / alpha) (N x N form)."""
    n = f.shape[0]
    cov = np.eye(n) / beta + f @ f.T / alpha
    _, logdet = np.linalg.slogdet(cov)
    return (-0.5 * logdet - 0.5 * y @ np.linalg.solve(cov, y) - n / 2 * np.log(2 * np.pi)) / n


def _logme_data(seed: int, n: int, d: int, signal: float):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    return rng.standard_normal((n, d)) + signal * rng.standard_normal((4, d))[y], y


@pytest.mark.parametrize(("n", "d", "signal"), [(100, 512, 0.1), (300, 40, 0.5), (80, 60, 0.3)])
def test_logme_matches_brute_force_evidence_at_its_maximum(n: int, d: int, signal: float) -> None:
    f, y = _logme_data(1, n, d, signal)
    res = logme_details(f, y)
    assert res.converged
    for k in range(4):
        t = (y == k).astype(float)
        ev = _brute_evidence(f, t, res.alphas[k], res.betas[k])
        assert res.evidences[k] == pytest.approx(ev, rel=1e-8)
        assert res.evidences[k] == pytest.approx(
            _marginal_evidence(f, t, res.alphas[k], res.betas[k]), rel=1e-8
        )
        # (alpha, beta) maximise the evidence: any nearby point is lower.
        for da, db in [(1.02, 1), (0.98, 1), (1, 1.02), (1, 0.98)]:
            assert _brute_evidence(f, t, res.alphas[k] * da, res.betas[k] * db) < ev
    assert res.score == pytest.approx(np.mean(res.evidences), rel=1e-12)


def test_logme_interpolating_fit_reaches_the_noise_free_limit() -> None:
    """N < D with class structure: the optimum is alpha / beta -> 0 (beta huge). The D x D form is
    too ill-conditioned there, so compare with the N x N marginal-likelihood form."""
    f, y = _logme_data(1, 100, 512, 0.3)
    res = logme_details(f, y)
    assert res.converged and np.all(res.betas > 1e9)
    for k in range(4):
        t = (y == k).astype(float)
        assert res.evidences[k] == pytest.approx(
            _marginal_evidence(f, t, res.alphas[k], res.betas[k]), rel=1e-9
        )


def test_logme_small_n_counts_all_eigenvalues() -> None:
    """N < D: log|A| includes (D - N) log(alpha); dropping it inflates the score far above 0."""
    f, y = _data(7, 100, 512, 2, signal=0.3)
    res = logme_details(f, y)
    n, d = f.shape
    dropped = np.mean(
        [res.evidences[k] + (d - res.rank) / 2 * np.log(res.alphas[k]) / n for k in range(2)]
    )
    assert res.rank == n
    assert res.score < 0 < dropped


def test_logme_scale_and_permutation_invariance() -> None:
    f, y = _data(1, 200, 30, 5)
    base = logme(f, y)
    assert logme(f * 1e3, y) == pytest.approx(base, rel=1e-9)
    assert logme(f * 1e-3, y) == pytest.approx(base, rel=1e-9)
    perm = np.array([10, 3, 7, 42, 0])  # relabel and leave gaps in the ids
    assert logme(f, perm[y]) == pytest.approx(base, rel=1e-12)


def test_logme_handles_uninformative_classes() -> None:
    """Pure-noise features: evidence rises as alpha -> inf; the solver must still finish finite."""
    rng = np.random.default_rng(3)
    f, y = rng.standard_normal((400, 64)), rng.integers(0, 5, 400)
    res = logme_details(f, y)
    assert res.converged and np.isfinite(res.score)
    # The alpha -> inf limit (w = 0): beta = N / |y|^2, evidence = N/2 log(beta / 2 pi e) / N.
    limit = np.mean([0.5 * np.log(1 / (np.mean(y == k) * 2 * np.pi * np.e)) for k in range(5)])
    assert res.score >= limit - 1e-9


def test_logme_regression_matches_brute_force() -> None:
    rng = np.random.default_rng(5)
    f = rng.standard_normal((150, 20))
    t = f @ rng.standard_normal((20, 3)) + 0.5 * rng.standard_normal((150, 3))
    res = logme_regression_details(f, t)
    for k in range(3):
        assert res.evidences[k] == pytest.approx(
            _brute_evidence(f, t[:, k], res.alphas[k], res.betas[k]), rel=1e-8
        )
    assert logme_regression(f, t[:, 0]) == pytest.approx(res.evidences[0], rel=1e-10)


# --------------------------------------------------------------------------------- LEEP / NCE
def _ref_leep(p: np.ndarray, y: np.ndarray) -> float:
    n, z = p.shape
    classes = np.unique(y)
    joint = np.array([[p[y == c, j].sum() / n for j in range(z)] for c in classes])
    total = 0.0
    for i in range(n):
        ci = np.searchsorted(classes, y[i])
        s = 0.0
        for j in range(z):
            if joint[:, j].sum() > 0:
                s += joint[ci, j] / joint[:, j].sum() * p[i, j]
        total += np.log(s)
    return total / n


def _ref_nce(p: np.ndarray, y: np.ndarray) -> float:
    z = p.argmax(1)
    h = 0.0
    for zz in np.unique(z):
        sel = y[z == zz]
        _, counts = np.unique(sel, return_counts=True)
        q = counts / counts.sum()
        h += len(sel) / len(y) * -(q * np.log(q)).sum()
    return -h


def test_leep_and_nce_match_reference() -> None:
    _, y = _data(2, 120, 2, 4)
    p = _probs(3, 120, 6, y)
    assert leep(p, y) == pytest.approx(_ref_leep(p, y), rel=1e-10)
    assert nce(p, y) == pytest.approx(_ref_nce(p, y), rel=1e-10, abs=1e-12)


def test_leep_nce_hard_probs_and_empty_source_classes() -> None:
    _, y = _data(4, 90, 2, 3)
    rng = np.random.default_rng(4)
    hard = np.eye(10)[rng.integers(0, 4, 90)]  # source classes 4..9 never predicted
    assert np.isfinite(leep(hard, y))
    assert leep(hard, y) == pytest.approx(_ref_leep(hard, y), rel=1e-10)
    assert nce(hard, y) == pytest.approx(_ref_nce(hard, y), rel=1e-10)
    # A perfect source: every target class is one source class -> LEEP = NCE = 0 (the maximum).
    assert leep(np.eye(5)[y], y) == pytest.approx(0.0, abs=1e-12)
    assert nce(np.eye(5)[y], y) == pytest.approx(0.0, abs=1e-12)


def test_nleep_matches_pca_gmm_leep_and_is_seeded() -> None:
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    f, y = _data(6, 200, 12, 3)
    x = PCA(n_components=0.8, svd_solver="full").fit_transform(f)
    q = GaussianMixture(15, covariance_type="diag", random_state=1).fit(x).predict_proba(x)
    assert nleep(f, y, seed=1) == pytest.approx(_ref_leep(q, y), rel=1e-8)
    assert nleep(f, y, seed=1) == nleep(f, y, seed=1)


# ------------------------------------------------------------------------------------ H-score
def _ref_between_cov(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    g = np.zeros_like(f)
    for c in np.unique(y):
        g[y == c] = f[y == c].mean(0)
    return np.cov(g, rowvar=False, bias=True)


@pytest.mark.parametrize(("n", "d"), [(300, 20), (40, 100)])
def test_hscore_matches_pinv_formula(n: int, d: int) -> None:
    f, y = _data(n, n, d, 5)
    cov_f = np.cov(f, rowvar=False, bias=True)
    ref = np.trace(np.linalg.pinv(cov_f, rcond=1e-10, hermitian=True) @ _ref_between_cov(f, y))
    assert hscore(f, y) == pytest.approx(ref, rel=1e-7)


def test_hscore_saturates_when_n_le_d() -> None:
    for seed in range(3):
        rng = np.random.default_rng(seed)
        f, y = rng.standard_normal((30, 64)), np.arange(30) % 4  # pure noise
        assert hscore(f, y) == pytest.approx(3.0, rel=1e-8)  # C - 1, whatever the features


@pytest.mark.parametrize(("n", "d"), [(300, 20), (40, 100)])
def test_shrinkage_hscore_matches_sklearn_ledoit_wolf(n: int, d: int) -> None:
    f, y = _data(n + 1, n, d, 5)
    lw = LedoitWolf().fit(f)
    a = lw.shrinkage_
    ref = np.trace(np.linalg.solve(lw.covariance_, (1 - a) * _ref_between_cov(f, y)))
    assert shrinkage_hscore(f, y) == pytest.approx(ref, rel=1e-8)


def test_hscore_linear_invariance() -> None:
    """Both are invariant to relabelling; plain H-score also to any invertible linear map."""
    f, y = _data(8, 250, 10, 4)
    mix = np.random.default_rng(8).standard_normal((10, 10))
    assert hscore(f @ mix, y) == pytest.approx(hscore(f, y), rel=1e-7)
    assert shrinkage_hscore(3.0 * f, y) == pytest.approx(shrinkage_hscore(f, y), rel=1e-10)
    perm = np.array([2, 0, 3, 1])
    assert shrinkage_hscore(f, perm[y]) == pytest.approx(shrinkage_hscore(f, y), rel=1e-12)


# ---------------------------------------------------------------------------------- TransRate
def _ref_rate(z: np.ndarray, eps: float) -> float:
    n, d = z.shape
    return 0.5 * np.linalg.slogdet(np.eye(d) + d / (n * eps**2) * z.T @ z)[1]


@pytest.mark.parametrize(("n", "d"), [(200, 16), (60, 80)])
def test_transrate_matches_slogdet_formula(n: int, d: int) -> None:
    f, y = _data(n + 2, n, d, 4)
    z = f - f.mean(0)
    ref = _ref_rate(z, 0.1) - sum(np.mean(y == c) * _ref_rate(z[y == c], 0.1) for c in np.unique(y))
    assert transrate(f, y, eps=0.1) == pytest.approx(ref, rel=1e-9)
    assert transrate(f, np.array([5, 1, 9, 4])[y], eps=0.1) == pytest.approx(ref, rel=1e-9)


# ---------------------------------------------------------------------------------------- GBC
def _ref_gbc(f: np.ndarray, y: np.ndarray, floor: float = 1e-6) -> float:
    total_var = f.var(0)
    classes = np.unique(y)
    stats = [(f[y == c].mean(0), f[y == c].var(0) + floor * total_var) for c in classes]
    s = 0.0
    for i, (mi, vi) in enumerate(stats):
        for j, (mj, vj) in enumerate(stats):
            if i == j:
                continue
            v = (vi + vj) / 2
            db = np.sum((mi - mj) ** 2 / v) / 8 + 0.5 * np.sum(
                np.log(v) - 0.5 * np.log(vi) - 0.5 * np.log(vj)
            )
            s += np.exp(-db)
    return -s


def test_gbc_matches_pairwise_formula_and_invariances() -> None:
    f, y = _data(9, 150, 24, 6, signal=0.4)
    ref = _ref_gbc(f, y)
    assert gbc(f, y, n_components=None) == pytest.approx(ref, rel=1e-9)  # unreduced
    scale = np.random.default_rng(9).uniform(0.01, 100, 24)
    assert gbc(f * scale, y, n_components=None) == pytest.approx(ref, rel=1e-9)  # per feature
    assert gbc(f, (y + 3) * 7, n_components=None) == pytest.approx(ref, rel=1e-12)
    # PCA (the default, 64 components or fewer): the reference on the projected features.
    fc = f - f.mean(0)
    vt = np.linalg.svd(fc, full_matrices=False)[2]
    assert gbc(f, y) == pytest.approx(_ref_gbc(fc @ vt.T, y), rel=1e-8)  # D = 24 < 64
    assert gbc(f, y, n_components=5) == pytest.approx(_ref_gbc(fc @ vt[:5].T, y), rel=1e-8)
    assert gbc(f, (y + 3) * 7) == pytest.approx(gbc(f, y), rel=1e-12)


def test_gbc_single_sample_class_is_finite() -> None:
    f, y = _data(10, 50, 300, 3)
    y[0] = 99  # a class with one sample, in a dimension where log-dets would overflow
    assert np.isfinite(gbc(f, y))
    assert np.isfinite(gbc(f, y, n_components=None))


# ---------------------------------------------------------------------------------------- kNN
def _ref_knn(f: np.ndarray, y: np.ndarray, k: int, metric: str) -> float:
    dist = cdist(f, f, metric="cosine" if metric == "cosine" else "euclidean")
    np.fill_diagonal(dist, np.inf)
    hits = 0
    for i in range(len(y)):
        order = np.argsort(dist[i])[:k]
        labels, counts = np.unique(y[order], return_counts=True)
        tied = labels[counts == counts.max()]
        pred = next(y[j] for j in order if y[j] in tied)  # tie -> class of nearest neighbour
        hits += pred == y[i]
    return hits / len(y)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("k", [1, 4, 7])
def test_knn_matches_leave_one_out_reference(metric: str, k: int) -> None:
    f, y = _data(k, 180, 8, 5, signal=0.7)
    ref = _ref_knn(f, y, k, metric)
    assert knn_accuracy(f, y, k=k, metric=metric) == pytest.approx(ref, abs=1e-12)
    assert knn_accuracy(f, y, k=k, metric=metric, chunk_size=7) == pytest.approx(ref, abs=1e-12)


# -------------------------------------------------------------------------- shared behaviour
def _inputs(name: str, f: np.ndarray, y: np.ndarray) -> np.ndarray:
    return f if ESTIMATORS[name].input == "features" else _probs(11, len(y), 7, y)


def _call(name: str, x, y):
    """Score x; a set-level estimator scores the candidate set [x, a weaker copy of x]."""
    fn = ESTIMATORS[name].fn
    if not ESTIMATORS[name].set_level:
        return fn(x, y)
    noise = np.random.default_rng(0).standard_normal(tuple(x.shape))
    if isinstance(x, torch.Tensor):
        weaker = 0.5 * x + torch.from_numpy(noise).to(x.device, x.dtype)
    else:
        weaker = 0.5 * x + noise.astype(x.dtype)
    return fn([x, weaker], y)


def test_registry_names_and_inputs() -> None:
    assert set(ESTIMATORS) == {
        "logme", "leep", "nleep", "nce", "hscore", "shrinkage_hscore", "transrate", "gbc",
        "gbc_spherical", "knn", "sfda", "sfda_prob", "ncti", "etran", "ped_logme", "ped_sfda",
    }  # fmt: skip
    assert {n for n, s in ESTIMATORS.items() if s.input == "probs"} == {"leep", "nce"}
    assert {n for n, s in ESTIMATORS.items() if s.set_level} == {"ncti", "etran"}
    assert all(s.doc for s in ESTIMATORS.values())


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_float32_torch_and_relabelled_inputs_agree(name: str) -> None:
    f, y = _data(12, 120, 10, 3)
    x = _inputs(name, f, y)
    base = _call(name, x, y)
    if ESTIMATORS[name].set_level:
        assert isinstance(base, np.ndarray) and base.shape == (2,) and np.all(np.isfinite(base))
    else:
        assert isinstance(base, float) and math.isfinite(base)
    x32 = x.astype(np.float32)
    if ESTIMATORS[name].input == "probs":
        x32 = x32 / x32.sum(1, keepdims=True)
    tol = 1e-2 if name == "nleep" else 1e-4  # a GMM fit may move a little with float32 inputs
    assert _call(name, x32, y) == pytest.approx(base, rel=tol, abs=tol)
    assert _call(name, torch.from_numpy(x), torch.from_numpy(y)) == pytest.approx(base, rel=1e-12)
    relabelled = _call(name, x, np.array([30, 10, 20])[y])
    assert relabelled == pytest.approx(base, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_bad_inputs_raise_value_error(name: str) -> None:
    f, y = _data(13, 40, 6, 3)
    x = _inputs(name, f, y)
    spec = ESTIMATORS[name]

    def fn(a, labels):
        return spec.fn([a], labels) if spec.set_level else spec.fn(a, labels)

    bad = x.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        fn(bad, y)
    bad[3, 2] = np.inf
    with pytest.raises(ValueError, match="NaN or inf"):
        fn(bad, y)
    with pytest.raises(ValueError, match="entries"):
        fn(x, y[:-1])
    with pytest.raises(ValueError, match="at least 2 distinct classes"):
        fn(x, np.zeros(40, dtype=int))
    with pytest.raises(ValueError, match="2-D"):
        fn(x[:, 0], y)
    with pytest.raises(ValueError, match="1-D"):
        fn(x, y[:, None])
    with pytest.raises(ValueError, match="integer"):
        fn(x, y + 0.5)


def test_probs_estimators_reject_logits() -> None:
    _, y = _data(14, 30, 2, 3)
    logits = np.random.default_rng(14).standard_normal((30, 5))
    for fn in (leep, nce):
        with pytest.raises(ValueError, match="softmax"):
            fn(logits, y)
        with pytest.raises(ValueError, match="softmax"):
            fn(np.abs(logits), y)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("name", sorted(ESTIMATORS))
def test_cuda_tensors_match_cpu(name: str) -> None:
    f, y = _data(15, 300, 20, 4)
    x = _inputs(name, f, y)
    gpu = _call(name, torch.from_numpy(x).cuda(), torch.from_numpy(y).cuda())
    assert gpu == pytest.approx(_call(name, x, y), rel=1e-6, abs=1e-9)
