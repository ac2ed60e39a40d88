"""Leaderboard tables: per target, every (source, strategy, budget) ranked, with gain over scratch.

Columns of ``leaderboard.csv`` (stable): target, budget, rank, source, strategy, n_train, seeds,
mean_acc, std_acc, ci_low, ci_high, mean_macro_f1, gain_vs_scratch, gain_ci_low, gain_ci_high,
verdict, train_time_s, trainable_params.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from atlbench.analysis.stats import paired_gains, summarize

LEADERBOARD_COLUMNS = [
    "target",
    "budget",
    "rank",
    "source",
    "strategy",
    "n_train",
    "seeds",
    "mean_acc",
    "std_acc",
    "ci_low",
    "ci_high",
    "mean_macro_f1",
    "gain_vs_scratch",
    "gain_ci_low",
    "gain_ci_high",
    "verdict",
    "train_time_s",
    "trainable_params",
]


def leaderboard(records: pd.DataFrame) -> pd.DataFrame:
    """Rank within (target, budget) by mean test accuracy over seeds."""
    if records.empty or "test_acc" not in records:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    summary = summarize(records, "test_acc")
    if summary.empty:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    f1 = summarize(records, "test_macro_f1")[["source", "target", "strategy", "budget", "mean"]]
    f1 = f1.rename(columns={"mean": "mean_macro_f1"})
    gains = paired_gains(records, "test_acc")[
        [
            "source",
            "target",
            "strategy",
            "budget",
            "gain_mean",
            "gain_ci_low",
            "gain_ci_high",
            "verdict",
        ]
    ]
    done = records[records["status"] == "done"]
    cost = (
        done.groupby(["source", "target", "strategy", "budget"], sort=False)
        .agg(train_time_s=("train_time_s", "mean"), trainable_params=("trainable_params", "max"))
        .reset_index()
    )
    keys = ["source", "target", "strategy", "budget"]
    table = summary.merge(f1, on=keys, how="left").merge(gains, on=keys, how="left")
    table = table.merge(cost, on=keys, how="left")
    table = table.rename(
        columns={
            "mean": "mean_acc",
            "std": "std_acc",
            "n_seeds": "seeds",
            "gain_mean": "gain_vs_scratch",
        }
    )
    # a t-interval of a bounded metric can leave [0, 1]; clip it to the metric's range
    table[["ci_low", "ci_high"]] = table[["ci_low", "ci_high"]].clip(0.0, 1.0)
    table["verdict"] = table["verdict"].fillna("baseline")
    table = table.sort_values(
        ["target", "budget", "mean_acc"], ascending=[True, True, False], kind="stable"
    )
    table["rank"] = table.groupby(["target", "budget"]).cumcount() + 1
    order = _budget_sort_key(table)
    table = table.assign(_order=order).sort_values(["target", "_order", "rank"], kind="stable")
    return table[LEADERBOARD_COLUMNS].reset_index(drop=True)


def _budget_sort_key(table: pd.DataFrame) -> np.ndarray:
    """Budgets in increasing label count (5/class before 100%)."""
    return table.groupby(["target", "budget"])["n_train"].transform("median").to_numpy()


def best_per_target(records: pd.DataFrame) -> pd.DataFrame:
    """The top row of every (target, budget), for the terminal summary and the report's headline."""
    board = leaderboard(records)
    if board.empty:
        return pd.DataFrame(
            columns=["target", "budget", "source", "strategy", "mean", "std", "gain"]
        )
    top = board[board["rank"] == 1]
    return pd.DataFrame(
        {
            "target": top["target"],
            "budget": top["budget"],
            "source": top["source"],
            "strategy": top["strategy"],
            "mean": top["mean_acc"],
            "std": top["std_acc"].fillna(0.0),
            "gain": top["gain_vs_scratch"],
        }
    ).reset_index(drop=True)
