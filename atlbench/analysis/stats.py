"""Seed-level statistics of sweep records: CIs, paired gains over scratch, Holm, P(improvement).

Every function here reads the records frame the store exports (one row per cell) and ignores failed
cells (``status != "done"``) and cells whose metric is missing. Transfer cells are paired with
the scratch cell of the same ``(arch, target, budget, seed)``: the seed fixes the label subset, so a
gain is a paired difference and its noise is much smaller than the spread of either arm.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

GROUP = ["source", "target", "strategy", "budget"]
PAIR_KEYS = ["arch", "target", "budget", "seed"]
SCRATCH = "scratch"
RECOMMENDED_SEEDS = 5

VERDICTS = (
    "positive (significant)",
    "positive (nominal)",
    "positive (inconclusive)",
    "negative (significant)",
    "negative (nominal)",
    "negative (inconclusive)",
    "no difference",
    "too few seeds",
)


def done_rows(records: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Rows that may enter a statistic: finished cells with a finite value of ``metric``."""
    value = pd.to_numeric(records[metric], errors="coerce").to_numpy(dtype=float)
    ok = records["status"].eq("done").to_numpy() & np.isfinite(value)
    out = records.loc[ok].copy()
    out[metric] = value[ok]
    return out


def _t_half_width(sd: np.ndarray, n: np.ndarray, level: float) -> np.ndarray:
    """Half-width of the Student-t interval; NaN where n < 2 because no spread is measurable."""
    sd, n = np.broadcast_arrays(np.atleast_1d(np.asarray(sd, float)), np.asarray(n, float))
    out = np.full(sd.shape, np.nan)
    ok = n >= 2
    if np.any(ok):
        out[ok] = sps.t.ppf(0.5 + level / 2.0, n[ok] - 1.0) * sd[ok] / np.sqrt(n[ok])
    return out


def mean_ci(values: Iterable[float], level: float = 0.95) -> tuple[float, float, float]:
    """Mean and two-sided Student-t interval ``(mean, low, high)`` of seed-level values.

    The t interval (not a normal one) is used because sweeps have a handful of seeds. Non-finite
    values are dropped; the bounds are NaN when fewer than two values remain.
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
    half = float(_t_half_width(x.std(ddof=1), n, level)[0])
    return mean, mean - half, mean + half


def _budget_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort a per-group table so budgets read small-to-large (labels like "10/class" sort badly)."""
    return frame.sort_values(["source", "target", "strategy", "n_train", "budget"]).reset_index(
        drop=True
    )


def summarize(records: pd.DataFrame, metric: str = "test_acc", level: float = 0.95) -> pd.DataFrame:
    """Per ``(source, target, strategy, budget)``: seed mean, std and t-interval of ``metric``.

    Columns: source, target, strategy, budget, arch, n_seeds, mean, std, ci_low, ci_high, n_train.
    ``n_train`` is the median over seeds (fraction budgets can differ by a label across seeds).
    """
    rows = done_rows(records, metric)
    cols = [*GROUP, "arch", "n_seeds", "mean", "std", "ci_low", "ci_high", "n_train"]
    if rows.empty:
        return pd.DataFrame(columns=cols)
    out = rows.groupby(GROUP, sort=False).agg(
        arch=("arch", "first"),
        n_seeds=(metric, "size"),
        mean=(metric, "mean"),
        std=(metric, "std"),
        n_train=("n_train", "median"),
    )
    out = out.reset_index()
    half = _t_half_width(out["std"].to_numpy(), out["n_seeds"].to_numpy(), level)
    out["ci_low"] = out["mean"] - half
    out["ci_high"] = out["mean"] + half
    out["n_train"] = np.round(out["n_train"].to_numpy(dtype=float)).astype(int)
    out["n_seeds"] = out["n_seeds"].astype(int)
    return _budget_order(out[cols])


def holm(pvalues: Sequence[float] | np.ndarray) -> np.ndarray:
    """Holm-Bonferroni adjusted p-values (step-down, monotone, capped at 1).

    Controls the family-wise error over every comparison in a table, without the independence
    assumption Benjamini-Hochberg would need. NaN entries stay NaN and do not count towards m.
    """
    p = np.asarray(pvalues, dtype=float)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    pv = p[ok]
    order = np.argsort(pv, kind="stable")
    scaled = (m - np.arange(m)) * pv[order]
    adjusted = np.minimum(np.maximum.accumulate(scaled), 1.0)
    fill = np.empty(m)
    fill[order] = adjusted
    out[ok] = fill
    return out


def paired_runs(records: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """One row per finished transfer cell with its scratch partner's value (NaN when unpaired).

    Columns: the transfer row's source, target, strategy, budget, arch, seed, n_train, train_time_s,
    selection_time_s, feature_time_s (when recorded), device, ``value`` (its metric),
    ``scratch_value`` and ``gain = value - scratch_value``.
    Duplicate scratch cells for one pairing key are averaged rather than multiplying the pairs.
    """
    rows = done_rows(records, metric)
    is_scratch = rows["strategy"].eq(SCRATCH)
    scratch = (
        rows.loc[is_scratch, [*PAIR_KEYS, metric]]
        .groupby(PAIR_KEYS, as_index=False)[metric]
        .mean()
        .rename(columns={metric: "scratch_value"})
    )
    keep = [
        *GROUP,
        "arch",
        "seed",
        "n_train",
        "train_time_s",
        "selection_time_s",
        "feature_time_s",
        "device",
        metric,
    ]
    transfer = rows.loc[~is_scratch, [c for c in keep if c in rows.columns]]
    transfer = transfer.rename(columns={metric: "value"})
    pairs = transfer.merge(scratch, on=PAIR_KEYS, how="left", validate="many_to_one")
    pairs["gain"] = pairs["value"] - pairs["scratch_value"]
    return pairs


def _paired_t_pvalue(gain_mean: np.ndarray, gain_sd: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Two-sided paired t-test p-value from summary statistics of the differences.

    Zero spread with a non-zero mean gives p = 0 (t is infinite); all-zero differences give NaN,
    since there is nothing to test.
    """
    p = np.full(gain_mean.shape, np.nan)
    ok = n >= 2
    with np.errstate(divide="ignore", invalid="ignore"):
        t = gain_mean / (gain_sd / np.sqrt(n))
    spread = ok & (gain_sd > 0)
    p[spread] = 2.0 * sps.t.sf(np.abs(t[spread]), n[spread] - 1.0)
    p[ok & (gain_sd == 0) & (gain_mean != 0)] = 0.0
    return p


def _verdicts(
    n: np.ndarray,
    gain_mean: np.ndarray,
    low: np.ndarray,
    high: np.ndarray,
    p_holm: np.ndarray,
    alpha: float,
    margin: float,
) -> list[str]:
    out = []
    for k in range(n.size):
        if n[k] < 2:
            out.append("too few seeds")
        elif gain_mean[k] == 0 or (margin > 0 and low[k] >= -margin and high[k] <= margin):
            out.append("no difference")
        else:
            sign = "positive" if gain_mean[k] > 0 else "negative"
            if not (low[k] > 0 or high[k] < 0):
                strength = "inconclusive"
            elif np.isfinite(p_holm[k]) and p_holm[k] < alpha:
                strength = "significant"
            else:
                strength = "nominal"
            out.append(f"{sign} ({strength})")
    return out


def paired_gains(
    records: pd.DataFrame,
    metric: str = "test_acc",
    level: float = 0.95,
    alpha: float = 0.05,
    equivalence_margin: float = 0.0,
) -> pd.DataFrame:
    """Gain of each transfer ``(source, target, strategy, budget)`` over its paired scratch runs.

    Columns: source, target, strategy, budget, arch, n_pairs, scratch_mean, mean, gain_mean,
    gain_ci_low, gain_ci_high, p_value, p_holm, verdict, note, negative_transfer_gap.

    - ``mean`` and ``scratch_mean`` are over paired seeds only: gain_mean = mean - scratch_mean.
    - ``p_value`` is the two-sided paired t-test; ``p_holm`` is Holm-adjusted over every row of the
      returned table (one family per call: filter ``records`` first to change the family).
    - verdict: "too few seeds" when n_pairs < 2; "no difference" when the mean gain is exactly
      zero or, with ``equivalence_margin > 0``, when the whole gain CI lies inside
      ``[-margin, margin]``; otherwise the sign of the gain and its strength: *inconclusive*
      when the gain's ``level`` CI straddles zero; *significant* when the CI excludes zero
      **and** ``p_holm < alpha``; *nominal* when the CI excludes zero but the comparison does
      not survive Holm's correction. The CI alone is the per-comparison test; Holm keeps the
      family-wise error at ``alpha`` when a table holds many source/target pairs, so a
      *nominal* call is a lead to confirm with more seeds, not a finding.
    - ``negative_transfer_gap`` (Wang et al., CVPR 2019) is the transfer model's error minus the
      target-only (scratch) model's error. With error = 1 - accuracy (or 100 - accuracy) it equals
      ``scratch_mean - mean``; positive means negative transfer.
    - ``note`` recommends at least 5 seeds when fewer pairs exist, or says the scratch partner is
      missing.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    cols = [
        *GROUP,
        "arch",
        "n_pairs",
        "scratch_mean",
        "mean",
        "gain_mean",
        "gain_ci_low",
        "gain_ci_high",
        "p_value",
        "p_holm",
        "verdict",
        "note",
        "negative_transfer_gap",
    ]
    pairs = paired_runs(records, metric)
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    groups = pairs.groupby(GROUP, sort=False)
    base = groups.agg(arch=("arch", "first"), n_train=("n_train", "median"))
    paired = pairs.loc[pairs["scratch_value"].notna()]
    stats = paired.groupby(GROUP, sort=False).agg(
        n_pairs=("gain", "size"),
        scratch_mean=("scratch_value", "mean"),
        mean=("value", "mean"),
        gain_mean=("gain", "mean"),
        gain_sd=("gain", "std"),
    )
    out = base.join(stats, how="left").reset_index()
    out["n_pairs"] = out["n_pairs"].fillna(0).astype(int)
    n = out["n_pairs"].to_numpy(dtype=float)
    gain_mean = out["gain_mean"].to_numpy(dtype=float)
    gain_sd = out["gain_sd"].to_numpy(dtype=float)
    half = _t_half_width(gain_sd, n, level)
    out["gain_ci_low"] = gain_mean - half
    out["gain_ci_high"] = gain_mean + half
    out["p_value"] = _paired_t_pvalue(gain_mean, gain_sd, n)
    out["p_holm"] = holm(out["p_value"].to_numpy())
    out["verdict"] = _verdicts(
        n,
        gain_mean,
        out["gain_ci_low"].to_numpy(),
        out["gain_ci_high"].to_numpy(),
        out["p_holm"].to_numpy(),
        alpha,
        equivalence_margin,
    )
    out["note"] = [
        "no scratch run with the same arch, target, budget and seed"
        if k == 0
        else f"only {k} paired seed(s); use >= {RECOMMENDED_SEEDS} seeds for a reliable verdict"
        if k < RECOMMENDED_SEEDS
        else ""
        for k in out["n_pairs"]
    ]
    out["negative_transfer_gap"] = out["scratch_mean"] - out["mean"]
    return _budget_order(out)[cols]


def _bootstrap_stratified(
    scores_by_stratum: list[np.ndarray], n_bootstrap: int, rng: np.random.Generator
) -> np.ndarray:
    """Bootstrap replicates of the mean-over-strata of per-stratum means, resampling in strata."""
    total = np.zeros(n_bootstrap)
    for s in scores_by_stratum:
        idx = rng.integers(0, s.size, size=(n_bootstrap, s.size))
        total += s[idx].mean(axis=1)
    return total / len(scores_by_stratum)


def probability_of_improvement(
    records: pd.DataFrame,
    by: Sequence[str] | None = None,
    metric: str = "test_acc",
    n_bootstrap: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """P(transfer > scratch) over paired ``(target, seed)`` runs, with a stratified bootstrap CI.

    Each paired run scores 1 if the transfer cell beats its scratch partner, 1/2 on a tie, 0
    otherwise; scores are averaged within each target and then across targets, so every target
    weighs the same however many seeds it has (the task-averaging of rliable, Agarwal et al. 2021).
    Unlike rliable's all-runs-versus-all-runs Mann-Whitney form, runs are compared only with their
    seed partner, because here a seed fixes the label subset. The CI is the percentile interval of
    a bootstrap that resamples pairs within each target (stratified), as rliable does.

    ``by`` defaults to ``["source", "strategy", "budget"]`` (pooling targets). Columns: the ``by``
    columns, n_targets, n_pairs, prob_improvement, ci_low, ci_high.
    """
    by = list(by) if by is not None else ["source", "strategy", "budget"]
    cols = [*by, "n_targets", "n_pairs", "prob_improvement", "ci_low", "ci_high"]
    pairs = paired_runs(records, metric)
    pairs = pairs.loc[pairs["scratch_value"].notna()]
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    pairs = pairs.assign(
        _score=np.where(pairs["gain"] > 0, 1.0, np.where(pairs["gain"] == 0, 0.5, 0.0))
    )
    rng = np.random.default_rng(seed)
    tail = (1.0 - level) / 2.0
    rows = []
    for key, grp in pairs.groupby(by, sort=True):
        strata = [g["_score"].to_numpy() for _, g in grp.groupby("target", sort=True)]
        point = float(np.mean([s.mean() for s in strata]))
        if len(grp) >= 2 and n_bootstrap > 0:
            reps = _bootstrap_stratified(strata, n_bootstrap, rng)
            low, high = np.quantile(reps, [tail, 1.0 - tail])
        else:
            low = high = np.nan
        key = key if isinstance(key, tuple) else (key,)
        rows.append([*key, len(strata), len(grp), point, float(low), float(high)])
    return pd.DataFrame(rows, columns=cols)
