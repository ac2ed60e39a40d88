"""Multiplicity corrections over one table of comparisons: Holm (default) and Benjamini-Hochberg.

A report table holds many (source, target, strategy, budget) comparisons; without a correction
about 5% of null comparisons come out "significant" at alpha = 0.05. Holm (1979, Scand. J.
Statist. 6:65-70) controls the family-wise error under any dependence; Benjamini & Hochberg
(1995, JRSS-B 57:289-300) controls the false discovery rate, is less strict, and needs
independence or positive dependence (PRDS) among the tests. NaN p-values (comparisons with
nothing to test) stay NaN and do not count towards the family size m.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

CORRECTIONS = {"holm": "holm", "bh": "benjamini-hochberg"}


def _finite(pvalues: Sequence[float] | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p = np.asarray(pvalues, dtype=float)
    return p, np.full(p.shape, np.nan), np.isfinite(p)


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1)."""
    p, out, ok = _finite(pvalues)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv, kind="stable")
    scaled = (m - np.arange(m)) * pv[order]
    fill = np.empty(m)
    fill[order] = np.minimum(np.maximum.accumulate(scaled), 1.0)
    out[ok] = fill
    return out


def benjamini_hochberg(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (step-up: min over k >= i of m p_(k) / k, cap 1)."""
    p, out, ok = _finite(pvalues)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv, kind="stable")
    scaled = m * pv[order] / np.arange(1, m + 1)
    fill = np.empty(m)
    fill[order] = np.minimum(np.minimum.accumulate(scaled[::-1])[::-1], 1.0)
    out[ok] = fill
    return out


def adjust_pvalues(pvalues: Sequence[float] | np.ndarray, correction: str = "holm") -> np.ndarray:
    """Adjusted p-values by ``correction``: "holm" or "bh" (Benjamini-Hochberg)."""
    if correction == "holm":
        return holm(pvalues)
    if correction == "bh":
        return benjamini_hochberg(pvalues)
    raise ValueError(f"correction must be one of {sorted(CORRECTIONS)}, got {correction!r}")
