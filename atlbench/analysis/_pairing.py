"""Pair each transfer cell with the cell it is compared against, by role, never by label.

Wang et al. (CVPR 2019, "Characterizing and Avoiding Negative Transfer", eq. 1) define negative
transfer for one algorithm ``A`` as ``error(A(S, T)) > error(A(empty, T))``: the same algorithm
with and without the source. Two comparisons follow:

- ``"same_algorithm"``: a frozen transfer cell (``trains_encoder`` False: linear probe, kNN)
  pairs with the ``random_init`` cell of the same ``(arch, target, strategy, budget, seed)``
  (the same recipe on a randomly initialised encoder); a cell that trains its encoder pairs with
  the ``baseline`` cell (trained from scratch) of the same ``(arch, target, budget, seed)``.
  Only this comparison can show negative transfer.
- ``"scratch"``: every transfer cell pairs with the ``baseline`` cell of the same
  ``(arch, target, budget, seed)``. A probe below trained scratch is "below scratch training",
  which says nothing about the source.

The seed fixes the label subset, so a pair is a paired difference on the same labels, and on the
same test examples (see :mod:`atlbench.analysis._crossed`).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from atlbench.analysis._records import BASELINE, RANDOM_INIT, TRANSFER, done_rows, with_roles

COMPARISONS = ("same_algorithm", "scratch")
PAIR_KEYS = ["arch", "target", "budget", "seed"]
FROZEN_KEYS = ["arch", "target", "strategy", "budget", "seed"]
_CARRY = [
    "key",
    "source",
    "target",
    "strategy",
    "strategy_name",
    "budget",
    "arch",
    "seed",
    "n_train",
    "n_test",
    "trains_encoder",
    "cost_s",
    "device",
    "train_time_s",
    "selection_time_s",
    "feature_time_s",
]
PAIR_COLUMNS = [
    "comparison",
    "value",
    "baseline_keys",
    "baseline_source",
    "baseline_strategy",
    "baseline_role",
    "n_baseline",
    "baseline_value",
    "gain",
]


def check_comparison(comparison: str) -> None:
    if comparison not in COMPARISONS:
        raise ValueError(f"comparison must be one of {list(COMPARISONS)}, got {comparison!r}")


def _partners(rows: pd.DataFrame, keys: list[str], metric: str, role: str) -> pd.DataFrame:
    """One partner per key; duplicates (several baseline cells, one key) are averaged."""
    cols = ["baseline_keys", "baseline_source", "baseline_strategy", "n_baseline"]
    if rows.empty:
        return pd.DataFrame(columns=[*keys, "baseline_value", *cols, "baseline_role"])
    key_col = rows["key"] if "key" in rows else pd.Series([None] * len(rows), index=rows.index)
    out = (
        rows.assign(_key=key_col)
        .groupby(keys, sort=False, dropna=False)
        .agg(
            baseline_value=(metric, "mean"),
            baseline_keys=("_key", tuple),
            baseline_source=("source", "first"),
            baseline_strategy=("strategy", "first"),
            n_baseline=(metric, "size"),
        )
        .reset_index()
    )
    out["baseline_role"] = role
    return out


def paired_runs(
    records: pd.DataFrame, comparison: str = "same_algorithm", metric: str = "test_acc"
) -> pd.DataFrame:
    """One row per finished transfer cell with its partner's value (NaN when it has none).

    Columns: the transfer cell's own columns among key, source, target, strategy, strategy_name,
    budget, arch, seed, n_train, n_test, trains_encoder, cost_s, device, train_time_s,
    selection_time_s, feature_time_s (those present), then comparison, ``value`` (its metric),
    ``baseline_keys`` (tuple of the partner cells' keys), baseline_source, baseline_strategy,
    baseline_role ("baseline" or "random_init"), ``n_baseline`` (partner cells averaged, 0 when
    unpaired), ``baseline_value`` and ``gain = value - baseline_value``.
    """
    check_comparison(comparison)
    rows = with_roles(done_rows(records, metric))
    transfer = rows.loc[rows["role"].eq(TRANSFER)]
    transfer = transfer[[c for c in _CARRY if c in transfer]].assign(value=transfer[metric])
    base = _partners(rows.loc[rows["role"].eq(BASELINE)], PAIR_KEYS, metric, BASELINE)
    if comparison == "scratch":
        parts = [transfer.merge(base, on=PAIR_KEYS, how="left", validate="many_to_one")]
    else:
        frozen = ~transfer["trains_encoder"].to_numpy(dtype=bool)
        rand = _partners(rows.loc[rows["role"].eq(RANDOM_INIT)], FROZEN_KEYS, metric, RANDOM_INIT)
        parts = [
            transfer.loc[~frozen].merge(base, on=PAIR_KEYS, how="left", validate="many_to_one"),
            transfer.loc[frozen].merge(rand, on=FROZEN_KEYS, how="left", validate="many_to_one"),
        ]
    pairs = pd.concat([p for p in parts if len(p)] or parts[:1], ignore_index=True)
    pairs["comparison"] = comparison
    unpaired = pairs["baseline_value"].isna()
    pairs["n_baseline"] = pairs["n_baseline"].fillna(0).astype(int)
    keys = zip(unpaired, pairs["baseline_keys"], strict=True)
    pairs["baseline_keys"] = [() if u else k for u, k in keys]
    pairs["baseline_role"] = pairs["baseline_role"].where(~unpaired, None)
    pairs["gain"] = pairs["value"] - pairs["baseline_value"]
    own = [c for c in _CARRY if c in pairs]
    return pairs[own + PAIR_COLUMNS]


def correct_vector(key: object, value: float, correct: Mapping[object, np.ndarray]) -> np.ndarray:
    """One cell's per-example correctness as floats, checked against its recorded accuracy.

    A mismatch of half an example or more means the mapping holds another cell's predictions.
    """
    vec = np.asarray(correct[key], dtype=float).ravel()
    if vec.size == 0:
        raise ValueError(f"empty correctness vector for cell {key!r}")
    if np.isfinite(value) and abs(vec.mean() - value) >= 0.5 / vec.size:
        raise ValueError(
            f"cell {key!r}: mean correctness {vec.mean():.6f} != recorded accuracy {value:.6f}"
        )
    return vec


def correctness_rows(
    keys: list[object],
    values: list[float],
    correct: Mapping[object, np.ndarray] | None,
) -> np.ndarray | str:
    """Stack cells' correctness vectors into a seeds x examples matrix, or say why not."""
    if correct is None:
        return "no per-example correctness given"
    missing = [k for k in keys if k is None or k not in correct]
    if missing:
        return f"per-example correctness missing for {len(missing)} cell(s)"
    vecs = [correct_vector(k, v, correct) for k, v in zip(keys, values, strict=True)]
    if len({v.size for v in vecs}) > 1:
        return "cells of one target scored different numbers of test examples"
    return np.vstack(vecs)


def difference_matrix(
    group: pd.DataFrame, correct: Mapping[object, np.ndarray] | None
) -> np.ndarray | str:
    """Seeds x examples paired differences ``correct_transfer - mean(correct_partner)``.

    ``group`` holds paired rows of one comparison (one per seed). Returns a reason string when
    the correctness vectors are missing or misaligned (the caller falls back to seeds).
    """
    if "key" not in group:
        return "records have no key column"
    arm = correctness_rows(list(group["key"]), list(group["value"]), correct)
    if isinstance(arm, str):
        return arm
    assert correct is not None
    base_rows = []
    for keys, value in zip(group["baseline_keys"], group["baseline_value"], strict=True):
        rows = correctness_rows(list(keys), [np.nan] * len(keys), correct)
        if isinstance(rows, str):
            return rows
        mean = rows.mean(axis=0)
        if abs(mean.mean() - value) >= 0.5 / mean.size:
            raise ValueError(f"partner cells {keys!r}: correctness disagrees with their accuracy")
        base_rows.append(mean)
    if len({r.size for r in base_rows} | {arm.shape[1]}) > 1:
        return "transfer and partner cells scored different numbers of test examples"
    diff: np.ndarray = arm - np.vstack(base_rows)
    return diff
