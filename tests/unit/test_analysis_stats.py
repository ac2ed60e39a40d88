"""Seed statistics and efficiency views checked against scipy and straightforward float64 loops."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from atlbench.analysis import (
    gain_per_hour,
    holm,
    labels_saved,
    mean_ci,
    paired_gains,
    pareto_front,
    probability_of_improvement,
    summarize,
)


def record(
    source: str,
    target: str,
    strategy: str,
    seed: int,
    acc: float,
    *,
    arch: str = "resnet",
    budget: str = "10/class",
    n_train: int = 100,
    status: str = "done",
    train_time_s: float = 60.0,
    device: str = "cpu",
) -> dict:
    return {
        "key": f"{source}|{target}|{strategy}|{budget}|{seed}|{status}",
        "suite": "unit",
        "source": source,
        "target": target,
        "strategy": strategy,
        "budget": budget,
        "budget_kind": "per_class",
        "budget_value": float(budget.split("/")[0]) if "/" in budget else 1.0,
        "n_train": n_train,
        "seed": seed,
        "status": status,
        "arch": arch,
        "test_acc": acc,
        "test_macro_f1": acc,
        "val_acc": acc,
        "train_time_s": train_time_s,
        "trainable_params": 1000,
        "total_params": 2000,
        "device": device,
    }


SCRATCH_SRC = "resnet (random init)"


def holm_loop(p: list[float]) -> list[float]:
    """Holm step-down written out directly: sort, scale by (m - rank), running max, cap at 1."""
    idx = [i for i, v in enumerate(p) if not math.isnan(v)]
    m = len(idx)
    ranked = sorted(idx, key=lambda i: p[i])
    out = [math.nan] * len(p)
    running = 0.0
    for rank, i in enumerate(ranked):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


# ---------------------------------------------------------------- mean_ci / holm / summarize


@pytest.mark.parametrize("n", [2, 3, 7, 30])
def test_mean_ci_matches_scipy_t_interval(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(0.7, 0.05, size=n)
    for level in (0.9, 0.95, 0.99):
        mean, low, high = mean_ci(x, level)
        ref_low, ref_high = sps.t.interval(level, n - 1, loc=x.mean(), scale=sps.sem(x))
        assert mean == pytest.approx(x.mean(), abs=1e-12)
        assert low == pytest.approx(ref_low, abs=1e-12)
        assert high == pytest.approx(ref_high, abs=1e-12)


def test_mean_ci_too_few_values_gives_nan_bounds() -> None:
    mean, low, high = mean_ci([0.5])
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in mean_ci([]))
    # NaNs are dropped, not propagated.
    mean, low, _ = mean_ci([0.2, float("nan"), 0.4])
    assert mean == pytest.approx(0.3) and not math.isnan(low)


def test_holm_matches_plain_loop() -> None:
    rng = np.random.default_rng(0)
    for size in (1, 2, 5, 40):
        p = rng.uniform(0, 0.2, size=size) ** 2
        if size > 2:
            p[1] = np.nan
            p[2] = p[0]  # a tie
        got = holm(p)
        ref = holm_loop(list(p))
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-15, equal_nan=True)
        finite = np.isfinite(p)
        assert np.all(got[finite] >= p[finite]) and np.all(got[finite] <= 1.0)


def test_summarize_matches_scipy_per_group_and_ignores_failed() -> None:
    rng = np.random.default_rng(1)
    rows = []
    values: dict[tuple, list[float]] = {}
    for target in ("t1", "t2"):
        for budget, n_train in (("5/class", 50), ("10/class", 100)):
            for seed in range(4):
                acc = float(rng.uniform(0.4, 0.9))
                rows.append(record("src", target, "ft", seed, acc, budget=budget, n_train=n_train))
                values.setdefault((target, budget), []).append(acc)
            rows.append(record("src", target, "ft", 9, 0.0, budget=budget, status="failed"))
    out = summarize(pd.DataFrame(rows))
    assert list(out.columns) == [
        "source",
        "target",
        "strategy",
        "budget",
        "arch",
        "n_seeds",
        "mean",
        "std",
        "ci_low",
        "ci_high",
        "n_train",
    ]
    assert len(out) == 4
    for _, row in out.iterrows():
        x = np.array(values[(row["target"], row["budget"])])
        low, high = sps.t.interval(0.95, x.size - 1, loc=x.mean(), scale=sps.sem(x))
        assert row["n_seeds"] == 4
        assert row["mean"] == pytest.approx(x.mean())
        assert row["std"] == pytest.approx(x.std(ddof=1))
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
        assert row["n_train"] == (50 if row["budget"] == "5/class" else 100)


# ---------------------------------------------------------------- paired_gains


def _synthetic_sweep(rng: np.random.Generator) -> tuple[pd.DataFrame, dict, dict]:
    """Scratch at random accuracies; transfer = scratch + known offsets per source."""
    rows, scratch, transfer = [], {}, {}
    offsets = {
        "good": lambda: 0.10 + rng.normal(0, 0.01),
        "bad": lambda: -0.10 + rng.normal(0, 0.01),
        "noisy": lambda: rng.normal(0, 0.15),
        "same": lambda: 0.0,
    }
    seeds = range(6)
    for target in ("t1", "t2"):
        for seed in seeds:
            s = float(rng.uniform(0.3, 0.6))
            scratch[(target, seed)] = s
            rows.append(record(SCRATCH_SRC, target, "scratch", seed, s))
        # A failed scratch duplicate of a real key must not be averaged in.
        rows.append(record(SCRATCH_SRC, target, "scratch", 0, 0.99, status="failed"))
        for source, offset in offsets.items():
            for seed in seeds:
                acc = scratch[(target, seed)] + offset()
                transfer.setdefault((source, target), {})[seed] = acc
                rows.append(record(source, target, "ft", seed, acc))
            rows.append(record(source, target, "ft", 7, 0.0, status="failed"))
        # Only one seed: too few for any interval.
        acc = scratch[(target, 0)] + 0.2
        transfer[("few", target)] = {0: acc}
        rows.append(record("few", target, "ft", 0, acc))
    # A transfer cell whose architecture has no scratch baseline.
    rows.append(record("orphan", "t1", "ft", 0, 0.5, arch="vit"))
    return pd.DataFrame(rows).sample(frac=1.0, random_state=3), scratch, transfer


def test_paired_gains_against_scipy_and_hand_built_offsets() -> None:
    rng = np.random.default_rng(42)
    records, scratch, transfer = _synthetic_sweep(rng)
    out = paired_gains(records)
    assert list(out.columns) == [
        "source",
        "target",
        "strategy",
        "budget",
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
    out = out.set_index(["source", "target"])
    assert len(out) == len(transfer) + 1

    # Reference p-values over the paired groups, then Holm by the loop.
    ref_p = {}
    for key, by_seed in transfer.items():
        seeds = sorted(by_seed)
        t = np.array([by_seed[s] for s in seeds])
        s = np.array([scratch[(key[1], sd)] for sd in seeds])
        if len(seeds) >= 2 and np.any(t - s != 0):
            ref_p[key] = float(sps.ttest_rel(t, s).pvalue)
        else:
            ref_p[key] = math.nan
    keys = list(ref_p)
    ref_holm = dict(zip(keys, holm_loop([ref_p[k] for k in keys]), strict=True))

    for key, by_seed in transfer.items():
        row = out.loc[key]
        seeds = sorted(by_seed)
        t = np.array([by_seed[s] for s in seeds])
        s = np.array([scratch[(key[1], sd)] for sd in seeds])
        g = t - s
        assert row["n_pairs"] == len(seeds)
        assert row["mean"] == pytest.approx(t.mean())
        assert row["scratch_mean"] == pytest.approx(s.mean())
        assert row["gain_mean"] == pytest.approx(g.mean(), abs=1e-12)
        # Wang et al. 2019: error(transfer) - error(target only), error = 1 - accuracy.
        assert row["negative_transfer_gap"] == pytest.approx(
            (1 - t).mean() - (1 - s).mean(), abs=1e-12
        )
        if len(seeds) >= 2:
            half = sps.t.ppf(0.975, len(g) - 1) * g.std(ddof=1) / math.sqrt(len(g))
            assert row["gain_ci_low"] == pytest.approx(g.mean() - half, abs=1e-12)
            assert row["gain_ci_high"] == pytest.approx(g.mean() + half, abs=1e-12)
        if math.isnan(ref_p[key]):
            assert math.isnan(row["p_value"]) and math.isnan(row["p_holm"])
        else:
            assert row["p_value"] == pytest.approx(ref_p[key], rel=1e-8, abs=1e-300)
            assert row["p_holm"] == pytest.approx(ref_holm[key], rel=1e-8, abs=1e-300)
        # The documented rule, evaluated on the reference numbers.
        if len(seeds) < 2:
            expected = "too few seeds"
        elif g.mean() == 0:
            expected = "no difference"
        else:
            sign = "positive" if g.mean() > 0 else "negative"
            excludes = g.mean() - half > 0 or g.mean() + half < 0
            strength = (
                "inconclusive"
                if not excludes
                else "significant"
                if ref_holm[key] < 0.05
                else "nominal"
            )
            expected = f"{sign} ({strength})"
        assert row["verdict"] == expected
        assert ("5 seeds" in row["note"]) == (len(seeds) < 5)

    # The hand-built offsets give these verdicts whatever the random draws.
    for target in ("t1", "t2"):
        assert out.loc[("good", target), "verdict"] == "positive (significant)"
        assert out.loc[("bad", target), "verdict"] == "negative (significant)"
        assert out.loc[("bad", target), "negative_transfer_gap"] > 0
        assert out.loc[("same", target), "verdict"] == "no difference"
        assert out.loc[("few", target), "verdict"] == "too few seeds"
    orphan = out.loc[("orphan", "t1")]
    assert orphan["n_pairs"] == 0 and orphan["verdict"] == "too few seeds"
    assert "no scratch" in orphan["note"]


def test_paired_gains_holm_can_veto_a_per_comparison_ci() -> None:
    # Many comparisons with a marginal effect: the raw CI excludes 0, Holm does not confirm.
    rng = np.random.default_rng(5)
    rows = []
    for k in range(30):
        target = f"t{k}"
        gains = rng.normal(0, 1, size=5)
        gains = (gains - gains.mean()) / gains.std(ddof=1)
        # mean/sd*sqrt(5) = t = 3.0 -> two-sided p ~ 0.04 per comparison, ~1.0 after Holm x30.
        gains = gains + 3.0 / math.sqrt(5)
        for seed in range(5):
            rows.append(record(SCRATCH_SRC, target, "scratch", seed, 0.5))
            rows.append(record("src", target, "ft", seed, 0.5 + 0.01 * gains[seed]))
    out = paired_gains(pd.DataFrame(rows))
    assert np.all(out["gain_ci_low"] > 0)
    assert np.all(out["p_value"] < 0.05)
    assert np.all(out["p_holm"] >= 0.05)
    assert set(out["verdict"]) == {"positive (nominal)"}


# ---------------------------------------------------------------- probability of improvement


def test_probability_of_improvement_matches_reference_and_counts_ties_half() -> None:
    rng = np.random.default_rng(7)
    rows, per_target = [], {}
    for k, n_seeds in enumerate((3, 5, 8)):
        target = f"t{k}"
        for seed in range(n_seeds):
            s = float(rng.uniform(0.3, 0.6))
            t = s if seed == 0 else s + float(rng.normal(0.02, 0.05))
            rows.append(record(SCRATCH_SRC, target, "scratch", seed, s))
            rows.append(record("src", target, "ft", seed, t))
            per_target.setdefault(target, []).append(1.0 if t > s else 0.5 if t == s else 0.0)
        rows.append(record("src", target, "ft", 99, 1.0, status="failed"))
    out = probability_of_improvement(pd.DataFrame(rows), n_bootstrap=4000, seed=1)
    assert list(out.columns) == [
        "source",
        "strategy",
        "budget",
        "n_targets",
        "n_pairs",
        "prob_improvement",
        "ci_low",
        "ci_high",
    ]
    row = out.iloc[0]
    expected = np.mean([np.mean(v) for v in per_target.values()])
    assert row["prob_improvement"] == pytest.approx(expected)
    assert row["n_targets"] == 3 and row["n_pairs"] == 16

    # Independent stratified bootstrap (own generator, plain loop) gives similar percentiles.
    ref_rng = np.random.default_rng(12345)
    reps = []
    for _ in range(4000):
        means = []
        for v in per_target.values():
            draw = [v[ref_rng.integers(len(v))] for _ in range(len(v))]
            means.append(sum(draw) / len(draw))
        reps.append(sum(means) / len(means))
    ref_low, ref_high = np.quantile(reps, [0.025, 0.975])
    assert row["ci_low"] == pytest.approx(ref_low, abs=0.04)
    assert row["ci_high"] == pytest.approx(ref_high, abs=0.04)
    assert row["ci_low"] <= row["prob_improvement"] <= row["ci_high"]


# ---------------------------------------------------------------- efficiency


def test_pareto_front_matches_brute_force() -> None:
    rng = np.random.default_rng(3)
    for minimize_x in (True, False):
        df = pd.DataFrame(
            {"t": rng.integers(0, 15, size=60), "acc": rng.integers(0, 15, size=60) / 15}
        )
        df.loc[5, "acc"] = np.nan
        df.loc[6] = df.loc[7]  # an exact duplicate
        mask = pareto_front(df, "t", "acc", minimize_x=minimize_x)
        sign = 1 if minimize_x else -1
        for i in df.index:
            xi, yi = sign * df.at[i, "t"], df.at[i, "acc"]
            if np.isnan(yi):
                assert not mask[i]
                continue
            dominated = False
            for j in df.index:
                xj, yj = sign * df.at[j, "t"], df.at[j, "acc"]
                if np.isnan(yj):
                    continue
                if xj <= xi and yj >= yi and (xj < xi or yj > yi):
                    dominated = True
            assert mask[i] == (not dominated), i
        assert mask[6] == mask[7]


def test_gain_per_hour_uses_transfer_time_and_separates_devices() -> None:
    rows = []
    for seed in range(3):
        for target, device, t_time, gain in (
            ("t1", "cpu", 1800.0, 0.1),
            ("t2", "cuda:0", 900, 0.2),
        ):
            s = 0.4 + 0.01 * seed
            rows.append(record(SCRATCH_SRC, target, "scratch", seed, s, train_time_s=99999.0))
            rows.append(
                record("src", target, "ft", seed, s + gain, train_time_s=t_time, device=device)
            )
    out = gain_per_hour(pd.DataFrame(rows)).set_index("target")
    assert list(out.columns) == [
        "source",
        "strategy",
        "budget",
        "device_kind",
        "n_pairs",
        "gain_mean",
        "train_hours",
        "gain_per_cpu_hour",
        "gain_per_gpu_hour",
    ]
    assert out.loc["t1", "device_kind"] == "cpu" and out.loc["t2", "device_kind"] == "gpu"
    assert out.loc["t1", "gain_per_cpu_hour"] == pytest.approx(0.1 / 0.5)
    assert math.isnan(out.loc["t1", "gain_per_gpu_hour"])
    assert out.loc["t2", "gain_per_gpu_hour"] == pytest.approx(0.2 / 0.25)
    assert math.isnan(out.loc["t2", "gain_per_cpu_hour"])


def test_labels_saved_interpolates_scratch_learning_curve() -> None:
    curve = {("5/class", 50): 0.2, ("10/class", 100): 0.4, ("20/class", 200): 0.5}
    rows = []
    for seed in range(2):
        for (budget, n), acc in curve.items():
            jitter = 0.01 if seed == 0 else -0.01  # seed mean equals the curve value
            rows.append(
                record(SCRATCH_SRC, "t", "scratch", seed, acc + jitter, budget=budget, n_train=n)
            )
    cases = {"mid": 0.45, "never": 0.7, "worse": 0.3}
    for source, acc in cases.items():
        budget, n = ("5/class", 50) if source != "worse" else ("10/class", 100)
        for seed in range(2):
            rows.append(record(source, "t", "ft", seed, acc, budget=budget, n_train=n))
    rows.append(record("nobase", "t", "ft", 0, 0.5, arch="vit", budget="5/class", n_train=50))
    out = labels_saved(pd.DataFrame(rows)).set_index("source")
    assert list(out.columns) == [
        "target",
        "strategy",
        "budget",
        "arch",
        "n_train",
        "mean",
        "scratch_labels_needed",
        "labels_saved",
        "reason",
    ]
    # 0.45 lies halfway between 0.4 (n=100) and 0.5 (n=200): scratch needs 150 labels.
    needed = 100 + (0.45 - 0.4) / (0.5 - 0.4) * (200 - 100)
    assert out.loc["mid", "scratch_labels_needed"] == pytest.approx(needed)
    assert out.loc["mid", "labels_saved"] == pytest.approx(needed - 50)
    assert out.loc["mid", "reason"] == ""
    for source, word in (("never", "never"), ("worse", "already"), ("nobase", "no scratch")):
        assert math.isnan(out.loc[source, "labels_saved"])
        assert word in out.loc[source, "reason"]


def test_gain_per_hour_charges_the_whole_grid_and_the_features() -> None:
    """Cost = every grid point's training plus the forward pass that made the features."""
    rows = [record(SCRATCH_SRC, "t", "scratch", 0, 0.5), record("src", "t", "probe", 0, 0.8)]
    frame = pd.DataFrame(rows)
    frame.loc[1, "train_time_s"] = 0.001
    frame["selection_time_s"] = [np.nan, 30.0]
    frame["feature_time_s"] = [np.nan, 6.0]
    out = gain_per_hour(frame)
    assert out["train_hours"].iloc[0] == pytest.approx(36.0 / 3600.0)
    assert out["gain_per_cpu_hour"].iloc[0] == pytest.approx(0.3 / (36.0 / 3600.0))
