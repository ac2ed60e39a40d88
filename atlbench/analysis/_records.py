"""Which rows of the records frame may enter a statistic, and what role each one plays.

A cell's role is read from its ``role`` column (a :class:`~atlbench.record.Role`), never from
its strategy label: a suite may call its from-scratch baseline "scratch-long", and a strategy
that happens to be labelled "scratch" but runs on a pre-trained source is a transfer cell.

The frame comes from :meth:`atlbench.store.Store.records`, so every column has the dtype
:data:`atlbench.record.DTYPES` gives it: numbers are numbers, flags are booleans.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from atlbench.record import Role, Status

GROUP = ["source", "target", "strategy", "budget"]
TRANSFER, BASELINE, RANDOM_INIT = Role.TRANSFER, Role.BASELINE, Role.RANDOM_INIT
ROLES = tuple(Role)
RECOMMENDED_SEEDS = 5


def done_rows(records: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Rows that may enter a statistic: finished cells with a finite value of ``metric``."""
    value = records[metric].to_numpy(dtype=float, na_value=np.nan)
    ok = records["status"].eq(Status.DONE).to_numpy() & np.isfinite(value)
    out: pd.DataFrame = records.loc[ok].copy()
    out[metric] = value[ok]
    return out


def require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    """Fail with the names of the missing columns (records written before roles existed)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} needs the column(s) {missing}; got {sorted(frame.columns)}")


def with_roles(rows: pd.DataFrame) -> pd.DataFrame:
    """Check the ``role`` column, and that every row says whether it trains the encoder."""
    require_columns(rows, ["role", "trains_encoder"], "pairing by role")
    bad = sorted(set(rows["role"].astype(str)) - set(ROLES))
    if bad:
        raise ValueError(f"unknown role(s) {bad}; expected one of {[str(r) for r in ROLES]}")
    if rows["trains_encoder"].isna().any():
        raise ValueError("pairing by role needs trains_encoder on every finished cell")
    out = rows.copy()
    out["trains_encoder"] = out["trains_encoder"].astype(bool)
    return out


def budget_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort a per-group table so budgets read small-to-large (labels like "10/class" sort badly)."""
    keys = [c for c in ["source", "target", "strategy", "n_train", "budget"] if c in frame]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)
