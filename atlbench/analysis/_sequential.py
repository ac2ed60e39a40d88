"""Sequential seeds: the looks of a seed schedule, alpha spending, and a p-value valid under any
stopping.

A schedule ``{start: 3, step: 2, max: 15}`` looks at the data after 3, 5, ..., 15 seeds, and a
comparison gets more seeds only while it is undecided. Testing at 5% at every look would call about
1 in 5 null comparisons significant by the fifth look (Armitage, McPherson & Rowe 1969, JRSS-A
132:235-244), so each look ``k`` spends a share ``w_k`` of alpha, fixed in advance by a spending
function of the information fraction ``t = n_k / max`` (Lan & DeMets 1983, Biometrika 70:659-663):
the Hwang-Shih-DeCani family with ``gamma = -4``, ``(1 - exp(4 t)) / (1 - e^4)`` (Stat Med
9:1439-1445, 1990), which behaves like O'Brien and Fleming's boundaries. It keeps 2-4% of alpha for
the first look (in the quickstart it decided 3 of 72 comparisons, gains of 65-78 points) and most
for the last looks, where the small gains are decided (78% at the last of 3, 7 and 11 seeds; 42% at
the last of 3, 5, ..., 15). Simulated on the mixed gains of tests/unit/test_sequential.py it
decided more comparisons per seed than Pocock-type spending (``ln(1 + (e - 1) t)``, which spends a
third of alpha at the first look and so leaves the last one only a quarter): on schedule 3/4/11,
51.8% against 46.5% of the comparisons, 6.6 against 6.4 decisions per 100 seeds (Gaussian
generator), and on small gains only 29.7% against 22.3%.

The looks are combined by the union (Bonferroni) bound, not by exact group-sequential
boundaries: the sequential p-value ``p* = min_k p_k / w_k`` (capped at 1) satisfies
``P(p* <= a) <= sum_k a w_k = a`` under the null for every ``a``, however the looks depend on
each other and whatever decided to stop (a stop only removes later looks, which can only raise
``p*``). Exact boundaries (Jennison & Turnbull 2000, ch. 7) assume the statistic is a Gaussian
process in the information; ours is a Behrens-Fisher statistic over seeds x test examples with 2
to 14 seed df, for which that holds only roughly. The union bound is conservative (simulated
family-wise error 1.3-3.3% at 5%: tests/unit/test_sequential.py) but valid. Because ``p*`` is
a valid p-value, Holm or BH over the whole family still controls the family-wise error (or FDR).

An anytime-valid confidence sequence (Howard et al. 2021, Ann. Statist. 49:1055-1080;
Waudby-Smith & Ramdas 2023, JRSS-B 86:1-27) would allow a look after every seed, but a betting
sequence for a gain bounded in [-1, 1] at most doubles its wealth per seed, so it cannot exclude
0 at 95% before 5 seeds even when every seed agrees (2^4 < 20): at these seed counts it would
decide less, not more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import stats

from atlbench.seeds import SeedSchedule, spending

__all__ = ["FUTILITY_Z", "SeedSchedule", "futile", "sequential_pvalue", "spending"]


def sequential_pvalue(pvalues: Sequence[float] | np.ndarray, weights: np.ndarray) -> float:
    """``min_k p_k / w_k`` over the looks taken (NaN looks skipped), capped at 1; NaN if none.

    ``pvalues[k]`` is the ordinary p-value at look ``k`` and ``weights[k]`` that look's share of
    alpha; valid under any stopping and any dependence between looks (the union bound).
    """
    p = np.asarray(pvalues, dtype=float)
    w = np.asarray(weights, dtype=float)[: p.size]
    ok = np.isfinite(p) & (w > 0)
    if not ok.any():
        return float("nan")
    return float(min(1.0, float(np.min(p[ok] / w[ok]))))


FUTILITY_Z = 1.2816  # Phi^-1(0.9): conditional power below about 10%


def futile(
    gain: float,
    se: float,
    n: int,
    schedule: SeedSchedule,
    family: float,
    alpha: float = 0.05,
    margin: float | None = None,
) -> bool:
    """Whether a comparison open at ``n`` seeds would still miss a decision at ``max`` seeds if
    its estimate stayed where it is (conditional power under the current trend below ~10%;
    Lan, Simon & Halperin 1982, "Stochastically curtailed tests", Comm. Stat. C 1:207-219).

    The projected z at ``max`` seeds is ``|gain| / se * sqrt(max / n)`` (the standard error
    shrinks as 1 / sqrt(seeds)); the last look's bar is the normal quantile of its share of
    alpha divided by ``family``, the correction's divisor for the next rejection (Holm:
    ``m - r``; Benjamini-Hochberg: ``m / (r + 1)``, with ``r`` comparisons already rejected).
    With an equivalence ``margin``, a comparison is futile only if equivalence is out of reach
    too. Stopping for futility only removes looks, so the sequential p-values stay valid (it is
    non-binding).
    """
    if not (np.isfinite(gain) and np.isfinite(se) and se > 0) or n >= schedule.max:
        return False
    shrink = float(np.sqrt(schedule.max / n))
    bar = float(stats.norm.isf(alpha * schedule.weights[-1] / (2.0 * max(family, 1))))
    reach = bar - FUTILITY_Z
    if abs(gain) / se * shrink >= reach:
        return False
    return margin is None or (margin - abs(gain)) / se * shrink < reach
