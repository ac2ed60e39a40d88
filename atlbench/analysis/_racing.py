"""Racing for "which recipe is best" on a target and budget: stop seeding a recipe shown worse.

Racing (Maron & Moore 1994, "Hoeffding races", NIPS 6; Birattari et al. 2002, "A racing
algorithm for configuring metaheuristics", GECCO) evaluates candidates side by side and drops
one as soon as the data show it is worse than the current leader, so seeds go to the
candidates that may still win. Here a candidate is a recipe (source, strategy) of a
``(target, budget)`` race, compared with the leader (the best mean over the seeds both ran) by
the paired seed-level t-test, one-sided (Student 1908).

Error budget. The leader is chosen from the data, so the true best ``b`` is dropped only if at
some look ``k`` it tests worse than *some* other candidate ``j``. Testing at level
``alpha w_k / (K - 1)`` (``K`` candidates, ``w_k`` the share of alpha the seed schedule spends
at look ``k``, :mod:`atlbench.analysis._sequential`) bounds that by
``sum_k sum_j alpha w_k / (K - 1) = alpha``, whatever the looks or the leader did: the same
alpha, spent the same way, as the sweep's verdicts. Equivalently, the race p-value
``min_k p_k (K - 1) / w_k`` is below alpha. Simulated: tests/unit/test_sequential.py.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from atlbench.analysis._sequential import sequential_pvalue
from atlbench.seeds import SeedSchedule

__all__ = ["RACE_COLUMNS", "race", "race_pvalues"]

RACE_COLUMNS = [
    "target", "budget", "source", "strategy", "leader", "n_seeds", "p_race", "eliminated",
]  # fmt: skip


def _one_sided_p(diff: np.ndarray) -> float:
    """P-value of H0: mean diff >= 0 against "the candidate is worse" (paired t)."""
    n = diff.size
    if n < 2:
        return float("nan")
    sd = float(diff.std(ddof=1))
    if not sd > 0:
        return float("nan")  # no spread: nothing to test, never p = 0
    t = float(diff.mean()) / (sd / np.sqrt(n))
    return float(stats.t.cdf(t, n - 1))


def race_pvalues(
    acc: np.ndarray, seeds: np.ndarray, schedule: SeedSchedule
) -> tuple[np.ndarray, int]:
    """Race p-values of the candidates (columns of ``acc``, rows are ``seeds``; NaN where a
    candidate has no cell) and the index of the leader at the last look reached."""
    k_cand = acc.shape[1]
    per_look: list[list[float]] = [[] for _ in range(k_cand)]
    leader = 0
    for k in schedule.reached(seeds.tolist()):
        block = acc[np.isin(seeds, schedule.seeds(schedule.looks[k]))]
        counts = np.isfinite(block).sum(axis=0)
        means = np.where(counts > 0, np.nansum(block, axis=0) / np.maximum(counts, 1), -np.inf)
        leader = int(np.argmax(means))
        for cand in range(k_cand):
            if cand == leader:
                per_look[cand].append(np.nan)
                continue
            both = ~np.isnan(block[:, cand]) & ~np.isnan(block[:, leader])
            diff = block[both, cand] - block[both, leader]
            per_look[cand].append(_one_sided_p(diff) * (k_cand - 1))
    weights = schedule.weights
    return np.array([sequential_pvalue(ps, weights) for ps in per_look]), leader


def race(
    scores: pd.DataFrame, schedule: SeedSchedule, alpha: float = 0.05, metric: str = "test_acc"
) -> pd.DataFrame:
    """Per ``(target, budget)``, each recipe's race p-value against the leader, and whether it
    is eliminated (p_race < alpha).

    ``scores`` has one row per cell: target, budget, source, strategy, seed and ``metric``
    (finished transfer and baseline cells; random-init controls are not candidates).
    """
    rows: list[dict[str, object]] = []
    for (target, budget), race_rows in scores.groupby(["target", "budget"], sort=False):
        wide = race_rows.pivot_table(
            index="seed", columns=["source", "strategy"], values=metric, aggfunc="mean"
        )
        candidates = list(wide.columns)
        if len(candidates) < 2:
            continue
        acc = wide.to_numpy(dtype=float)
        pvals, leader = race_pvalues(acc, wide.index.to_numpy(dtype=int), schedule)
        lead = candidates[leader]
        for j, cand in enumerate(candidates):
            p = float(pvals[j])
            rows.append(
                {
                    "target": target,
                    "budget": budget,
                    "source": cand[0],
                    "strategy": cand[1],
                    "leader": f"{lead[0]} / {lead[1]}",
                    "n_seeds": int(np.isfinite(acc[:, j]).sum()),
                    "p_race": p,
                    "eliminated": bool(np.isfinite(p) and p < alpha),
                }
            )
    return pd.DataFrame(rows, columns=RACE_COLUMNS)
