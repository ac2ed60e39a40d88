"""Model selection beyond single estimators: the history baseline and ranking stability.

*History* ranks a target's candidate sources by how well each fine-tuned on the other targets
already measured, never looking at the target's own features. Dataset-agnostic rankings of this
kind beat most transferability estimators in published comparisons (Singh, Hess & Vanschoren
2025, "How NOT to benchmark your SITE metric"; Chaves et al. 2024, "Back to the Basics on
Predicting Transfer Performance", where the sources' ImageNet accuracy is the baseline to beat),
so every estimator should be shown beside it.

*Stability* follows Agostinelli et al. (ECCV 2022, "How stable are transferability metrics
evaluations?"): an estimator whose ranking of the same sources changes with the labelled subset
(seed) or with the label budget gives a verdict that a rerun may reverse. It is measured as the
mean pairwise Kendall tau between the rankings it produces on different seeds and budgets.
"""

from __future__ import annotations

import itertools
from typing import cast

import numpy as np
import pandas as pd
from scipy import stats as sps

from atlbench.analysis._correlation import MIN_SOURCES
from atlbench.analysis._records import require_columns

HISTORY = "baseline_history"
ESTIMATE_COLUMNS = [
    "source",
    "target",
    "budget",
    "seed",
    "estimator",
    "score",
    "time_s",
    "set_level",
]
STABILITY_COLUMNS = [
    "target",
    "estimator",
    "n_sources",
    "seed_tau",
    "seed_pairs",
    "budget_tau",
    "budget_pairs",
    "reason",
]
KEYS = ["source", "target", "budget", "seed"]


def _finite(frame: pd.DataFrame, column: str) -> pd.DataFrame:
    values = pd.to_numeric(frame[column], errors="coerce")
    frame = frame.assign(**{column: values})
    finite: pd.DataFrame = frame.loc[np.isfinite(values.to_numpy(dtype=float))]
    return finite


def history_scores(truth: pd.DataFrame, at: pd.DataFrame | None = None) -> pd.DataFrame:
    """The history baseline: a source's mean tuned fine-tuning accuracy on the *other* targets.

    Per ``(source, target, budget)``, the mean over targets ``t' != target`` of the seed-mean
    truth of that source at that budget (leave-one-target-out, so the target's own truth never
    enters its score). NaN where the source was measured on no other target at that budget.

    Rows come in the shape of ``Views.estimates`` (estimator ``"baseline_history"``, time_s 0,
    set_level False), one per ``(source, target, budget, seed)`` key of ``truth`` and of ``at``
    (e.g. the estimates, so sources scored but not fine-tuned on a target get a row too); the
    score is the same for every seed of a key, which is what lets ``estimator_agreement`` match
    it seed by seed like any estimator.
    """
    require_columns(truth, [*KEYS, "truth"], "history_scores")
    measured = _finite(truth, "truth")
    # as_index=False: a frame (the stubs type it as a Series)
    means = cast(
        pd.DataFrame,
        measured.groupby(["source", "target", "budget"], as_index=False)["truth"].mean(),
    )
    totals = means.groupby(["source", "budget"], as_index=False).agg(
        total=("truth", "sum"), count=("truth", "size")
    )
    keys = [truth[KEYS]] + ([at[KEYS]] if at is not None and len(at) else [])
    rows = pd.concat(keys, ignore_index=True).drop_duplicates(ignore_index=True)
    if rows.empty:
        return pd.DataFrame(columns=ESTIMATE_COLUMNS)
    rows = rows.merge(totals, on=["source", "budget"], how="left")
    rows = rows.merge(
        means.rename(columns={"truth": "own"}), on=["source", "target", "budget"], how="left"
    )
    own = rows["own"].to_numpy(dtype=float)
    has_own = np.isfinite(own)
    total = rows["total"].fillna(0.0).to_numpy(dtype=float) - np.where(has_own, own, 0.0)
    count = rows["count"].fillna(0).to_numpy(dtype=float) - has_own
    with np.errstate(invalid="ignore", divide="ignore"):
        score = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    out = rows[KEYS].assign(estimator=HISTORY, score=score, time_s=0.0, set_level=False)
    return out[ESTIMATE_COLUMNS].sort_values(KEYS, ignore_index=True)


def with_history(estimates: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """``estimates`` plus the history baseline's rows, so it is judged beside every estimator.

    History rows cover every key of the truth and of the estimates; rows already named
    ``baseline_history`` in ``estimates`` are replaced.
    """
    history = history_scores(truth, at=estimates if len(estimates) else None)
    if estimates.empty:
        return history
    rest = estimates.loc[estimates["estimator"].ne(HISTORY)]
    return pd.concat([rest, history.reindex(columns=rest.columns)], ignore_index=True)


def _mean_pairwise_tau(wide: pd.DataFrame) -> tuple[list[float], int]:
    """Kendall tau (``scipy.stats.kendalltau``, tau-b) between every pair of columns of a
    source x replicate table, over the sources both score; pairs with fewer than
    ``MIN_SOURCES`` common sources or a constant side are left out. Returns (taus, short)."""
    taus, short = [], 0
    for a, b in itertools.combinations(wide.columns, 2):
        pair = wide[[a, b]].dropna()
        if len(pair) < MIN_SOURCES:
            short += 1
            continue
        x, y = pair[a].to_numpy(dtype=float), pair[b].to_numpy(dtype=float)
        if np.ptp(x) == 0 or np.ptp(y) == 0:
            short += 1
            continue
        tau = float(sps.kendalltau(x, y).statistic)
        if np.isfinite(tau):
            taus.append(tau)
    return taus, short


def estimator_stability(estimates: pd.DataFrame) -> pd.DataFrame:
    """Per ``(target, estimator)``: how much its ranking of sources agrees with itself.

    Following Agostinelli et al. (ECCV 2022), ``seed_tau`` is the mean Kendall tau between the
    rankings the estimator gives on every pair of seeds (the same target and budget: a different
    labelled subset), pooled over budgets, and ``budget_tau`` the mean Kendall tau between its
    seed-mean rankings at every pair of budgets. 1 means the ranking never changes; near 0 means
    a rerun reshuffles it. Each pair uses the sources scored on both sides (at least 3); pairs
    with fewer, or with constant scores, are not counted.

    Columns: target, estimator, n_sources, seed_tau, seed_pairs, budget_tau, budget_pairs
    (pairs that entered each mean), reason (why a mean is missing). Static baselines
    (``baseline_params``) are trivially stable; leave them out if that is noise.
    """
    require_columns(
        estimates,
        ["source", "target", "budget", "seed", "estimator", "score"],
        "estimator_stability",
    )
    scores = _finite(estimates, "score")
    scores = cast(
        pd.DataFrame,
        scores.groupby(["target", "estimator", "budget", "seed", "source"], as_index=False)[
            "score"
        ].mean(),
    )
    rows = []
    for (target, estimator), grp in scores.groupby(["target", "estimator"], sort=True):
        seed_taus, seed_short, reasons = [], 0, []
        for _, part in grp.groupby("budget", sort=False):
            wide = part.pivot_table(index="source", columns="seed", values="score")
            taus, short = _mean_pairwise_tau(wide)
            seed_taus += taus
            seed_short += short
        means = grp.groupby(["budget", "source"], as_index=False)["score"].mean()
        wide = means.pivot_table(index="source", columns="budget", values="score")
        budget_taus, budget_short = _mean_pairwise_tau(wide)
        if not seed_taus:
            reasons.append(
                "no seed pair with >= 3 common sources and varying scores"
                if seed_short
                else "one seed per budget: no seed pairs"
            )
        if not budget_taus:
            reasons.append(
                "no budget pair with >= 3 common sources and varying scores"
                if budget_short
                else "one budget: no budget pairs"
            )
        rows.append(
            [
                target,
                estimator,
                int(grp["source"].nunique()),
                float(np.mean(seed_taus)) if seed_taus else np.nan,
                len(seed_taus),
                float(np.mean(budget_taus)) if budget_taus else np.nan,
                len(budget_taus),
                "; ".join(reasons),
            ]
        )
    return pd.DataFrame(rows, columns=STABILITY_COLUMNS)
