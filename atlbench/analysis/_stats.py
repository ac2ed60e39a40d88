"""Per-recipe accuracy intervals (``summarize``, ``mean_ci``) and the public statistics API.

Every function reads the records frame the store exports (one row per cell) and ignores failed
cells (``status != "done"``) and cells whose metric is missing. Paired gains, P(improvement) and
the multiplicity corrections live in their own modules and are re-exported here, since the
report imports them from ``atlbench.analysis._stats``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
import pandas as pd

from atlbench.analysis._crossed import crossed_mean
from atlbench.analysis._gains import INTERVAL_CROSSED, INTERVAL_SEEDS, VERDICTS, paired_gains
from atlbench.analysis._improvement import (
    clopper_pearson,
    interquartile_mean,
    probability_of_improvement,
)
from atlbench.analysis._inference import interval
from atlbench.analysis._multitest import adjust_pvalues, benjamini_hochberg, holm
from atlbench.analysis._pairing import COMPARISONS, PAIR_KEYS, correctness_rows, paired_runs
from atlbench.analysis._records import GROUP, RECOMMENDED_SEEDS, budget_order, done_rows
from atlbench.record import Verdict

__all__ = [
    "COMPARISONS",
    "GROUP",
    "INTERVAL_ARM",
    "INTERVAL_CROSSED",
    "INTERVAL_SEEDS",
    "PAIR_KEYS",
    "RECOMMENDED_SEEDS",
    "SUMMARY_COLUMNS",
    "VERDICTS",
    "adjust_pvalues",
    "benjamini_hochberg",
    "clopper_pearson",
    "done_rows",
    "holm",
    "interquartile_mean",
    "mean_ci",
    "paired_gains",
    "paired_runs",
    "probability_of_improvement",
    "summarize",
]

INTERVAL_ARM = "seeds + test examples (crossed ANOVA, Satterthwaite t)"
SUMMARY_COLUMNS = [
    *GROUP,
    "arch",
    "n_seeds",
    "mean",
    "std",
    "ci_low",
    "ci_high",
    "n_train",
    "interval",
]


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval ``(mean, low, high)`` of seed-level values.

    The t interval (not a normal one) is used because sweeps have a handful of seeds. Non-finite
    values are dropped; the bounds are NaN when fewer than two values remain. It covers the
    spread of the values only: for accuracies on one shared test set, see ``summarize``.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    x = x[np.isfinite(x)]
    n = x.size
    if n == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if n < 2:
        return mean, float("nan"), float("nan")
    low, high = interval(mean, x.std(ddof=1) / np.sqrt(n), n - 1, level=level)
    if not np.isfinite(low):  # zero spread: the t interval has zero width
        return mean, mean, mean
    return mean, float(low[()]), float(high[()])


def _arm_interval(
    grp: pd.DataFrame, metric: str, correct: Mapping[object, np.ndarray] | None, level: float
) -> tuple[float, float, str]:
    """(ci_low, ci_high, interval) of one recipe's mean ``metric`` over its seeds."""
    values = grp[metric].to_numpy(dtype=float)
    n, mean = values.size, float(values.mean())
    if n < 2:
        return np.nan, np.nan, Verdict.TOO_FEW_SEEDS.value  # no interval: the verdict's words
    reason = ""
    if correct is not None and metric == "test_acc":
        keys = list(grp["key"]) if "key" in grp else [None] * n
        matrix = correctness_rows(keys, list(values), correct)
        if isinstance(matrix, np.ndarray) and matrix.shape[1] >= 2:
            se, df = crossed_mean(matrix).satterthwaite
            low, high = interval(mean, se, df, level=level)
            if not np.isfinite(low):
                return np.nan, np.nan, "no spread across seeds or test examples"
            return float(low[()]), float(high[()]), INTERVAL_ARM
        reason = f" ({matrix})" if isinstance(matrix, str) else ""
    sd = float(values.std(ddof=1))
    if not sd > 0:
        return np.nan, np.nan, "no spread across seeds: interval not estimable"
    low, high = interval(mean, sd / np.sqrt(n), n - 1, level=level)
    return float(low[()]), float(high[()]), INTERVAL_SEEDS + reason


def _median_int(values: pd.Series) -> int | float:
    """Median label count as an int (NaN when none is recorded)."""
    med = float(values.astype("float64").median())
    return round(med) if np.isfinite(med) else np.nan


def summarize(
    records: pd.DataFrame,
    metric: str = "test_acc",
    level: float = 0.95,
    correct: Mapping[object, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Per ``(source, target, strategy, budget)``: seed mean, std and interval of ``metric``.

    Columns: source, target, strategy, budget, arch, n_seeds, mean, std, ci_low, ci_high,
    n_train (median over seeds: fraction budgets can differ by a label across seeds), interval.
    With ``correct`` (cell key -> per-example correctness) and ``metric="test_acc"`` the interval
    covers seeds and test examples (crossed ANOVA with one Satterthwaite t,
    :attr:`atlbench.analysis._crossed.CrossedMean.satterthwaite`: it feeds no test, so the
    better-calibrated 95% interval is preferred over the conservative one gains use); otherwise
    it is the seed-level Student-t interval. Bounds are NaN, and ``interval`` says why, with one
    seed or no spread at all (a zero-width interval would claim certainty).
    """
    rows = done_rows(records, metric)
    if rows.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    out_rows = []
    for key, grp in rows.groupby(GROUP, sort=False, dropna=False):
        values = grp[metric].to_numpy(dtype=float)
        low, high, interval = _arm_interval(grp, metric, correct, level)
        out_rows.append(
            [
                *key,
                grp["arch"].iloc[0],
                values.size,
                values.mean(),
                values.std(ddof=1) if values.size > 1 else np.nan,
                low,
                high,
                _median_int(grp["n_train"]),
                interval,
            ]
        )
    return budget_order(pd.DataFrame(out_rows, columns=SUMMARY_COLUMNS))
