"""P(improvement) with exact Clopper-Pearson intervals, and the rliable-style IQM."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from statsmodels.stats.proportion import proportion_confint

from atlbench.analysis import clopper_pearson, interquartile_mean, probability_of_improvement


def record(source: str, target: str, seed: int, acc: float, role: str = "transfer") -> dict:
    strategy = "scratch" if role == "baseline" else "ft"
    return {
        "key": f"{source}|{target}|{strategy}|{seed}",
        "source": source,
        "target": target,
        "strategy": strategy,
        "budget": "5/class",
        "seed": seed,
        "arch": "resnet",
        "status": "done",
        "test_acc": acc,
        "n_train": 50,
        "role": role,
        "trains_encoder": True,
    }


@pytest.mark.parametrize("n", [1, 2, 6, 17, 60])
def test_clopper_pearson_matches_statsmodels_beta(n: int) -> None:
    for k in range(n + 1):
        for level in (0.9, 0.95):
            ref = proportion_confint(k, n, alpha=1 - level, method="beta")
            assert clopper_pearson(k, n, level) == pytest.approx(ref, abs=1e-12)


def test_zero_wins_out_of_six() -> None:
    low, high = clopper_pearson(0, 6)
    assert low == 0.0 and high == pytest.approx(0.4593, abs=1e-4)


def test_probability_of_improvement_counts_pairs_and_brackets_ties() -> None:
    rng = np.random.default_rng(7)
    rows, wins, ties, n = [], 0, 0, 0
    for k, n_seeds in enumerate((3, 5, 8)):
        target = f"t{k}"
        for seed in range(n_seeds):
            s = float(rng.uniform(0.3, 0.6))
            t = s if seed == 0 else s + float(rng.normal(0.02, 0.05))
            rows += [record("rand", target, seed, s, "baseline"), record("src", target, seed, t)]
            wins, ties, n = wins + (t > s), ties + (t == s), n + 1
        rows.append(record("src", target, 99, 1.0) | {"status": "failed"})
    out = probability_of_improvement(pd.DataFrame(rows))
    assert list(out.columns) == [
        "source",
        "strategy",
        "budget",
        "comparison",
        "n_targets",
        "n_pairs",
        "wins",
        "ties",
        "losses",
        "prob_improvement",
        "ci_low",
        "ci_high",
        "interval",
    ]
    row = out.iloc[0]
    assert (row["n_targets"], row["n_pairs"], row["wins"], row["ties"]) == (3, n, wins, ties)
    assert ties == 3 and row["prob_improvement"] == pytest.approx((wins + ties / 2) / n)
    # Lower bound: ties as losses; upper bound: ties as wins (exact whatever the tie-break).
    assert row["ci_low"] == pytest.approx(proportion_confint(wins, n, method="beta")[0])
    assert row["ci_high"] == pytest.approx(proportion_confint(wins + ties, n, method="beta")[1])
    assert "ties" in row["interval"]


def test_probability_of_improvement_all_losses() -> None:
    rows = []
    for seed in range(6):
        rows += [record("rand", "t", seed, 0.6, "baseline"), record("src", "t", seed, 0.5)]
    row = probability_of_improvement(pd.DataFrame(rows)).iloc[0]
    assert row["prob_improvement"] == 0.0
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((0.0, 0.4593), abs=1e-4)


def test_interquartile_mean_matches_scipy_and_a_loop_bootstrap() -> None:
    rng = np.random.default_rng(3)
    tasks = [rng.normal(0.1 * k, 1.0, size=size) for k, size in enumerate((5, 8, 12))]
    iqm, low, high = interquartile_mean(tasks, n_bootstrap=3000, seed=1)
    pooled = np.concatenate(tasks)
    assert iqm == pytest.approx(sps.trim_mean(pooled, 0.25))
    # By hand: the mean of the middle half of 8 values drops the two lowest and two highest.
    assert interquartile_mean([np.arange(8.0)], n_bootstrap=0)[0] == pytest.approx(3.5)
    ref_rng = np.random.default_rng(99)
    reps = []
    for _ in range(3000):
        draw = np.concatenate([t[ref_rng.integers(0, t.size, t.size)] for t in tasks])
        reps.append(sps.trim_mean(draw, 0.25))
    ref_low, ref_high = np.quantile(reps, [0.025, 0.975])
    assert low == pytest.approx(ref_low, abs=0.06) and high == pytest.approx(ref_high, abs=0.06)
    assert low <= iqm <= high
    # A (runs, tasks) matrix is read as rliable's layout.
    matrix = rng.normal(size=(6, 3))
    assert interquartile_mean(matrix)[0] == pytest.approx(sps.trim_mean(matrix.ravel(), 0.25))
