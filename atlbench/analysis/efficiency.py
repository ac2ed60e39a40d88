"""What transfer buys per unit of cost: gain per compute-hour, Pareto fronts, labels saved."""

from __future__ import annotations

import numpy as np
import pandas as pd

from atlbench.analysis.stats import GROUP, SCRATCH, _budget_order, done_rows, paired_runs


def device_kind(device: pd.Series) -> pd.Series:
    """Map a device string ("cpu", "cuda:0", "mps", ...) to "cpu", "gpu" or "unknown".

    CPU-hours and GPU-hours are not commensurable, so they are reported in separate columns.
    """
    text = device.astype("string").str.lower()
    kind = np.where(text.str.startswith("cpu").fillna(False), "cpu", "gpu")
    return pd.Series(np.where(text.isna(), "unknown", kind), index=device.index)


def cell_cost_seconds(rows: pd.DataFrame) -> pd.Series:
    """What a cell cost to produce: its whole hyperparameter grid plus its feature extraction.

    The selected run's ``train_time_s`` alone would flatter strategies that try many settings,
    and makes frozen-feature strategies look free (a probe trains in milliseconds once the
    forward pass over the target is paid), which sends gain-per-hour to absurd values.
    """

    def col(name: str) -> pd.Series:
        if name not in rows:
            return pd.Series(np.nan, index=rows.index)
        return pd.to_numeric(rows[name], errors="coerce")

    fit = col("selection_time_s").fillna(col("train_time_s"))
    return fit + col("feature_time_s").fillna(0.0)


def gain_per_hour(records: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Mean paired gain over scratch divided by the mean training hours of the transfer cells.

    The cost is the transfer cell's own compute (``cell_cost_seconds``), not transfer minus
    scratch: a practitioner
    asks what an hour spent on this fine-tune buys, the source's pre-training is a sunk cost shared
    by every target, and a time *difference* is often near zero or negative (fine-tuning usually
    converges faster than scratch), which would make the ratio unstable or meaningless.

    Columns: source, target, strategy, budget, device_kind, n_pairs, gain_mean, train_hours,
    gain_per_cpu_hour, gain_per_gpu_hour (the column of the other device kind is NaN).
    """
    cols = [
        *GROUP,
        "device_kind",
        "n_pairs",
        "gain_mean",
        "train_hours",
        "gain_per_cpu_hour",
        "gain_per_gpu_hour",
    ]
    pairs = paired_runs(records, metric)
    pairs = pairs.loc[pairs["scratch_value"].notna()].copy()
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    pairs["device_kind"] = device_kind(pairs["device"])
    pairs["hours"] = cell_cost_seconds(pairs) / 3600.0
    out = (
        pairs.groupby([*GROUP, "device_kind"], sort=False)
        .agg(
            n_pairs=("gain", "size"),
            gain_mean=("gain", "mean"),
            train_hours=("hours", "mean"),
            n_train=("n_train", "median"),
        )
        .reset_index()
    )
    hours = out["train_hours"].to_numpy(dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(hours > 0, out["gain_mean"].to_numpy(dtype=float) / hours, np.nan)
    out["gain_per_cpu_hour"] = np.where(out["device_kind"].eq("cpu"), rate, np.nan)
    out["gain_per_gpu_hour"] = np.where(out["device_kind"].eq("gpu"), rate, np.nan)
    return _budget_order(out)[cols]


def pareto_front(
    df: pd.DataFrame, x: str, y: str, minimize_x: bool = True, maximize_y: bool = True
) -> pd.Series:
    """Boolean mask of the rows no other row dominates (e.g. accuracy vs train time or params).

    A row is dominated when another is at least as good on both axes and strictly better on one;
    exact duplicates do not dominate each other, so both stay on the front. Rows with a missing x
    or y are never on the front. Runs in O(n log n) by sweeping rows sorted by x.
    """
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(dtype=float)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(dtype=float)
    if not minimize_x:
        xs = -xs
    if not maximize_y:
        ys = -ys
    mask = np.zeros(len(df), dtype=bool)
    valid = np.flatnonzero(np.isfinite(xs) & np.isfinite(ys))
    # Sort by x ascending, then y descending; walk groups of equal x.
    order = valid[np.lexsort((-ys[valid], xs[valid]))]
    best_y = -np.inf  # best y among rows with strictly smaller x
    i = 0
    while i < order.size:
        j = i
        while j < order.size and xs[order[j]] == xs[order[i]]:
            j += 1
        group_best = ys[order[i]]
        if group_best > best_y:
            tied = order[i:j][ys[order[i:j]] == group_best]
            mask[tied] = True
            best_y = group_best
        i = j
    return pd.Series(mask, index=df.index, name="pareto")


def _first_crossing(n: np.ndarray, curve: np.ndarray, target: float) -> tuple[float, str]:
    """Smallest n where the piecewise-linear curve first reaches ``target`` (else NaN, why)."""
    reached = np.flatnonzero(curve >= target)
    if reached.size == 0:
        return (
            np.nan,
            f"scratch never reaches it within the measured budgets (<= {n[-1]:g} labels)",
        )
    i = int(reached[0])
    if i == 0:
        return float(n[0]), "at_first"
    lo, hi = curve[i - 1], curve[i]
    return float(n[i - 1] + (target - lo) * (n[i] - n[i - 1]) / (hi - lo)), ""


def labels_saved(records: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Labels a transfer cell saves: how many labels scratch needs to match its mean accuracy.

    Scratch's learning curve for the same (arch, target) is its seed-mean ``metric`` against mean
    ``n_train`` over the measured budgets, linearly interpolated; the first crossing of the
    transfer mean is ``scratch_labels_needed`` and ``labels_saved = needed - n_train``. Both are
    NaN, with a ``reason``, when scratch never reaches the accuracy within the measured budgets,
    when scratch already matches or beats it with no more labels than the transfer cell used, when
    the crossing is at scratch's smallest budget (below it the curve is unmeasured), or when there
    is no scratch curve. ``reason`` is "" for a valid number.

    Columns: source, target, strategy, budget, arch, n_train, mean, scratch_labels_needed,
    labels_saved, reason.
    """
    cols = [
        *GROUP,
        "arch",
        "n_train",
        "mean",
        "scratch_labels_needed",
        "labels_saved",
        "reason",
    ]
    rows = done_rows(records, metric)
    is_scratch = rows["strategy"].eq(SCRATCH)
    transfer = rows.loc[~is_scratch]
    if transfer.empty:
        return pd.DataFrame(columns=cols)
    out = (
        transfer.groupby(GROUP, sort=False)
        .agg(arch=("arch", "first"), n_train=("n_train", "median"), mean=(metric, "mean"))
        .reset_index()
    )
    scratch = (
        rows.loc[is_scratch]
        .groupby(["arch", "target", "budget"], sort=False)
        .agg(n=("n_train", "mean"), acc=(metric, "mean"))
        .reset_index()
    )
    curves: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    for key, grp in scratch.groupby(["arch", "target"], sort=False):
        pts = grp.groupby("n", sort=True)["acc"].mean()
        curves[key] = (pts.index.to_numpy(dtype=float), pts.to_numpy(dtype=float))
    needed, reasons = [], []
    for arch, target, n_train, acc in zip(
        out["arch"], out["target"], out["n_train"], out["mean"], strict=True
    ):
        curve = curves.get((arch, target))
        if curve is None:
            needed.append(np.nan)
            reasons.append("no scratch runs for this arch and target")
            continue
        value, reason = _first_crossing(curve[0], curve[1], acc)
        if np.isfinite(value) and value <= n_train:
            value, reason = np.nan, "scratch already matches or beats it with as few labels"
        elif reason == "at_first":
            value = np.nan
            reason = "scratch reaches it at its smallest measured budget; fewer labels unmeasured"
        needed.append(value)
        reasons.append(reason)
    out["scratch_labels_needed"] = np.asarray(needed, dtype=float)
    out["labels_saved"] = out["scratch_labels_needed"] - out["n_train"]
    out["reason"] = reasons
    out["n_train"] = np.round(out["n_train"].to_numpy(dtype=float)).astype(int)
    return _budget_order(out)[cols]
