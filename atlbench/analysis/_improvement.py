"""Aggregate views in the style of rliable: P(improvement) with exact intervals, and the IQM.

Agarwal et al. (NeurIPS 2021, "Deep Reinforcement Learning at the Edge of the Statistical
Precipice") recommend the probability of improvement and the interquartile mean (IQM, the mean
of the middle 50% of runs) with stratified-bootstrap intervals over few runs. Here P(improvement)
is scored per *paired* run (a seed fixes the label subset, so a transfer run is compared with its
own partner, not with every partner run), which makes it a binomial proportion: its interval is
the exact Clopper-Pearson one instead of a bootstrap that, with 3 pairs, can only return a few
distinct values and gives [0, 0] for 0 wins.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from atlbench.analysis._pairing import paired_runs

TIE_RULE = (
    "win 1, tie 1/2, loss 0; interval: Clopper-Pearson lower bound with ties as losses, upper "
    "bound with ties as wins (exact whichever way ties are split)"
)


def clopper_pearson(successes: float, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Exact binomial interval (Clopper & Pearson 1934, Biometrika 26:404-413) from beta quantiles.

    ``low = Beta((1-level)/2; k, n-k+1)`` (0 when k = 0), ``high = Beta((1+level)/2; k+1, n-k)``
    (1 when k = n). Equals statsmodels ``proportion_confint(k, n, method="beta")``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    k, n = float(successes), int(trials)
    if n <= 0:
        return float("nan"), float("nan")
    if not 0 <= k <= n:
        raise ValueError(f"successes must be in [0, {n}], got {k}")
    tail = (1.0 - level) / 2.0
    low = 0.0 if k == 0 else float(sps.beta.ppf(tail, k, n - k + 1))
    high = 1.0 if k == n else float(sps.beta.ppf(1.0 - tail, k + 1, n - k))
    return low, high


def probability_of_improvement(
    records: pd.DataFrame,
    by: Sequence[str] | None = None,
    comparison: str = "same_algorithm",
    metric: str = "test_acc",
    level: float = 0.95,
) -> pd.DataFrame:
    """P(transfer run beats its paired partner run) per ``by`` group, with an exact interval.

    Every paired run (one ``(target, seed)``) scores 1 for a win, 1/2 for a tie, 0 for a loss;
    the estimate is the mean score over all pairs of the group (each pair weighs the same; with
    equal seeds per target this is rliable's average over tasks). The interval treats pairs as
    independent Bernoulli draws, so it covers seed-to-seed variation on these targets' test sets,
    not test-set resampling. Ties: see ``TIE_RULE``.

    ``by`` defaults to ``["source", "strategy", "budget"]`` (pooling targets). Columns: the
    ``by`` columns, comparison, n_targets, n_pairs, wins, ties, losses, prob_improvement,
    ci_low, ci_high, interval.
    """
    by = list(by) if by is not None else ["source", "strategy", "budget"]
    cols = [*by, "comparison", "n_targets", "n_pairs", "wins", "ties", "losses"]
    cols += ["prob_improvement", "ci_low", "ci_high", "interval"]
    pairs = paired_runs(records, comparison, metric)
    pairs = pairs.loc[pairs["baseline_value"].notna()]
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    rows = []
    for key, grp in pairs.groupby(by, sort=True):
        gain = grp["gain"].to_numpy(dtype=float)
        wins, ties = int((gain > 0).sum()), int((gain == 0).sum())
        n = gain.size
        low, _ = clopper_pearson(wins, n, level)
        _, high = clopper_pearson(wins + ties, n, level)
        key = key if isinstance(key, tuple) else (key,)
        rows.append(
            [
                *key,
                comparison,
                grp["target"].nunique(),
                n,
                wins,
                ties,
                n - wins - ties,
                (wins + 0.5 * ties) / n,
                low,
                high,
                TIE_RULE,
            ]
        )
    return pd.DataFrame(rows, columns=cols)


def interquartile_mean(
    scores: Sequence[Sequence[float] | np.ndarray] | np.ndarray,
    n_bootstrap: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """IQM of runs pooled over tasks, with a stratified percentile-bootstrap CI (rliable).

    ``scores`` is one array of runs per task (tasks may have different run counts; a 2-D array
    is read as rliable's ``(runs, tasks)`` matrix). The IQM is ``scipy.stats.trim_mean`` with 25%
    cut from each end of the pooled runs, as in rliable's ``metrics.aggregate_iqm``; each
    bootstrap replicate resamples runs with replacement within every task (Agarwal et al. 2021,
    sec. 4). Returns ``(iqm, ci_low, ci_high)``; the bounds are NaN with fewer than 2 runs.
    """
    if isinstance(scores, np.ndarray) and scores.ndim == 2:
        strata = [scores[:, k] for k in range(scores.shape[1])]
    else:
        strata = [np.asarray(s, dtype=float).ravel() for s in scores]
    strata = [s[np.isfinite(s)] for s in strata]
    strata = [s for s in strata if s.size]
    if not strata:
        return float("nan"), float("nan"), float("nan")
    pooled = np.concatenate(strata)
    point = float(sps.trim_mean(pooled, 0.25))
    if pooled.size < 2 or n_bootstrap <= 0:
        return point, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    draws = [s[rng.integers(0, s.size, size=(n_bootstrap, s.size))] for s in strata]
    reps = sps.trim_mean(np.concatenate(draws, axis=1), 0.25, axis=1)
    tail = (1.0 - level) / 2.0
    low, high = np.quantile(reps, [tail, 1.0 - tail])
    return point, float(low), float(high)
