"""P-values and intervals for an estimate whose error is a seed part plus a test-set part.

The error of a mean over seeds x test examples (see :mod:`atlbench.analysis._crossed`) is
``W = s1 * T(d1) + s2 * T(d2)``: a seed part, whose scale ``s1`` is estimated from ``n`` seeds
(``d1 = n - 1`` degrees of freedom, so Student t with 2 df at 3 seeds), plus a test-set part
estimated from hundreds of examples (``d2 = m - 1``, nearly normal). That is the Behrens-Fisher
problem. Its fiducial solution (Behrens 1929; Fisher 1935, Annals of Eugenics 6:391-398) takes
the distribution of ``W`` with both T independent. It is conservative (Robinson 1976, Annals of
Statistics 4:963-971, "Properties of Student's t and of the Behrens-Fisher solution to the two
means problem"): its p-values are never too small in the tail, which is what Holm and BH need
when they compare p-values with alpha / m. Welch-Satterthwaite's single t is closer to nominal
at 5% but, with 2 df on the seed side, rejects 1.6 times too often at p < 0.005
(tests/unit/test_coverage.py).

``s2 = 0`` is the ordinary Student t: the seed-level paired t-test and its interval, exactly.
Everything here is vectorised: arguments broadcast, results are float arrays, NaN where the
scales are undefined or both zero (no spread: nothing to test, never p = 0).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import chdtri, ndtr, stdtr, stdtrit


def _rule(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Legendre on (0, 1), nodes clustered at both ends (u = (1 - cos(pi v)) / 2): the
    tail of W comes from chi-square draws near 0, where the integrand varies like sqrt(u)."""
    v, w = np.polynomial.legendre.leggauss(size)
    angle = np.pi * (v + 1.0) / 2.0
    return (1.0 - np.cos(angle)) / 2.0, w / 2.0 * np.pi / 2.0 * np.sin(angle)


# A chi-square with few df (the seeds) needs 48 nodes; with >= 30 df (the test examples) it is
# concentrated and 16 do; df = inf (a normal) needs one.
_RULES = {"small": _rule(48), "large": _rule(16), "inf": (np.full(1, 0.5), np.ones(1))}
_LARGE_DF = 30.0
_BLOCK = 2_000_000  # doubles per block of the product rule (16 MB)


def _cdf(df: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Student t CDF; ``stdtr`` gives the normal CDF for df = inf."""
    return np.asarray(stdtr(df, x), dtype=float)


def _ppf(df: np.ndarray, q: np.ndarray) -> np.ndarray:
    return np.asarray(stdtrit(df, q), dtype=float)


def _arrays(*values: ArrayLike) -> list[np.ndarray]:
    return [np.array(v, dtype=float) for v in np.broadcast_arrays(*values)]


def _valid(s1: np.ndarray, d1: np.ndarray, s2: np.ndarray, d2: np.ndarray) -> np.ndarray:
    ok1 = np.isfinite(s1) & (s1 >= 0) & ((s1 == 0) | (d1 > 0))
    ok2 = np.isfinite(s2) & (s2 >= 0) & ((s2 == 0) | (d2 > 0))
    valid: np.ndarray = ok1 & ok2 & (s1 + s2 > 0)
    return valid


def _kind(df: float) -> str:
    return "inf" if np.isinf(df) else "large" if df >= _LARGE_DF else "small"


class _Mixture:
    """``W = s1 T(d1) + s2 T(d2)`` for rows with both scales > 0 (1-D arrays).

    A Student t is a normal whose variance is ``d / V`` with ``V ~ chi2(d)``, so conditionally on
    the two chi-square draws W is normal with variance ``s1^2 d1 / V1 + s2^2 d2 / V2``. P(W > x)
    is that normal tail averaged over a product Gauss-Legendre rule in the two chi-square
    probabilities (48 nodes for few df, 16 for >= 30): a smooth, bounded integrand. Against
    adaptive quadrature of the convolution the relative error is below 3e-5 for P > 0.01, 2e-4
    for P > 0.001 and 1e-3 for P > 1e-4 (tests/unit/test_analysis_stats.py).
    """

    def __init__(self, s1: np.ndarray, d1: np.ndarray, s2: np.ndarray, d2: np.ndarray) -> None:
        self.groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        kinds = np.array([f"{_kind(a)}|{_kind(b)}" for a, b in zip(d1, d2, strict=True)])
        for kind in np.unique(kinds):
            idx = np.flatnonzero(kinds == kind)
            k1, k2 = kind.split("|")
            (u1, w1), (u2, w2) = _RULES[k1], _RULES[k2]
            var1 = s1[idx, None] ** 2 * _inverse_chi2(d1[idx], u1)
            var2 = s2[idx, None] ** 2 * _inverse_chi2(d2[idx], u2)
            var = var1[:, :, None] + var2[:, None, :]
            self.groups.append((idx, np.sqrt(var), w1[:, None] * w2[None, :]))
        self.size = s1.size

    def rows(self, idx: np.ndarray) -> _Mixture:
        """The same mixture restricted to some rows (no quantiles recomputed)."""
        out = object.__new__(_Mixture)
        pos = np.full(self.size, -1)
        pos[idx] = np.arange(idx.size)
        out.groups = []
        for rows, sd, ww in self.groups:
            keep = pos[rows] >= 0
            out.groups.append((pos[rows][keep], sd[keep], ww))
        out.size = idx.size
        return out

    def _average(self, x: np.ndarray, density: bool) -> np.ndarray:
        out = np.empty(x.size)
        for rows, sd, ww in self.groups:
            step = max(1, _BLOCK // max(1, ww.size))
            for lo in range(0, rows.size, step):
                r, s = rows[lo : lo + step], sd[lo : lo + step]
                z = x[r, None, None] / s
                vals = np.exp(-0.5 * z**2) / (np.sqrt(2.0 * np.pi) * s) if density else ndtr(-z)
                out[r] = (vals * ww).sum(axis=(1, 2))
        return out

    def sf(self, x: np.ndarray) -> np.ndarray:
        return self._average(x, density=False)

    def pdf(self, x: np.ndarray) -> np.ndarray:
        return self._average(x, density=True)


def _inverse_chi2(df: np.ndarray, u: np.ndarray) -> np.ndarray:
    """``d / V`` at chi-square upper-tail probabilities ``u``, per row (1 for d = inf)."""
    if np.all(np.isinf(df)):
        return np.ones((df.size, u.size))
    return np.asarray(df[:, None] / chdtri(df[:, None], u[None, :]), dtype=float)


def error_sf(
    x: ArrayLike, s1: ArrayLike, d1: ArrayLike, s2: ArrayLike = 0.0, d2: ArrayLike = np.inf
) -> np.ndarray:
    """P(s1 * T(d1) + s2 * T(d2) > x), T independent Student t (``d = inf``: normal)."""
    x_, s1_, d1_, s2_, d2_ = (a.ravel() for a in _arrays(x, s1, d1, s2, d2))
    shape = np.broadcast_shapes(*(np.shape(v) for v in (x, s1, d1, s2, d2)))
    out = np.full(x_.shape, np.nan)
    ok = _valid(s1_, d1_, s2_, d2_) & np.isfinite(x_)
    only_t = ok & (s2_ == 0)  # exact Student t (and exact normal when s1 == 0)
    out[only_t] = _cdf(d1_[only_t], -x_[only_t] / s1_[only_t])
    only_2 = ok & (s1_ == 0) & (s2_ > 0)
    out[only_2] = _cdf(d2_[only_2], -x_[only_2] / s2_[only_2])
    both = ok & (s1_ > 0) & (s2_ > 0)
    if both.any():
        out[both] = _Mixture(s1_[both], d1_[both], s2_[both], d2_[both]).sf(x_[both])
    return out.reshape(shape)


def error_quantile(
    tail: ArrayLike, s1: ArrayLike, d1: ArrayLike, s2: ArrayLike = 0.0, d2: ArrayLike = np.inf
) -> np.ndarray:
    """The x > 0 with ``error_sf(x) = tail`` (tail < 1/2): safeguarded Newton in a bracket.

    Bracket: 0 and ``s1 t_{d1}(1 - tail/2) + s2 t_{d2}(1 - tail/2)`` (a union bound gives
    ``P(W > hi) <= tail``).
    """
    q, s1_, d1_, s2_, d2_ = (a.ravel() for a in _arrays(tail, s1, d1, s2, d2))
    shape = np.broadcast_shapes(*(np.shape(v) for v in (tail, s1, d1, s2, d2)))
    out = np.full(q.shape, np.nan)
    ok = _valid(s1_, d1_, s2_, d2_) & (q > 0) & (q < 0.5)
    only_t = ok & (s2_ == 0)
    out[only_t] = s1_[only_t] * _ppf(d1_[only_t], 1.0 - q[only_t])
    only_2 = ok & (s1_ == 0) & (s2_ > 0)
    out[only_2] = s2_[only_2] * _ppf(d2_[only_2], 1.0 - q[only_2])
    both = np.flatnonzero(ok & (s1_ > 0) & (s2_ > 0))
    if both.size:
        a, b, c, d, t = s1_[both], d1_[both], s2_[both], d2_[both], q[both]
        lo = np.zeros(both.size)
        hi = a * _ppf(b, 1 - t / 2) + c * _ppf(d, 1 - t / 2)
        # Start from the normal approximation with the summed variance, clipped into the bracket.
        x = np.clip(np.sqrt(a**2 + c**2) * _ppf(np.full(t.shape, np.inf), 1 - t), lo, hi)
        active = np.arange(both.size)
        mix = _Mixture(a, b, c, d)
        for _ in range(40):
            sub = mix.rows(active)
            xa = x[active]
            f = sub.sf(xa) - t[active]
            la = np.where(f > 0, xa, lo[active])
            ha = np.where(f > 0, hi[active], xa)
            step = xa + f / np.maximum(sub.pdf(xa), 1e-300)
            new = np.where((step >= la) & (step <= ha), step, 0.5 * (la + ha))
            lo[active], hi[active], x[active] = la, ha, new
            active = active[np.abs(new - xa) > 1e-10 * np.abs(xa)]
            if active.size == 0:
                break
        out[both] = x
    return out.reshape(shape)


def interval(
    estimate: ArrayLike,
    s1: ArrayLike,
    d1: ArrayLike,
    s2: ArrayLike = 0.0,
    d2: ArrayLike = np.inf,
    level: float = 0.95,
) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided ``level`` interval ``estimate -/+ x`` with ``P(|W| > x) = 1 - level``."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    est = np.asarray(estimate, dtype=float)
    half = error_quantile((1.0 - level) / 2.0, s1, d1, s2, d2)
    return est - half, est + half


def p_value(
    estimate: ArrayLike, s1: ArrayLike, d1: ArrayLike, s2: ArrayLike = 0.0, d2: ArrayLike = np.inf
) -> np.ndarray:
    """Two-sided p-value of H0: true value = 0, ``2 P(W > |estimate|)`` (capped at 1)."""
    est = np.asarray(estimate, dtype=float)
    return np.minimum(2.0 * error_sf(np.abs(est), s1, d1, s2, d2), 1.0)


def tost_pvalue(
    estimate: ArrayLike,
    s1: ArrayLike,
    d1: ArrayLike,
    s2: ArrayLike = 0.0,
    d2: ArrayLike = np.inf,
    *,
    margin: float,
) -> np.ndarray:
    """Two one-sided tests (Schuirmann 1987, J. Pharmacokin. Biopharm. 15:657-680).

    H0: |true value| >= margin. ``p = max(P(W > est + margin), P(W > margin - est))``; a p below
    alpha claims the value lies inside ``(-margin, margin)``. With ``s2 = 0`` it is statsmodels'
    ``ttost_paired`` (lower bound ``-margin``, upper ``margin``).
    """
    if not margin > 0:
        raise ValueError(f"an equivalence margin must be > 0, got {margin}")
    est = np.asarray(estimate, dtype=float)
    lower = error_sf(est + margin, s1, d1, s2, d2)
    upper = error_sf(margin - est, s1, d1, s2, d2)
    p: np.ndarray = np.maximum(lower, upper)
    return p
