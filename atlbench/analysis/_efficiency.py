"""What transfer buys per unit of cost: gain per compute-hour, Pareto fronts, labels saved.

A cell's cost has one definition, its ``cost_s`` column: every tuning trial, the final retrain
and the feature extraction. The selected run's training time alone would flatter recipes that
try many settings and make frozen-feature recipes look free.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from atlbench.analysis._gains import paired_gains
from atlbench.analysis._pairing import correctness_rows, paired_runs
from atlbench.analysis._records import (
    BASELINE,
    GROUP,
    TRANSFER,
    budget_order,
    done_rows,
    require_columns,
    with_roles,
)
from atlbench.record import Verdict

MIN_COST_S = 60.0
"""Below a minute a cell's cost is mostly fixed overhead (start-up, data loading, cached features,
timer granularity) that buys nothing more when scaled up, and a rate per hour multiplies it by
more than 60: the quickstart printed -485,841.9 per CPU-hour for a kNN. Such rows get NaN and a
reason; compare their ``cost_s`` directly."""


def device_kind(device: pd.Series) -> pd.Series:
    """Map a device string ("cpu", "cuda:0", "mps", ...) to "cpu", "gpu" or "unknown".

    CPU-hours and GPU-hours are not commensurable, so they are reported in separate columns.
    """
    text = device.astype("string").str.lower()
    kind = np.where(text.str.startswith("cpu").fillna(False), "cpu", "gpu")
    return pd.Series(np.where(text.isna(), "unknown", kind), index=device.index)


def cell_cost_seconds(rows: pd.DataFrame) -> pd.Series:
    """A cell's whole cost in seconds: its ``cost_s`` column (NaN where not recorded)."""
    require_columns(rows, ["cost_s"], "cell cost")
    return rows["cost_s"].astype(float)


def gain_per_hour(
    records: pd.DataFrame,
    comparison: str = "same_algorithm",
    metric: str = "test_acc",
    min_cost_s: float = MIN_COST_S,
) -> pd.DataFrame:
    """Mean paired gain divided by the mean cost (hours) of the transfer cells.

    The cost is the transfer cell's own ``cost_s``, not transfer minus partner: the source's
    pre-training is a sunk cost shared by every target, and a cost *difference* is often near
    zero or negative (fine-tuning converges faster than scratch), which makes the ratio unstable.
    Rates are NaN, with a ``reason``, where the mean cost is below ``min_cost_s`` (see
    ``MIN_COST_S``) or not recorded.

    Columns: source, target, strategy, budget, comparison, device_kind, n_pairs, gain_mean,
    cost_s, cost_hours, gain_per_cpu_hour, gain_per_gpu_hour (the other kind's column is NaN),
    reason.
    """
    cols = [*GROUP, "comparison", "device_kind", "n_pairs", "gain_mean", "cost_s", "cost_hours"]
    cols += ["gain_per_cpu_hour", "gain_per_gpu_hour", "reason"]
    require_columns(records, ["cost_s", "device"], "gain_per_hour")
    pairs = paired_runs(records, comparison, metric)
    pairs = pairs.loc[pairs["baseline_value"].notna()].copy()
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    pairs["device_kind"] = device_kind(pairs["device"])
    pairs["cost_s"] = cell_cost_seconds(pairs)
    out = (
        pairs.groupby([*GROUP, "device_kind"], sort=False)
        .agg(
            n_pairs=("gain", "size"),
            gain_mean=("gain", "mean"),
            cost_s=("cost_s", "mean"),
            n_train=("n_train", "median"),
        )
        .reset_index()
    )
    cost = out["cost_s"].to_numpy(dtype=float)
    ok = np.isfinite(cost) & (cost >= min_cost_s)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(ok, out["gain_mean"].to_numpy(dtype=float) / (cost / 3600.0), np.nan)
    out["comparison"] = comparison
    out["cost_hours"] = cost / 3600.0
    out["gain_per_cpu_hour"] = np.where(out["device_kind"].eq("cpu"), rate, np.nan)
    out["gain_per_gpu_hour"] = np.where(out["device_kind"].eq("gpu"), rate, np.nan)
    out["reason"] = [
        ""
        if good
        else "no cost_s recorded"
        if not np.isfinite(c)
        else f"cost {c:.3g} s < {min_cost_s:g} s: too small for a per-hour rate"
        for good, c in zip(ok, cost, strict=True)
    ]
    return budget_order(out)[cols]


def pareto_front(
    df: pd.DataFrame, x: str, y: str, minimize_x: bool = True, maximize_y: bool = True
) -> pd.Series:
    """Boolean mask of the rows no other row dominates (e.g. accuracy vs cost_s or params).

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


def cost_accuracy(records: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Per ``(source, target, strategy, budget)``: mean ``metric`` and mean ``cost_s``, with the
    Pareto front (least cost, best metric) marked within each (target, budget, device_kind).

    Columns: source, target, strategy, budget, role, arch, device_kind, n_seeds, mean_acc (the
    seed mean of ``metric``), cost_s, cost_hours, pareto.
    """
    cols = [*GROUP, "role", "arch", "device_kind", "n_seeds", "mean_acc", "cost_s", "cost_hours"]
    rows = done_rows(records, metric)
    require_columns(rows, ["role", "cost_s", "device"], "cost_accuracy")
    if rows.empty:
        return pd.DataFrame(columns=[*cols, "pareto"])
    rows = rows.assign(cost_s=cell_cost_seconds(rows), device_kind=device_kind(rows["device"]))
    out = (
        rows.groupby(GROUP, sort=False)
        .agg(
            role=("role", "first"),
            arch=("arch", "first"),
            device_kind=("device_kind", "first"),
            n_seeds=(metric, "size"),
            mean_acc=(metric, "mean"),
            cost_s=("cost_s", "mean"),
            n_train=("n_train", "median"),
        )
        .reset_index()
    )
    out["cost_hours"] = out["cost_s"] / 3600.0
    out["pareto"] = False
    for _, grp in out.groupby(["target", "budget", "device_kind"], sort=False):
        out.loc[grp.index, "pareto"] = pareto_front(grp, "cost_s", "mean_acc").to_numpy()
    return budget_order(out)[[*cols, "pareto"]]


def _crossing(n: np.ndarray, curves: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, ...]:
    """Labels where each piecewise-linear-in-log(n) curve first reaches its target.

    ``curves`` is (replicates, budgets) over increasing ``n``. Returns (needed, never, at_first):
    ``needed`` is inf where the curve never reaches the target and ``n[0]`` where it is already
    reached at the smallest budget (fewer labels are unmeasured). Learning curves are close to
    linear in log(labels) over a decade (Hestness et al. 2017, "Deep Learning Scaling is
    Predictable, Empirically", power-law error), so log(n) interpolation bends the right way
    where linear interpolation in n overstates the labels needed.
    """
    reached = curves >= targets[:, None]
    never = np.asarray(~reached.any(axis=1))
    first = np.argmax(reached, axis=1)
    at_first: np.ndarray = ~never & (first == 0)
    needed = np.full(targets.shape, np.inf)
    needed[at_first] = n[0]
    mid = ~never & ~at_first
    i = first[mid]
    rows = np.flatnonzero(mid)
    lo, hi = curves[rows, i - 1], curves[rows, i]
    log_n = np.log(n)
    frac = (targets[mid] - lo) / (hi - lo)
    needed[mid] = np.exp(log_n[i - 1] + frac * (log_n[i] - log_n[i - 1]))
    return needed, never, at_first


def _replicate_means(
    values: np.ndarray,
    matrix: np.ndarray | None,
    weights: np.ndarray | None,
    n_boot: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Bootstrap replicates of a seed mean: resample seeds, and examples when a matrix is given."""
    if matrix is not None and weights is not None:
        per_seed = matrix @ weights.T / matrix.shape[1]  # (seeds, replicates)
    else:
        per_seed = np.repeat(values[:, None], n_boot, axis=1)
    k = per_seed.shape[0]
    idx = rng.integers(0, k, size=(n_boot, k))
    means: np.ndarray = per_seed[idx, np.arange(n_boot)[:, None]].mean(axis=1)
    return means


def labels_saved(
    records: pd.DataFrame,
    correct: Mapping[object, np.ndarray] | None = None,
    metric: str = "test_acc",
    level: float = 0.95,
    alpha: float = 0.05,
    correction: str = "holm",
    n_bootstrap: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Labels a transfer recipe saves: how many labels trained scratch needs to match its mean.

    Only for recipes significantly above scratch training (``paired_gains(..., "scratch")``
    verdict ``Verdict.ABOVE_SCRATCH_SIGNIFICANT``, same ``correct``, ``alpha`` and
    ``correction``); otherwise NaN with the verdict as reason. Scratch's learning curve for the
    same (arch, target) is its seed-mean ``metric`` against mean ``n_train`` over the measured
    budgets, interpolated linearly in log(n); the first crossing of the transfer mean is
    ``scratch_labels_needed`` and ``labels_saved = needed - n_train``.

    The interval is a percentile bootstrap: each replicate resamples the seeds of every scratch
    budget and of the transfer cell and, with ``correct``, the test examples (one draw of
    example indices shared by every cell of the target, since they all score the same test set).
    A replicate whose curve never reaches the mean counts as infinitely many labels (so
    ``ci_high`` may be inf), one reached at the smallest budget as that budget. With 3 seeds a
    seed bootstrap is coarse; read the interval as a range, not a calibrated 95%.

    Columns: source, target, strategy, budget, arch, n_train, mean, verdict,
    scratch_labels_needed, labels_saved, labels_saved_ci_low, labels_saved_ci_high, interval,
    reason ("" for a valid number).
    """
    cols = [*GROUP, "arch", "n_train", "mean", "verdict", "scratch_labels_needed"]
    cols += ["labels_saved", "labels_saved_ci_low", "labels_saved_ci_high", "interval", "reason"]
    rows = with_roles(done_rows(records, metric))
    transfer = rows.loc[rows["role"].eq(TRANSFER)]
    if transfer.empty:
        return pd.DataFrame(columns=cols)
    gains = paired_gains(records, correct, "scratch", metric, level, alpha, correction=correction)
    verdicts = {tuple(k): v for k, v in zip(gains[GROUP].to_numpy(), gains["verdict"], strict=True)}
    use = correct if metric == "test_acc" else None
    base = rows.loc[rows["role"].eq(BASELINE)]
    curves: dict[tuple[Any, ...], list[pd.DataFrame]] = {}
    for key, grp in base.groupby(["arch", "target"], sort=False):
        budgets = [b for _, b in grp.groupby("budget", sort=False)]
        curves[key] = sorted(budgets, key=lambda b: float(b["n_train"].mean()))
    rng = np.random.default_rng(seed)
    tail = (1.0 - level) / 2.0
    out = []
    for key, grp in transfer.groupby(GROUP, sort=False):
        arch, target = grp["arch"].iloc[0], key[1]
        n_train = float(grp["n_train"].median())
        mean = float(grp[metric].mean())
        verdict = verdicts.get(key, Verdict.NO_SCRATCH_RUN)
        row = [*key, arch, round(n_train), mean, verdict]
        blank = [np.nan] * 4
        curve = curves.get((arch, target))
        if verdict != Verdict.ABOVE_SCRATCH_SIGNIFICANT:
            out.append([*row, *blank, "", f"gain over scratch training: {verdict}"])
            continue
        if curve is None:
            out.append([*row, *blank, "", "no scratch runs for this arch and target"])
            continue
        n = np.array([float(b["n_train"].mean()) for b in curve])
        acc = np.array([float(b[metric].mean()) for b in curve])
        needed, never, at_first = _crossing(n, acc[None, :], np.array([mean]))
        value = float(needed[0])
        reason = ""
        if never[0]:
            value = np.nan
            reason = f"scratch never reaches it within the measured budgets (<= {n[-1]:g} labels)"
        elif at_first[0]:
            value = np.nan
            reason = "scratch reaches it at its smallest measured budget; fewer labels unmeasured"
        elif value <= n_train:
            value, reason = np.nan, "scratch already matches or beats it with as few labels"
        if reason:
            out.append([*row, *blank, "", reason])
            continue
        cells = [grp, *curve]
        mats = [
            correctness_rows(list(c["key"]), list(c[metric]), use) if "key" in c else "no key"
            for c in cells
        ]
        arrays = [m for m in mats if isinstance(m, np.ndarray)]
        crossed = len(arrays) == len(mats) and len({m.shape[1] for m in arrays}) == 1
        weights = None
        if crossed:
            m_ex = arrays[0].shape[1]
            weights = rng.multinomial(m_ex, np.full(m_ex, 1.0 / m_ex), size=n_bootstrap)
        reps = [
            _replicate_means(
                c[metric].to_numpy(dtype=float),
                mat if crossed and isinstance(mat, np.ndarray) else None,
                weights,
                n_bootstrap,
                rng,
            )
            for c, mat in zip(cells, mats, strict=True)
        ]
        boot, _, _ = _crossing(n, np.column_stack(reps[1:]), reps[0])
        # inverted_cdf: no interpolation between a finite and an infinite replicate.
        low, high = np.quantile(boot - n_train, [tail, 1.0 - tail], method="inverted_cdf")
        interval = "bootstrap: seeds + test examples" if crossed else "bootstrap: seeds only"
        out.append([*row, value, value - n_train, float(low), float(high), interval, ""])
    return budget_order(pd.DataFrame(out, columns=cols))[cols]
