"""Which rows of the records frame may enter a statistic, and what role each one plays.

A cell's role is read from its ``role`` column ("transfer", "baseline", "random_init"), never from
its strategy label: a suite may call its from-scratch baseline "scratch-long", and a strategy
that happens to be labelled "scratch" but runs on a pre-trained source is a transfer cell.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

GROUP = ["source", "target", "strategy", "budget"]
TRANSFER, BASELINE, RANDOM_INIT = "transfer", "baseline", "random_init"
ROLES = (TRANSFER, BASELINE, RANDOM_INIT)
RECOMMENDED_SEEDS = 5

_TRUE = {"true", "1", "yes", "y", "t"}
_FALSE = {"false", "0", "no", "n", "f", ""}


def done_rows(records: pd.DataFrame, metric: str = "test_acc") -> pd.DataFrame:
    """Rows that may enter a statistic: finished cells with a finite value of ``metric``."""
    value = pd.to_numeric(records[metric], errors="coerce").to_numpy(dtype=float)
    ok = records["status"].eq("done").to_numpy() & np.isfinite(value)
    out = records.loc[ok].copy()
    out[metric] = value[ok]
    return out


def require_columns(frame: pd.DataFrame, columns: list[str], what: str) -> None:
    """Fail with the names of the missing columns (records written before roles existed)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} needs the column(s) {missing}; got {sorted(frame.columns)}")


def as_bool(values: pd.Series) -> pd.Series:
    """Booleans from a column that may hold bools, 0/1 or strings ("True", "false").

    ``astype(bool)`` would turn the string "False" into True; unknown values raise.
    """

    def one(v: object) -> bool:
        if isinstance(v, bool | np.bool_):
            return bool(v)
        if isinstance(v, int | float | np.integer | np.floating) and v in (0, 1):
            return bool(v)
        text = str(v).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"cannot read {v!r} as a boolean")

    return values.map(one).astype(bool)


def with_roles(rows: pd.DataFrame) -> pd.DataFrame:
    """Check the ``role`` column and normalise ``trains_encoder`` to bool."""
    require_columns(rows, ["role", "trains_encoder"], "pairing by role")
    bad = sorted(set(rows["role"].astype(str)) - set(ROLES))
    if bad:
        raise ValueError(f"unknown role(s) {bad}; expected one of {list(ROLES)}")
    out = rows.copy()
    out["trains_encoder"] = as_bool(out["trains_encoder"])
    return out


def budget_order(frame: pd.DataFrame) -> pd.DataFrame:
    """Sort a per-group table so budgets read small-to-large (labels like "10/class" sort badly)."""
    keys = [c for c in ["source", "target", "strategy", "n_train", "budget"] if c in frame]
    return frame.sort_values(keys, kind="stable").reset_index(drop=True)
