"""The ways transfer fails, measured: forgetting, overfitting the budget, label mismatch.

* **Forgetting** (catastrophic forgetting, McCloskey & Cohen 1989): the source head's accuracy on
  the source task's held-out test split before minus after fine-tuning, per cell; its mean over
  seeds with a Student-t interval (the test split is fixed and shared by both measurements, so
  the seed spread is the variance that matters here). Frozen recipes forget exactly nothing.
  L2-SP (Li et al. 2018), LP-FT (Kumar et al. 2022), LoRA and frozen layers are expected to
  forget less than full fine-tuning; :func:`forgetting_table` lets a study check it.
* **Overfitting the budget**: the selected run's training-batch accuracy minus its best
  validation accuracy at the selected epoch (the train/validation gap), and whether validation
  peaked early (the best epoch in the first half of a run that early stopping ended). A cell is
  flagged when the gap exceeds ``GAP`` and validation peaked early.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from atlbench.analysis._records import GROUP, budget_order, done_rows

GAP = 0.25  # train minus validation accuracy, at the selected epoch
FORGETTING_COLUMNS = [*GROUP, "n_seeds", "source_acc_before", "source_acc_after", "forgetting",
                      "forgetting_ci_low", "forgetting_ci_high"]  # fmt: skip
OVERFIT_COLUMNS = [*GROUP, "n_cells", "train_val_gap", "peaked_early", "overfit_cells"]


def _t_interval(x: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    if len(x) < 2 or np.std(x) == 0:
        return float("nan"), float("nan")
    half = sps.t.ppf(0.5 + level / 2, len(x) - 1) * np.std(x, ddof=1) / np.sqrt(len(x))
    return float(x.mean() - half), float(x.mean() + half)


def forgetting_table(records: pd.DataFrame, level: float = 0.95) -> pd.DataFrame:
    """Per transfer (source, target, strategy, budget) with a known source task."""
    if records.empty or "forgetting" not in records:
        return pd.DataFrame(columns=FORGETTING_COLUMNS)
    rows = done_rows(records)
    rows = rows[rows["forgetting"].notna()]
    out = []
    for key, grp in rows.groupby(GROUP, sort=False):
        drop = grp["forgetting"].to_numpy(dtype=float)
        low, high = _t_interval(drop, level)
        before = float(grp["source_acc_before"].mean())
        after = float(grp["source_acc_after"].mean())
        out.append([*key, len(drop), before, after, float(drop.mean()), low, high])
    table = pd.DataFrame(out, columns=FORGETTING_COLUMNS)
    return budget_order(table) if out else table


def overfit_flags(records: pd.DataFrame, gap: float = GAP) -> pd.DataFrame:
    """Per trainable cell: the train/validation gap, whether validation peaked early, the flag."""
    cols = [*GROUP, "seed", "train_val_gap", "peaked_early", "overfit"]
    if records.empty or "train_val_gap" not in records:
        return pd.DataFrame(columns=cols)
    rows = done_rows(records)
    rows = rows[rows["train_val_gap"].notna()].copy()
    if rows.empty:
        return pd.DataFrame(columns=cols)
    best = rows["best_epoch"].astype("float64")
    curves = rows["val_curve"].map(lambda c: len(c) if isinstance(c, list) else np.nan)
    rows["peaked_early"] = (best <= 0.5 * curves) & (curves >= 4)
    rows["overfit"] = (rows["train_val_gap"] > gap) & rows["peaked_early"]
    return rows[cols].reset_index(drop=True)


def overfitting_table(records: pd.DataFrame, gap: float = GAP) -> pd.DataFrame:
    """Per (source, target, strategy, budget): median gap, cells peaking early, cells flagged."""
    flags = overfit_flags(records, gap)
    if flags.empty:
        return pd.DataFrame(columns=OVERFIT_COLUMNS)
    out = flags.groupby(GROUP, sort=False).agg(
        n_cells=("seed", "size"),
        train_val_gap=("train_val_gap", "median"),
        peaked_early=("peaked_early", "sum"),
        overfit_cells=("overfit", "sum"),
    )
    return budget_order(out.reset_index())[OVERFIT_COLUMNS]
