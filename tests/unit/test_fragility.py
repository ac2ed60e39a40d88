"""The near-threshold flag: distances from the lines that decide a verdict, against plain
float64 formulas, and the flag on verdicts with a known distance."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from atlbench.analysis._fragility import (
    FLIP_Z,
    RERUN_SD,
    line_gains,
    near_threshold,
    threshold_distance,
)
from atlbench.analysis._inference import p_value, tost_pvalue

ALPHA = 0.05


def _random_rows(rng: np.random.Generator, n: int, seed_level: bool) -> dict[str, np.ndarray]:
    s1 = rng.uniform(0.002, 0.03, n)
    d1 = rng.integers(2, 15, n).astype(float)
    s2 = np.zeros(n) if seed_level else rng.uniform(0.002, 0.03, n)
    d2 = np.full(n, np.inf) if seed_level else rng.uniform(50, 500, n)
    p_last = rng.uniform(1e-5, 0.9, n)
    factor = rng.uniform(1, 30, n)  # what the correction and the look's weight multiply by
    return {"parts": (s1, d1, s2, d2), "p_last": p_last, "p_adj": np.minimum(p_last * factor, 1),
            "p_eq_last": p_last[::-1].copy(), "p_eq_adj": np.minimum(p_last[::-1] * factor, 1),
            "ci_se": np.sqrt(s1**2 + s2**2), "ci_df": d1 + 3}  # fmt: skip


@pytest.mark.parametrize("seed_level", [True, False])
def test_line_gains_cross_each_line_exactly(seed_level: bool) -> None:
    """At the returned gain, the last look's p-value (and TOST p-value) is exactly the one at
    which the corrected p reaches alpha; at seed level the gain is scipy's t quantile."""
    rng = np.random.default_rng(20261205 + seed_level)
    r = _random_rows(rng, 60, seed_level)
    margin = 0.05
    edge, sig, eq = line_gains(r["parts"], r["ci_se"], r["ci_df"], r["p_last"], r["p_adj"],
                               r["p_eq_last"], r["p_eq_adj"], margin, ALPHA)  # fmt: skip
    np.testing.assert_allclose(edge, stats.t.ppf(0.975, r["ci_df"]) * r["ci_se"], rtol=1e-12)
    target = r["p_last"] * ALPHA / r["p_adj"]
    ok = target < 1
    np.testing.assert_allclose(p_value(sig, *r["parts"])[ok], target[ok], rtol=1e-6)
    if seed_level:
        s1, d1 = r["parts"][:2]
        np.testing.assert_allclose(sig[ok], s1[ok] * stats.t.isf(target[ok] / 2, d1[ok]))
    target_eq = r["p_eq_last"] * ALPHA / r["p_eq_adj"]
    fine = (target_eq < 0.5) & (eq > 0)
    assert fine.sum() > 5
    got = tost_pvalue(eq[fine], *(a[fine] for a in r["parts"]), margin=margin)
    np.testing.assert_allclose(got, target_eq[fine], rtol=1e-6)


def test_the_lines_that_can_change_each_verdict() -> None:
    """Directed (|gain| beyond the interval's edge): the edge and the significance line count,
    not equivalence. Not directed: the edge and the equivalence line, not significance."""
    gain = np.array([0.10, 0.10, 0.01, -0.01])
    se = np.full(4, 0.02)
    edge = np.full(4, 0.04)
    sig = np.array([0.09, 0.02, 0.011, 0.5])
    eq = np.array([0.099, 0.099, 0.018, np.nan])
    got = threshold_distance(gain, se, (edge, sig, eq))
    np.testing.assert_allclose(got, [0.5, 3.0, 0.4, 1.5])
    nan = np.array([np.nan])
    assert np.isnan(threshold_distance(nan, np.ones(1), (nan, nan, nan))[0])


def test_the_flag_is_the_re_run_spread_times_flip_z() -> None:
    limit = FLIP_Z * RERUN_SD
    distance = np.array([0.0, limit * 0.99, limit * 1.01, 10.0, np.nan])
    assert near_threshold(distance).tolist() == [True, True, False, False, False]


def test_paired_gains_flags_by_the_distance_it_reports() -> None:
    """Gains of 15 points over 10 tight seeds sit far from every line; on random gains the flag is
    exactly "distance below FLIP_Z re-run SDs", and a flagged row says so in its note."""
    import pandas as pd
    from test_sequential import _records

    from atlbench.analysis._gains import paired_gains

    rng = np.random.default_rng(20261206)
    parts, correct = [], {}
    tight = np.full(10, 0.15) + rng.normal(0, 0.01, 10)
    noisy = [rng.normal(rng.uniform(-0.03, 0.03), 0.03, 5) for _ in range(30)]
    for i, gains in enumerate([tight, *noisy]):
        recs, corr = _records(gains, rng)
        recs["key"] = [f"{i}-{k}" for k in recs["key"]]
        recs["source"] = np.where(recs["role"] == "transfer", f"src{i}", recs["source"])
        recs["target"] = f"t{i}"
        parts.append(recs)
        correct |= {f"{i}-{k}": v for k, v in corr.items()}
    table = paired_gains(pd.concat(parts, ignore_index=True), correct, "scratch",
                         equivalence_margin=0.05)  # fmt: skip
    assert len(table) == 31
    by = table.set_index("source")
    assert by.loc["src0", "verdict"] == "above scratch training (significant)"
    assert by.loc["src0", "threshold_distance"] > 2 * FLIP_Z
    assert not by.loc["src0", "near_threshold"]
    limit = FLIP_Z * RERUN_SD
    np.testing.assert_array_equal(
        table["near_threshold"].to_numpy(bool), table["threshold_distance"].to_numpy() < limit
    )
    assert 0 < table["near_threshold"].sum() < len(table)  # the random gains give both kinds
    for row in table.itertuples():
        assert ("may give the other verdict" in row.note) == row.near_threshold
