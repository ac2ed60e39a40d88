"""How well transferability estimators rank sources against the measured fine-tuning results."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from atlbench.analysis.stats import SCRATCH, summarize

MIN_SOURCES = 3


def ground_truth(
    records: pd.DataFrame, truth: str = "best", metric: str = "test_acc"
) -> pd.DataFrame:
    """Measured transfer quality of each ``(source, target)``: columns source, target, truth.

    ``truth="best"`` (default) takes, at each target's largest label budget (largest median
    ``n_train``), the best seed-mean ``metric`` over all non-scratch strategies of the source: the
    estimator claims to predict how well the source *can* transfer, whatever the recipe.
    Any other string names one strategy (e.g. ``"finetune_full"``) and uses its seed-mean at the
    largest budget that strategy was run with on the target.
    """
    summ = summarize(records, metric)
    summ = summ.loc[summ["strategy"].ne(SCRATCH)]
    if truth != "best":
        summ = summ.loc[summ["strategy"].eq(truth)]
    if summ.empty:
        return pd.DataFrame(columns=["source", "target", "truth"])
    largest = summ.groupby("target")["n_train"].transform("max")
    top = summ.loc[summ["n_train"].eq(largest)]
    out = top.groupby(["source", "target"], as_index=False)["mean"].max()
    return out.rename(columns={"mean": "truth"})


def _pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson r; NaN when either side is constant (no linear relation is defined)."""
    da, db = a - a.mean(), b - b.mean()
    denom = np.sqrt((da @ da) * (db @ db))
    return float(da @ db / denom) if denom > 0 else float("nan")


def _agreement(score: np.ndarray, truth: np.ndarray) -> tuple[float, float, float]:
    """(weighted tau, Pearson r, relative top-1) of one estimator on one target."""
    if np.ptp(score) == 0 or np.ptp(truth) == 0:
        tau = float("nan")
    else:
        # Hyperbolic weights on ranks: swaps among the top sources cost more than at the bottom,
        # matching the use case (pick the best source, not order the worst ones).
        tau = float(sps.weightedtau(score, truth).statistic)
    r = _pearson(score, truth)
    # Ties for the top score are broken at random in expectation: average their truth.
    top_truth = float(truth[score == score.max()].mean())
    best = float(truth.max())
    rel = top_truth / best if best > 0 else float("nan")
    return tau, r, rel


def estimator_agreement(
    scores: pd.DataFrame,
    records: pd.DataFrame | None,
    truth: str | pd.DataFrame = "best",
    metric: str = "test_acc",
) -> pd.DataFrame:
    """Per ``(target, estimator)``: agreement between estimator scores and measured transfer.

    ``scores`` has columns source, target, estimator, score (higher = predicted better; repeated
    rows are averaged). ``truth`` is ``"best"``, a strategy name (see ``ground_truth``), or a
    ready frame with columns source, target, truth (then ``records`` may be None).

    Columns: target, estimator, n_sources, weighted_tau (``scipy.stats.weightedtau``, hyperbolic
    rank weights), pearson_r, rel_top1 (truth of the estimator's top-ranked source divided by the
    best source's truth), reason ("" when computed). Metrics are NaN when fewer than 3 sources have
    both a score and a truth, and tau/r are NaN when scores or truth are constant.
    """
    cols = ["target", "estimator", "n_sources", "weighted_tau", "pearson_r", "rel_top1", "reason"]
    if isinstance(truth, pd.DataFrame):
        gt = truth[["source", "target", "truth"]]
    else:
        if records is None:
            raise ValueError("records are needed unless truth is given as a DataFrame")
        gt = ground_truth(records, truth, metric)
    sc = scores.assign(score=pd.to_numeric(scores["score"], errors="coerce"))
    sc = sc.loc[np.isfinite(sc["score"].to_numpy(dtype=float))]
    sc = sc.groupby(["source", "target", "estimator"], as_index=False)["score"].mean()
    merged = sc.merge(gt, on=["source", "target"], how="left")
    rows = []
    for (target, estimator), grp in merged.groupby(["target", "estimator"], sort=True):
        grp = grp.loc[np.isfinite(grp["truth"].to_numpy(dtype=float))]
        n = len(grp)
        if n < MIN_SOURCES:
            reason = f"only {n} source(s) with both a score and a ground truth; need >= 3"
            rows.append([target, estimator, n, np.nan, np.nan, np.nan, reason])
            continue
        s = grp["score"].to_numpy(dtype=float)
        t = grp["truth"].to_numpy(dtype=float)
        tau, r, rel = _agreement(s, t)
        reason = "" if np.isfinite(r) else "scores or ground truth are constant across sources"
        rows.append([target, estimator, n, tau, r, rel, reason])
    return pd.DataFrame(rows, columns=cols)
