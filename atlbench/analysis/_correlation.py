"""How well transferability estimators rank sources, against measured fine-tuning accuracy.

Estimates are scored per ``(source, target, budget, seed)`` on the budget's labelled subset, and
the truth is measured on the same subset, so the unit of replication is the seed: agreement is
computed between seed-mean score and seed-mean truth, its interval resamples seeds, and its
p-value permutes which truth belongs to which source. With 3 or 4 sources a rank correlation
takes few distinct values (e.g. weighted tau of 3 sources), so such rows are flagged
``indicative``.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import cast

import numpy as np
import pandas as pd
from scipy import stats as sps

from atlbench.analysis._records import TRANSFER, done_rows, require_columns

MIN_SOURCES = 3
FIRM_SOURCES = 5
EXACT_PERMUTATION_SOURCES = 6  # 6! = 720 orderings: enumerate; beyond, sample
TRUTH_COLUMNS = ["source", "target", "budget", "seed", "strategy", "truth"]
AGREEMENT_COLUMNS = [
    "target",
    "budget",
    "estimator",
    "n_sources",
    "n_seeds",
    "weighted_tau",
    "tau_ci_low",
    "tau_ci_high",
    "p_value",
    "pearson_r",
    "rel_top1",
    "indicative",
    "reason",
]


def ground_truth(
    records: pd.DataFrame, truth: str = "finetune", metric: str = "test_acc"
) -> pd.DataFrame:
    """Measured transfer per ``(source, target, budget, seed)``: what an estimator predicts.

    Only transfer cells (``role == "transfer"``) of one recipe family count, never a maximum over
    recipes that mixes in kNN or linear probes (an estimator of fine-tuning performance would be
    scored against a probe wherever the probe happens to win).

    ``truth`` is first read as a registered ``strategy_name`` (default "finetune"). When several
    suite strategies share it (e.g. two learning-rate variants), each ``(source, target, budget)``
    takes the variant with the best seed-mean ``metric`` (ties: first label alphabetically) and
    all its seeds: the best-tuned fine-tune of each source, as in the model-selection protocol of
    You et al. (ICML 2021, LogME, sec. 5), where each pre-trained model's fine-tuning
    hyper-parameters are tuned separately. If no cell has that ``strategy_name``, ``truth`` is a
    strategy label and that strategy alone is used.

    Columns: source, target, budget, seed, strategy (the variant used), truth.
    """
    rows = done_rows(records, metric)
    require_columns(rows, ["role"], "ground_truth")
    rows = rows.loc[rows["role"].eq(TRANSFER)]
    by_name = "strategy_name" in rows and rows["strategy_name"].eq(truth).any()
    cand = rows.loc[rows["strategy_name"].eq(truth)] if by_name else rows
    cand = cand.loc[cand["strategy"].eq(truth)] if not by_name else cand
    if cand.empty:
        return pd.DataFrame(columns=TRUTH_COLUMNS)
    keys = ["source", "target", "budget"]
    per_seed = cand.groupby([*keys, "strategy", "seed"], as_index=False)[metric].mean()
    means = per_seed.groupby([*keys, "strategy"], as_index=False)[metric].mean()
    means = means.sort_values([*keys, metric, "strategy"], ascending=[True] * 3 + [False, True])
    best = means.drop_duplicates(keys)[[*keys, "strategy"]]
    out = per_seed.merge(best, on=[*keys, "strategy"]).rename(columns={metric: "truth"})
    table: pd.DataFrame = out[TRUTH_COLUMNS].sort_values(
        ["target", "budget", "source", "seed"], ignore_index=True
    )
    return table


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; NaN when either side is constant (no linear relation is defined)."""
    da, db = a - a.mean(), b - b.mean()
    denom = np.sqrt((da @ da) * (db @ db))
    return float(da @ db / denom) if denom > 0 else float("nan")


def _tau(score: np.ndarray, truth: np.ndarray) -> float:
    """Weighted tau (Vigna 2015, WWW, "A weighted correlation index for rankings with ties").

    Hyperbolic rank weights: swaps among the top sources cost more than at the bottom, matching
    the use (pick the best source). NaN when either side is constant.
    """
    if score.size < 2 or np.ptp(score) == 0 or np.ptp(truth) == 0:
        return float("nan")
    return float(sps.weightedtau(score, truth).statistic)


def _rel_top1(score: np.ndarray, truth: np.ndarray) -> float:
    """Truth of the top-scored source over the best truth (ties for the top score averaged)."""
    best = float(truth.max())
    top = float(truth[score == score.max()].mean())
    return top / best if best > 0 else float("nan")


def _permutation_p(
    score: np.ndarray, truth: np.ndarray, observed: float, n_perm: int, rng: np.random.Generator
) -> float:
    """One-sided P(tau >= observed) when truths are shuffled among sources (H1: tau > 0).

    Exact over all n! pairings up to ``EXACT_PERMUTATION_SOURCES`` sources; beyond, ``n_perm``
    random pairings with the (1 + k) / (1 + B) estimate of Phipson & Smyth (2010, Stat. Appl.
    Genet. Mol. Biol. 9(1):39), which is never 0.
    """
    tol = 1e-12 * max(1.0, abs(observed))
    if score.size <= EXACT_PERMUTATION_SOURCES:
        taus = [_tau(score, truth[list(p)]) for p in itertools.permutations(range(score.size))]
        return float(np.mean(np.asarray(taus) >= observed - tol))
    hits = sum(_tau(score, rng.permutation(truth)) >= observed - tol for _ in range(n_perm))
    return (1.0 + hits) / (1.0 + n_perm)


def _seed_bootstrap(
    s: np.ndarray, t: np.ndarray, n_boot: int, level: float, rng: np.random.Generator
) -> tuple[float, float]:
    """Percentile CI of tau when seeds are resampled (same seeds for scores and truths).

    A replicate's means depend only on the multiset of drawn seeds, and with a few seeds there
    are few multisets (10 for 3 seeds): each distinct one is evaluated once, so 1,000 draws cost
    a handful of tau computations, with exactly the replicates of the plain loop.
    """
    k = s.shape[1]
    reps = []
    seen: dict[tuple[int, ...], float | None] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a source with none of the drawn seeds
        for _ in range(n_boot):
            idx = rng.integers(0, k, size=k)
            multiset = tuple(sorted(np.asarray(idx).tolist()))
            if multiset not in seen:
                sm, tm = np.nanmean(s[:, idx], axis=1), np.nanmean(t[:, idx], axis=1)
                ok = np.isfinite(sm) & np.isfinite(tm)
                seen[multiset] = _tau(sm[ok], tm[ok]) if ok.sum() >= MIN_SOURCES else None
            if seen[multiset] is not None:
                reps.append(seen[multiset])
    reps_arr = np.asarray(reps, dtype=float)
    reps_arr = reps_arr[np.isfinite(reps_arr)]
    if reps_arr.size < 2:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(reps_arr, [tail, 1.0 - tail])
    return float(low), float(high)


def estimator_agreement(
    scores: pd.DataFrame,
    records: pd.DataFrame | None,
    truth: str | pd.DataFrame = "finetune",
    metric: str = "test_acc",
    level: float = 0.95,
    n_bootstrap: int = 1000,
    n_permutations: int = 2000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per ``(target, budget, estimator)``: agreement of estimator scores with measured transfer.

    ``scores`` has columns source, target, estimator, budget, seed, score (higher = predicted
    better; repeated rows are averaged). ``truth`` is a strategy name or label (see
    ``ground_truth``) or a ready frame with columns source, target, budget, seed, truth (then
    ``records`` may be None). Scores and truths are matched on (source, target, budget, seed).

    Columns: target, budget, estimator, n_sources, n_seeds, weighted_tau (of seed-mean score vs
    seed-mean truth, ``scipy.stats.weightedtau``), tau_ci_low/high (percentile bootstrap over
    seeds: resample seeds, recompute both means and tau; with 3 seeds only 10 distinct resamples
    exist, so the interval is coarse), p_value (one-sided permutation test of tau > 0, exact up
    to 6 sources), pearson_r, rel_top1 (truth of the top-scored source / best truth),
    indicative (True with fewer than 5 sources), reason. Metrics are NaN with fewer than 3
    sources; tau and r are NaN when scores or truths are constant.
    """
    require_columns(scores, ["source", "target", "estimator", "budget", "seed", "score"], "scores")
    keys = ["source", "target", "budget", "seed"]
    if isinstance(truth, pd.DataFrame):
        require_columns(truth, [*keys, "truth"], "a truth frame")
        gt = truth[[*keys, "truth"]]
    else:
        if records is None:
            raise ValueError("records are needed unless truth is given as a DataFrame")
        gt = ground_truth(records, truth, metric)[[*keys, "truth"]]
    gt = cast(pd.DataFrame, gt.groupby(keys, as_index=False)["truth"].mean())  # a frame
    sc = scores.assign(score=pd.to_numeric(scores["score"], errors="coerce"))
    sc = sc.loc[np.isfinite(sc["score"].to_numpy(dtype=float))]
    sc = sc.groupby([*keys, "estimator"], as_index=False)["score"].mean()
    merged = sc.merge(gt, on=keys, how="inner")
    merged = merged.loc[np.isfinite(merged["truth"].to_numpy(dtype=float))]
    rng = np.random.default_rng(seed)
    rows = []
    for (target, budget, estimator), grp in merged.groupby(
        ["target", "budget", "estimator"], sort=True
    ):
        s = grp.pivot_table(index="source", columns="seed", values="score", aggfunc="mean")
        t = grp.pivot_table(index="source", columns="seed", values="truth", aggfunc="mean")
        t = t.reindex(index=s.index, columns=s.columns)
        n, k = len(s), s.shape[1]
        head = [target, budget, estimator, n, k]
        if n < MIN_SOURCES:
            reason = f"only {n} source(s) with both a score and a truth; need >= {MIN_SOURCES}"
            rows.append([*head, *[np.nan] * 6, True, reason])
            continue
        sv, tv = s.to_numpy(dtype=float), t.to_numpy(dtype=float)
        sm, tm = np.nanmean(sv, axis=1), np.nanmean(tv, axis=1)
        tau, r, rel = _tau(sm, tm), _pearson(sm, tm), _rel_top1(sm, tm)
        reasons = []
        if not np.isfinite(tau):
            reasons.append("scores or truths are constant across sources")
            low = high = p = np.nan
        else:
            p = _permutation_p(sm, tm, tau, n_permutations, rng)
            if k >= 2:
                low, high = _seed_bootstrap(sv, tv, n_bootstrap, level, rng)
            else:
                low = high = np.nan
                reasons.append("one seed: no interval over seeds")
        if n < FIRM_SOURCES:
            n_orders = math.factorial(n)
            reasons.append(
                f"indicative: {n} sources (< {FIRM_SOURCES}) allow only {n_orders} rankings"
            )
        rows.append([*head, tau, low, high, p, r, rel, n < FIRM_SOURCES, "; ".join(reasons)])
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)
