"""Leaderboard tables: per target and budget, every recipe ranked, with its gain over scratch.

Columns of ``leaderboard.csv`` (stable): target, budget, rank, source, strategy, role, n_train
(labels in the budget), n_fit and n_val (of those, how many fitted and how many validated while
selecting: a k-fold CV uses every label for both), seeds, trials (tuning trials per cell), mean_acc,
std_acc, ci_low, ci_high (95%, covering seeds and test examples), mean_macro_f1,
gain_vs_scratch, gain_ci_low, gain_ci_high (paired against the trained scratch baseline),
scratch_verdict ("above/below scratch training (...)", "not significant", ...), verdict (against
the same algorithm without the source: "positive/negative (...)"; "baseline" for the scratch row,
"random-init baseline" for frozen recipes on a random encoder), edge_flags (cells whose chosen
value sat on the edge of its search space or that were still improving at max_epochs), cost_s
(mean per cell: every trial plus feature extraction), trainable_params.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

LEADERBOARD_COLUMNS = [
    "target",
    "budget",
    "rank",
    "source",
    "strategy",
    "role",
    "n_train",
    "n_fit",
    "n_val",
    "seeds",
    "trials",
    "mean_acc",
    "std_acc",
    "ci_low",
    "ci_high",
    "mean_macro_f1",
    "gain_vs_scratch",
    "gain_ci_low",
    "gain_ci_high",
    "scratch_verdict",
    "verdict",
    "edge_flags",
    "cost_s",
    "trainable_params",
]
KEYS = ["source", "target", "strategy", "budget"]
ROLE_VERDICT = {"baseline": "baseline", "random_init": "random-init baseline"}


def _cell_facts(records: pd.DataFrame) -> pd.DataFrame:
    done = records[records["status"] == "done"].copy()
    done["flagged"] = [
        bool(f) if isinstance(f, list) else False
        for f in done.get("edge_flags", [None] * len(done))
    ]
    for col in ("n_fit", "n_val", "n_trials", "cost_s", "trainable_params"):
        done[col] = pd.to_numeric(done[col], errors="coerce") if col in done else np.nan
    return (
        done.groupby(KEYS, sort=False)
        .agg(
            role=("role", "first"),
            n_fit=("n_fit", "median"),
            n_val=("n_val", "median"),
            trials=("n_trials", "max"),
            edge_flags=("flagged", "sum"),
            cost_s=("cost_s", "mean"),
            trainable_params=("trainable_params", "max"),
        )
        .reset_index()
    )


def leaderboard(
    records: pd.DataFrame,
    summary: pd.DataFrame,
    f1: pd.DataFrame,
    vs_scratch: pd.DataFrame,
    same: pd.DataFrame,
) -> pd.DataFrame:
    """Rank within (target, budget) by mean test accuracy over seeds."""
    if records.empty or summary.empty:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    table = summary.rename(columns={"mean": "mean_acc", "std": "std_acc", "n_seeds": "seeds"})
    table = table.merge(
        f1[[*KEYS, "mean"]].rename(columns={"mean": "mean_macro_f1"}), on=KEYS, how="left"
    )
    scratch = vs_scratch.reindex(
        columns=[*KEYS, "gain_mean", "gain_ci_low", "gain_ci_high", "verdict"]
    )
    scratch = scratch.rename(columns={"gain_mean": "gain_vs_scratch", "verdict": "scratch_verdict"})
    table = table.merge(scratch, on=KEYS, how="left")
    table = table.merge(same.reindex(columns=[*KEYS, "verdict"]), on=KEYS, how="left")
    table = table.merge(_cell_facts(records), on=KEYS, how="left")
    table["verdict"] = table["verdict"].fillna(table["role"].map(ROLE_VERDICT))
    table[["ci_low", "ci_high"]] = table[["ci_low", "ci_high"]].clip(0.0, 1.0)
    table = table.sort_values(
        ["target", "budget", "mean_acc"], ascending=[True, True, False], kind="stable"
    )
    table["rank"] = table.groupby(["target", "budget"]).cumcount() + 1
    order = table.groupby(["target", "budget"])["n_train"].transform("median").to_numpy()
    table = table.assign(_order=order).sort_values(["target", "_order", "rank"], kind="stable")
    return table.reindex(columns=LEADERBOARD_COLUMNS).reset_index(drop=True)
