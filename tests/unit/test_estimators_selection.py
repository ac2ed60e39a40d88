"""SFDA (both scores), NCTI, ETran, PED (with LogME and SFDA) and PCA-reduced GBC (diagonal and
spherical) versus float64 references written here, plus the properties the papers state or the
formulas imply."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.linalg
import torch
from scipy.special import log_softmax, logsumexp, softmax
from threadpoolctl import threadpool_limits

from atlbench.estimators import (
    ESTIMATORS,
    etran,
    etran_terms,
    gbc,
    gbc_details,
    gbc_spherical,
    logme,
    ncti,
    ncti_terms,
    ped,
    ped_features,
    ped_logme,
    ped_sfda,
    sfda,
    sfda_prob,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The inputs here are tiny: torch's OpenMP pool and OpenBLAS's threads only add barrier
    waits, which stretch to ~0.1 s per call when the other core of a 2-core machine is busy
    (20x the work itself). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(limits=1):
        yield
    torch.set_num_threads(threads)


def _data(seed: int, n: int, d: int, c: int, signal: float = 1.0, offset: float = 1.0):
    """Class means + unit noise + a common offset; labels 0..c-1, every class present."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(c), rng.integers(0, c, n - c)])
    rng.shuffle(y)
    f = signal * rng.standard_normal((c, d))[y] + rng.standard_normal((n, d))
    return f + offset * rng.standard_normal(d), y


def _rotation(seed: int, d: int) -> np.ndarray:
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((d, d)))[0]


# ------------------------------------------------------------------ Fisher classifier reference
def _ref_fisher_logits(x: np.ndarray, y: np.ndarray, lam: float | None = None):
    """SFDA's regularised Fisher classifier as the official code writes it: shrunk S_w and S_t,
    generalised eigenvectors of (S_b = S_t - S_w, S_w), coef = mu U U^T. Returns logits, lambda."""
    classes = np.unique(y)
    d = x.shape[1]
    pri = np.array([np.mean(y == k) for k in classes])
    mu = np.array([x[y == k].mean(0) for k in classes])
    covs = [np.cov(x[y == k].T, bias=True).reshape(d, d) for k in classes]
    sw = sum(p * cov for p, cov in zip(pri, covs, strict=True))
    if lam is None:
        lam = max(np.exp(-5 * np.linalg.eigvalsh(sw)[-1]), 1e-10)

    def shrunk(s: np.ndarray) -> np.ndarray:
        return (1 - lam) * s + lam * np.trace(s) / d * np.eye(d)

    sw_s, st_s = shrunk(sw), shrunk(np.cov(x.T, bias=True).reshape(d, d))
    _, u = scipy.linalg.eigh(st_s - sw_s, sw_s)
    coef = mu @ u[:, ::-1] @ u[:, ::-1].T
    return x @ coef.T - 0.5 * np.sum(mu * coef, 1) + np.log(pri), lam, mu


def _ref_sfda(f: np.ndarray, y: np.ndarray, shrinkage: float | None = None) -> float:
    x = np.array(f, dtype=np.float64)
    logits, lam, mu = _ref_fisher_logits(x, y, shrinkage)
    c = len(mu)
    q = softmax(softmax(logits, 1), 1)[np.arange(len(y)), y]  # softened confidence
    outer = (mu.sum(0) - mu) / (c - 1)  # mean of the other classes' means
    mixed = q[:, None] * x + (1 - q[:, None]) * outer[y]
    logits2, _, _ = _ref_fisher_logits(mixed, y, lam)
    return float(log_softmax(logits2, 1)[np.arange(len(y)), y].mean())


# ---------------------------------------------------------------------------------------- SFDA
@pytest.mark.parametrize(
    ("n", "d", "c", "scale", "shrinkage"),
    [
        (300, 20, 4, 1.0, None),  # sigma_max(S_w) > 4.6: lambda at its floor 1e-10
        (300, 20, 4, 0.12, None),  # small features: the adaptive lambda is active
        (200, 40, 5, 0.5, 0.3),
        (40, 90, 3, 1.0, 0.5),  # N < D: computed in the span of the samples
    ],
)
def test_sfda_matches_official_formula(n, d, c, scale, shrinkage) -> None:
    f, y = _data(n + d, n, d, c, signal=0.6)
    f = f * scale
    ref = _ref_sfda(f, y, shrinkage)
    assert sfda(f, y, shrinkage=shrinkage) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert sfda(f.astype(np.float32), y, shrinkage=shrinkage) == pytest.approx(ref, rel=1e-4)


def test_sfda_adaptive_shrinkage_is_exercised() -> None:
    f, y = _data(320, 300, 20, 4, signal=0.6)
    _, lam, _ = _ref_fisher_logits(0.12 * f, y)
    assert 1e-6 < lam < 1  # the small-scale case above really shrinks


def test_sfda_invariances_and_ordering() -> None:
    f, y = _data(3, 250, 16, 4, signal=0.7)
    base = sfda(f, y)
    assert sfda(f @ _rotation(3, 16), y) == pytest.approx(base, rel=1e-9)  # rotation
    assert sfda(f + 50.0, y) == pytest.approx(base, rel=1e-9)  # translation
    assert sfda(f, np.array([7, 2, 9, 4])[y]) == pytest.approx(base, rel=1e-12)  # relabel
    weak, _ = _data(3, 250, 16, 4, signal=0.2)
    assert base > sfda(weak, y)  # separable classes score above overlapping ones
    assert base <= 0.0  # a mean log-probability


def _ref_sfda_prob(f: np.ndarray, y: np.ndarray, shrinkage: float | None = None) -> float:
    """The official SFDA_Score: the same two Fisher classifiers and ConfMix as :func:`_ref_sfda`,
    scored by the mean probability of the true class, sample by sample."""
    x = np.array(f, dtype=np.float64)
    logits, lam, mu = _ref_fisher_logits(x, y, shrinkage)
    c = len(mu)
    outer = (mu.sum(0) - mu) / (c - 1)
    mixed = x.copy()
    for i in range(len(y)):
        p = softmax(logits[i])
        q = softmax(p)[y[i]]  # the second softmax softens the confidence
        mixed[i] = q * x[i] + (1 - q) * outer[y[i]]
    logits2, _, _ = _ref_fisher_logits(mixed, y, lam)
    return float(np.mean([softmax(logits2[i])[y[i]] for i in range(len(y))]))


@pytest.mark.parametrize(
    ("n", "d", "c", "scale", "shrinkage"),
    [
        (260, 18, 4, 1.0, None),  # lambda at its floor
        (260, 18, 4, 0.12, None),  # adaptive lambda active
        (180, 30, 5, 0.5, 0.3),
        (45, 80, 3, 1.0, 0.5),  # N < D
    ],
)
def test_sfda_prob_matches_official_score(n, d, c, scale, shrinkage) -> None:
    f, y = _data(7 * n + d, n, d, c, signal=0.5)
    f = f * scale
    ref = _ref_sfda_prob(f, y, shrinkage)
    assert 0.0 < ref < 1.0
    assert sfda_prob(f, y, shrinkage=shrinkage) == pytest.approx(ref, rel=1e-9, abs=1e-12)
    assert sfda_prob(f.astype(np.float32), y, shrinkage=shrinkage) == pytest.approx(ref, rel=1e-4)
    assert sfda_prob(f, np.array([8, 3, 6, 1, 0])[y]) == pytest.approx(sfda_prob(f, y), rel=1e-12)


def test_sfda_prob_properties() -> None:
    f, y = _data(31, 240, 14, 4, signal=0.7)
    weak, _ = _data(31, 240, 14, 4, signal=0.15)
    prob = sfda_prob(f, y)
    assert prob > sfda_prob(weak, y)  # separable classes score above overlapping ones
    assert 0.0 < prob <= 1.0
    assert prob >= np.exp(sfda(f, y))  # Jensen: mean p >= exp(mean log p)
    assert sfda_prob(f @ _rotation(31, 14) + 20.0, y) == pytest.approx(prob, rel=1e-9)


# ----------------------------------------------------------------------------------------- GBC
def _ref_gbc(f: np.ndarray, y: np.ndarray, floor: float = 1e-6) -> float:
    total = f.var(0)
    stats = [(f[y == k].mean(0), f[y == k].var(0) + floor * total) for k in np.unique(y)]
    s = 0.0
    for i, (mi, vi) in enumerate(stats):
        for j, (mj, vj) in enumerate(stats):
            if i != j:
                v = (vi + vj) / 2
                db = np.sum((mi - mj) ** 2 / v) / 8 + 0.5 * np.sum(
                    np.log(v) - 0.5 * np.log(vi) - 0.5 * np.log(vj)
                )
                s += np.exp(-db)
    return -s


def _pca(f: np.ndarray, k: int) -> np.ndarray:
    fc = f - f.mean(0)
    return fc @ np.linalg.svd(fc, full_matrices=False)[2][:k].T


@pytest.mark.parametrize(
    ("n", "d", "k"), [(200, 100, 64), (150, 30, 64), (50, 120, 64), (200, 80, 7)]
)
def test_gbc_pca_matches_reference(n: int, d: int, k: int) -> None:
    f, y = _data(n, n, d, 5, signal=0.3)
    ref = _ref_gbc(_pca(f, min(k, d, n - 1)), y)  # fewer components when D or N - 1 is smaller
    assert gbc(f, y, n_components=k) == pytest.approx(ref, rel=1e-8)


def test_gbc_pca_is_rotation_invariant_unreduced_is_not() -> None:
    f, y = _data(4, 200, 30, 4, signal=0.3)
    rot = _rotation(4, 30)
    assert gbc(f @ rot, y) == pytest.approx(gbc(f, y), rel=1e-8)
    assert gbc(f @ rot, y, n_components=None) != pytest.approx(
        gbc(f, y, n_components=None), rel=1e-3
    )


def test_pca_gbc_does_not_saturate_where_unreduced_does() -> None:
    """Well-separated classes in D=2000 with 30 samples each: the per-dimension sampling noise of
    the class means and variances drives every unreduced D_B up and the score to ~1e-24 (ranked by
    round-off); on 64 PCs the class structure is kept and the score stays informative."""
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(4), 30)
    centers = rng.standard_normal((4, 2000))
    centers *= 13 / np.sqrt(2) / np.linalg.norm(centers, axis=1, keepdims=True)
    f = centers[y] + rng.standard_normal((120, 2000))
    full, full_saturated = gbc_details(f, y, n_components=None)
    reduced, reduced_saturated = gbc_details(f, y)
    assert full_saturated and -full < 4 * 3 * np.finfo(np.float64).eps
    assert not reduced_saturated and -reduced > 1e-8
    assert full == pytest.approx(_ref_gbc(f, y), rel=1e-6, abs=1e-300)


def _ref_gbc_spherical(
    f: np.ndarray, y: np.ndarray, floor: float = 1e-6, exact: bool = False
) -> float:
    """Spherical GBC, pair by pair. ``exact``: the paper's D_B with ``Sigma_c = s_c I`` as D x D
    matrices (solve and slogdet); else the official code, whose log term sums over a scalar."""
    d = f.shape[1]
    total = f.var(0)
    stats = [(f[y == k].mean(0), np.mean(f[y == k].var(0) + floor * total)) for k in np.unique(y)]
    s = 0.0
    for i, (mi, si) in enumerate(stats):
        for j, (mj, sj) in enumerate(stats):
            if i == j:
                continue
            diff = mi - mj
            if exact:
                ci, cj = si * np.eye(d), sj * np.eye(d)
                cov = (ci + cj) / 2
                db = diff @ np.linalg.solve(cov, diff) / 8 + 0.5 * (
                    np.linalg.slogdet(cov)[1]
                    - 0.5 * np.linalg.slogdet(ci)[1]
                    - 0.5 * np.linalg.slogdet(cj)[1]
                )
            else:
                v = (si + sj) / 2
                db = np.sum(diff**2 / v) / 8 + 0.5 * (np.log(v) - 0.5 * (np.log(si) + np.log(sj)))
            s += np.exp(-db)
    return -s


@pytest.mark.parametrize(
    ("n", "d", "k"), [(220, 90, 64), (160, 24, 64), (60, 120, 64), (200, 50, 9)]
)
@pytest.mark.parametrize("exact", [False, True])
def test_gbc_spherical_matches_reference(n: int, d: int, k: int, exact: bool) -> None:
    f, y = _data(3 * n + k, n, d, 5, signal=0.3)
    f[:, : d // 3] *= 3.0  # anisotropic, so spherical and diagonal differ
    ref = _ref_gbc_spherical(_pca(f, min(k, d, n - 1)), y, exact=exact)
    assert gbc_spherical(f, y, n_components=k, exact_logdet=exact) == pytest.approx(ref, rel=1e-8)
    assert gbc_spherical(f, np.array([4, 9, 2, 7, 5])[y], n_components=k, exact_logdet=exact) == (
        pytest.approx(ref, rel=1e-8)
    )
    assert gbc_details(f, y, n_components=k, gaussian="spherical", exact_logdet=exact)[0] == (
        pytest.approx(ref, rel=1e-8)
    )
    if d <= 64:  # unreduced
        unreduced = gbc_spherical(f, y, n_components=None, exact_logdet=exact)
        assert unreduced == pytest.approx(_ref_gbc_spherical(f, y, exact=exact), rel=1e-9)


def test_gbc_spherical_properties() -> None:
    f, y = _data(41, 200, 20, 4, signal=0.4)
    f[:, :5] *= 4.0
    base = gbc_spherical(f, y)
    assert base != pytest.approx(gbc(f, y), rel=1e-3)  # a different covariance model
    weak, _ = _data(41, 200, 20, 4, signal=0.1)
    assert base > gbc_spherical(weak, y)  # separable classes score above overlapping ones
    assert gbc_spherical(3.7 * f - 2.0, y) == pytest.approx(base, rel=1e-9)  # scale, shift
    rot = _rotation(41, 20)  # spherical Gaussians: rotation invariant even unreduced
    unreduced = gbc_spherical(f, y, n_components=None)
    assert gbc_spherical(f @ rot, y, n_components=None) == pytest.approx(unreduced, rel=1e-9)
    # AM >= GM makes every log term >= 0, so weighing it by D only lowers the overlap
    assert gbc_spherical(f, y, exact_logdet=True) >= base


# ---------------------------------------------------------------------------------------- NCTI
def _ref_ncti_terms(f: np.ndarray, y: np.ndarray, k: int = 64) -> dict[str, float]:
    """Official pipeline in plain numpy: PCA, shrinkage from the 32 largest PCA variances, LDA
    (shrunk; unshrunk with S_w / (N - C) when lambda is at its floor 1e-10)."""
    n = len(y)
    classes = np.unique(y)
    c = len(classes)
    fc = f - f.mean(0)
    _, s, vt = np.linalg.svd(fc, full_matrices=False)
    k = min(k, n - 1, f.shape[1])
    x = fc @ vt[:k].T
    lam = max(np.exp(-(s[: min(k, 32)] ** 2 / (n - 1)).sum()), 1e-10)  # of the k kept PCs
    pri = np.array([np.mean(y == j) for j in classes])
    mu = np.array([x[y == j].mean(0) for j in classes])
    sw = sum(p * np.cov(x[y == j].T, bias=True) for p, j in zip(pri, classes, strict=True))
    st = np.cov(x.T, bias=True)
    if lam > 1e-10:
        sw_s = (1 - lam) * sw + lam * np.trace(sw) / k * np.eye(k)
        st_s = (1 - lam) * st + lam * np.trace(st) / k * np.eye(k)
    else:
        sw_s, st_s = sw * n / (n - c), st
    _, u = scipy.linalg.eigh(st_s - sw_s, sw_s)
    h = x @ u[:, ::-1][:, : min(c - 1, k)]
    seli = np.linalg.norm(h - h.mean(0), ord="nuc")
    coef = np.linalg.solve(sw_s, mu.T).T
    p = softmax(x @ coef.T - 0.5 * np.sum(mu * coef, 1) + np.log(pri), 1)
    ncc = p[np.arange(n), y].mean()
    vc = np.log(sum(np.linalg.norm(p[y == j], ord="nuc") for j in classes))
    return {"seli": seli, "ncc": ncc, "vc": vc}


@pytest.mark.parametrize(
    ("n", "d", "scale", "k"),
    [(300, 100, 1.0, 64), (300, 100, 0.1, 64), (200, 20, 1.0, 64), (400, 50, 0.3, 8)],
)
def test_ncti_terms_match_official_pipeline(n, d, scale, k) -> None:
    f, y = _data(n + d, n, d, 5, signal=0.4)
    f = f * scale
    ref = _ref_ncti_terms(f, y, k)
    got = ncti_terms(f, y, n_components=k)
    for name in ("seli", "ncc", "vc"):
        assert got[name] == pytest.approx(ref[name], rel=1e-7), name
    got32 = ncti_terms(f.astype(np.float32), y, n_components=k)
    for name in ("seli", "ncc", "vc"):
        assert got32[name] == pytest.approx(ref[name], rel=1e-3), name


def test_ncti_small_scale_uses_shrinkage() -> None:
    f, _ = _data(400, 300, 100, 5, signal=0.4)
    s = np.linalg.svd(0.1 * (f - f.mean(0)), compute_uv=False)
    assert np.exp(-(s[:32] ** 2 / 299).sum()) > 1e-10  # the scale=0.1 case is the shrunk branch


def test_ncti_set_level_normalisation_and_properties() -> None:
    strong, y = _data(5, 300, 40, 5, signal=1.0)
    mid, _ = _data(6, 300, 40, 5, signal=0.5)
    weak, _ = _data(7, 300, 40, 5, signal=0.15)
    cands = [mid, strong, weak]
    scores = ncti(cands, y)
    terms = [ncti_terms(f, y) for f in cands]

    def mm(v):
        v = np.asarray(v)
        return (v - v.min()) / (v.max() - v.min())

    expect = mm([t["seli"] for t in terms]) + mm([t["ncc"] for t in terms])
    expect -= mm([t["vc"] for t in terms])
    np.testing.assert_allclose(scores, expect, rtol=1e-12)
    assert scores[1] > scores[0] > scores[2]  # closer to collapse ranks higher
    perm = [2, 0, 1]
    np.testing.assert_allclose(ncti([cands[i] for i in perm], y), scores[perm], rtol=1e-12)
    # The raw terms are invariant to rotations and translations of the features.
    t_rot = ncti_terms(strong @ _rotation(5, 40) + 3.0, y)
    for name in ("seli", "ncc", "vc"):
        assert t_rot[name] == pytest.approx(terms[1][name], rel=1e-8)
    np.testing.assert_array_equal(ncti([strong], y), [0.0])  # one candidate: nothing to compare


# --------------------------------------------------------------------------------------- ETran
def _ref_etran_terms(f: np.ndarray, y: np.ndarray, frac: float = 0.005) -> dict[str, float]:
    n = len(y)
    lse = logsumexp(f, axis=1)
    energy = np.sort(lse)[: max(1, int(frac * n))].mean()
    logits, _, _ = _ref_fisher_logits(np.array(f, dtype=np.float64), y)
    cls = softmax(logits, 1)[np.arange(n), y].mean()
    onehot = (y[:, None] == np.unique(y)[None, :]).astype(np.float64)
    design = np.hstack([f, np.ones((n, 1))])  # least squares with an intercept
    resid = onehot - design @ np.linalg.lstsq(design, onehot, rcond=None)[0]
    return {"energy": energy, "classification": cls, "regression": -np.mean(resid**2)}


@pytest.mark.parametrize(
    ("n", "d", "scale", "frac"), [(400, 30, 1.0, 0.005), (300, 20, 0.12, 0.1), (250, 40, 0.5, 1.0)]
)
def test_etran_terms_match_reference(n, d, scale, frac) -> None:
    f, y = _data(n + d, n, d, 4, signal=0.5)
    f = f * scale
    ref = _ref_etran_terms(f, y, frac)
    got = etran_terms(f, y, energy_fraction=frac)
    for name in ("energy", "classification", "regression"):
        assert got[name] == pytest.approx(ref[name], rel=1e-8), name
    got32 = etran_terms(f.astype(np.float32), y, energy_fraction=frac)
    for name in ("energy", "classification", "regression"):
        assert got32[name] == pytest.approx(ref[name], rel=1e-4), name


def test_etran_term_properties() -> None:
    f, y = _data(8, 300, 24, 4, signal=0.5)
    t = etran_terms(f, y)
    moved = etran_terms(f @ _rotation(8, 24) + 2.0, y)
    for name in ("classification", "regression"):  # depend on the geometry only
        assert moved[name] == pytest.approx(t[name], rel=1e-8)
    # logsumexp(f + a) = logsumexp(f) + a: the energy term shifts one-for-one.
    assert etran_terms(f + 2.5, y)["energy"] == pytest.approx(t["energy"] + 2.5, rel=1e-12)
    weak, _ = _data(8, 300, 24, 4, signal=0.1)
    tw = etran_terms(weak, y)
    assert t["classification"] > tw["classification"] and t["regression"] > tw["regression"]


def test_etran_set_level_weights_and_equivariance() -> None:
    a, y = _data(9, 300, 20, 4, signal=0.8)
    b, _ = _data(10, 300, 20, 4, signal=0.3)
    c_, _ = _data(11, 300, 20, 4, signal=0.5)
    cands = [a, b, c_]
    terms = [etran_terms(f, y) for f in cands]

    def mm(name):
        v = np.array([t[name] for t in terms])
        return (v - v.min()) / (v.max() - v.min())

    np.testing.assert_allclose(etran(cands, y), 0.15 * mm("energy") + 0.85 * mm("classification"))
    w = (0.2, 0.3, 0.5)
    expect = 0.2 * mm("energy") + 0.3 * mm("classification") + 0.5 * mm("regression")
    np.testing.assert_allclose(etran(cands, y, weights=w), expect)
    perm = [1, 2, 0]
    np.testing.assert_allclose(etran([cands[i] for i in perm], y), etran(cands, y)[perm])
    with pytest.raises(ValueError, match="one value per term"):
        etran(cands, y, weights=(1.0, 0.0))


# ----------------------------------------------------------------------------------------- PED
def _ref_ped(f, y, dt=0.1, nsigma=0.6, k=1.0, exit_ratio=0.5, eps=1e-3, steps=6):
    """The official loop: standardise by the (fixed) statistics, recompute class centres and
    radii, push every overlapping pair apart, stop when the displacement halves."""
    x = np.array(f, dtype=np.float64)
    m, s = x.mean(0), np.maximum(x.std(0), eps)
    classes = np.unique(y)
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
        x = (z + move[np.searchsorted(classes, y)]) * s + m
    return x


@pytest.mark.parametrize(("nsigma", "dt"), [(0.6, 0.1), (2.0, 0.5), (1.0, 3.0)])
def test_ped_features_match_official_loop(nsigma: float, dt: float) -> None:
    f, y = _data(12, 240, 12, 5, signal=0.4)
    f[:, 3] *= 1e-5  # a near-constant feature: the std floor applies
    ref = _ref_ped(f, y, dt=dt, nsigma=nsigma)
    got = ped_features(f, y, n_sigma=nsigma, time_step=dt)
    assert np.abs(ref - f).max() > 1e-3  # something moved
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ped_features(f, y, n_sigma=nsigma, time_step=dt, reference=f), got)


def test_ped_is_affine_equivariant_and_pushes_classes_apart() -> None:
    f, y = _data(13, 200, 8, 3, signal=0.4)
    scale = np.random.default_rng(13).uniform(0.5, 20, 8)
    moved = ped_features(f, y, n_sigma=2.0, time_step=0.5)
    np.testing.assert_allclose(
        ped_features(f * scale + 7.0, y, n_sigma=2.0, time_step=0.5), moved * scale + 7.0
    )
    z, zm = f / f.std(0), moved / f.std(0)
    before = [np.linalg.norm(z[y == i].mean(0) - z[y == j].mean(0)) for i, j in [(0, 1), (0, 2)]]
    after = [np.linalg.norm(zm[y == i].mean(0) - zm[y == j].mean(0)) for i, j in [(0, 1), (0, 2)]]
    assert all(a > b for a, b in zip(after, before, strict=True))
    # rigid per-class moves: within-class spread is untouched
    for k in range(3):
        np.testing.assert_allclose(moved[y == k].std(0), f[y == k].std(0), rtol=1e-10)
    far = np.concatenate([np.zeros((50, 4)), np.full((50, 4), 100.0)]) + np.random.default_rng(
        1
    ).standard_normal((100, 4))
    yf = np.repeat([0, 1], 50)
    np.testing.assert_array_equal(ped_features(far, yf), far)  # no overlap, no force


def test_ped_wraps_any_estimator() -> None:
    f, y = _data(14, 200, 10, 4, signal=0.4)
    moved = ped_features(f, y)
    assert ped(f, y) == pytest.approx(logme(moved, y), rel=1e-12)
    assert ped_logme(f, y) == pytest.approx(logme(moved, y), rel=1e-12)
    assert ped(f, y, estimator=sfda, n_sigma=1.0) == pytest.approx(
        sfda(ped_features(f, y, n_sigma=1.0), y), rel=1e-12
    )
    assert ped_logme(f * 1e3, y) == pytest.approx(ped_logme(f, y), rel=1e-7)  # LogME scale-free


@pytest.mark.parametrize(("n", "d", "c", "signal"), [(240, 12, 5, 0.4), (150, 30, 3, 0.25)])
def test_ped_sfda_matches_official_pipeline(n: int, d: int, c: int, signal: float) -> None:
    """PED_Score's default (type='SFDA'): the official motion loop, then SFDA_Score."""
    f, y = _data(5 * n + d, n, d, c, signal=signal)
    moved = _ref_ped(f, y)
    assert np.abs(moved - f).max() > 1e-3  # the booster moved something
    ref = _ref_sfda_prob(moved, y)
    assert ped_sfda(f, y) == pytest.approx(ref, rel=1e-9)
    assert ped_sfda(f, y, reference=f) == pytest.approx(ref, rel=1e-9)
    assert ped_sfda(f.astype(np.float32), y) == pytest.approx(ref, rel=1e-4)
    assert ped(f, y, estimator=sfda_prob) == pytest.approx(ref, rel=1e-12)


def test_ped_sfda_properties() -> None:
    f, y = _data(51, 240, 10, 4, signal=0.35)
    boosted = ped_sfda(f, y)
    assert boosted > sfda_prob(f, y)  # classes pushed apart are easier to tell apart
    weak, _ = _data(51, 240, 10, 4, signal=0.1)
    assert boosted > ped_sfda(weak, y)
    rng = np.random.default_rng(2)
    far = np.concatenate([np.zeros((60, 4)), np.full((60, 4), 50.0)]) + rng.standard_normal(
        (120, 4)
    )
    yf = np.repeat([0, 1], 60)
    assert ped_sfda(far, yf) == pytest.approx(sfda_prob(far, yf), rel=1e-12)  # no overlap, no move


# ----------------------------------------------------------------------------- LogME float32
def test_logme_float32_tracks_float64_on_mean_dominated_spectra() -> None:
    """ReLU-like features: large common mean, power-law spectrum. The Gram matrix is formed in
    float32 from centred features and eigendecomposed in float64, so float32 input stays close."""
    rng = np.random.default_rng(15)
    n, d, c = 3000, 256, 10
    y = rng.integers(0, c, n)
    spec = np.arange(1, d + 1) ** -0.8
    h = 0.3 * (rng.standard_normal((c, d)) * spec)[y] + (rng.standard_normal((n, d)) * spec) @ (
        _rotation(15, d).T * 0.5
    )
    f = np.maximum(h + 0.05, 0.0)
    assert logme(f.astype(np.float32), y) == pytest.approx(logme(f, y), rel=1e-5)


# ---------------------------------------------------------------------------- registry / input
def test_new_estimators_are_registered() -> None:
    names = ("sfda", "sfda_prob", "ped_logme", "ped_sfda", "gbc", "gbc_spherical")
    for name in names:
        assert ESTIMATORS[name].input == "features" and not ESTIMATORS[name].set_level
    for name in ("ncti", "etran"):
        assert ESTIMATORS[name].set_level
    assert ESTIMATORS["sfda"].fn is sfda and ESTIMATORS["ncti"].fn is ncti
    assert ESTIMATORS["sfda_prob"].fn is sfda_prob and ESTIMATORS["ped_sfda"].fn is ped_sfda
    assert ESTIMATORS["gbc"].fn is gbc and ESTIMATORS["gbc_spherical"].fn is gbc_spherical
    assert "diagonal" in ESTIMATORS["gbc"].doc and "spherical" in ESTIMATORS["gbc_spherical"].doc


_SINGLE = [
    sfda,
    sfda_prob,
    ped_logme,
    ped_sfda,
    gbc_spherical,
    lambda f, y: gbc_details(f, y)[0],
    lambda f, y: gbc_details(f, y, gaussian="spherical")[0],
]
_TERMS = [ncti_terms, etran_terms]
_SETS = [ncti, etran]


@pytest.mark.parametrize("fn", _SINGLE + _TERMS + [lambda f, y, s=s: s([f, f], y) for s in _SETS])
def test_bad_inputs_raise_value_error(fn) -> None:
    f, y = _data(16, 40, 6, 3)
    bad = f.copy()
    bad[3, 2] = np.nan
    with pytest.raises(ValueError, match="NaN or inf"):
        fn(bad, y)
    with pytest.raises(ValueError, match="entries"):
        fn(f, y[:-1])
    with pytest.raises(ValueError, match="at least 2 distinct classes"):
        fn(f, np.zeros(40, dtype=int))
    with pytest.raises(ValueError, match="2-D"):
        fn(f[:, 0], y)


@pytest.mark.parametrize("fn", _SETS)
def test_set_level_rejects_bad_candidate_lists(fn) -> None:
    f, y = _data(17, 40, 6, 3)
    with pytest.raises(ValueError, match="same N samples"):
        fn([f, f[:-1]], y)
    with pytest.raises(ValueError, match="empty"):
        fn([], y)
    with pytest.raises(ValueError, match="list of feature matrices"):
        fn(f, y)
    out = fn([torch.from_numpy(f), f.astype(np.float32)], y)  # mixed array types are fine
    assert isinstance(out, np.ndarray) and out.shape == (2,)


def test_parameter_checks() -> None:
    f, y = _data(18, 40, 6, 3)
    with pytest.raises(ValueError, match="shrinkage"):
        sfda(f, y, shrinkage=1.5)
    with pytest.raises(ValueError, match="n_components"):
        gbc(f, y, n_components=0)
    with pytest.raises(ValueError, match="n_components"):
        gbc_spherical(f, y, n_components=0)
    with pytest.raises(ValueError, match="gaussian"):
        gbc_details(f, y, gaussian="full")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="exact_logdet"):
        gbc_details(f, y, exact_logdet=True)
    with pytest.raises(ValueError, match="shrinkage"):
        sfda_prob(f, y, shrinkage=-0.1)
    with pytest.raises(ValueError, match="energy_fraction"):
        etran_terms(f, y, energy_fraction=0.0)
    with pytest.raises(ValueError, match="columns"):
        ped_features(f, y, reference=f[:, :3])
