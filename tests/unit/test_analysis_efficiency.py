"""Cost views: one cost (cost_s), per-hour rates with a floor, Pareto fronts, labels saved."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from atlbench.analysis import (
    MIN_COST_S,
    cost_accuracy,
    gain_per_hour,
    labels_saved,
    pareto_front,
)

BASE = "resnet (random init)"


def record(
    source: str,
    target: str,
    strategy: str,
    seed: int,
    acc: float,
    *,
    role: str = "transfer",
    trains_encoder: bool = True,
    arch: str = "resnet",
    budget: str = "10/class",
    n_train: int = 100,
    cost_s: float = 600.0,
    device: str = "cpu",
) -> dict:
    return {
        "key": f"{source}|{target}|{strategy}|{budget}|{seed}",
        "source": source,
        "target": target,
        "strategy": strategy,
        "budget": budget,
        "seed": seed,
        "arch": arch,
        "status": "done",
        "test_acc": acc,
        "n_train": n_train,
        "role": role,
        "trains_encoder": trains_encoder,
        "cost_s": cost_s,
        "train_time_s": 1.0,  # never the cost: cost_s is
        "device": device,
    }


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
            dominated = any(
                (sign * df.at[j, "t"] <= xi and df.at[j, "acc"] >= yi)
                and (sign * df.at[j, "t"] < xi or df.at[j, "acc"] > yi)
                for j in df.index
                if not np.isnan(df.at[j, "acc"])
            )
            assert mask[i] == (not dominated), i
        assert mask[6] == mask[7]


def test_gain_per_hour_uses_cost_s_separates_devices_and_refuses_tiny_costs() -> None:
    rows = []
    for seed in range(3):
        s = 0.4 + 0.01 * seed
        for target, device, cost, gain in (("t1", "cpu", 1800.0, 0.1), ("t2", "cuda:0", 900, 0.2)):
            rows.append(record(BASE, target, "scratch", seed, s, role="baseline", cost_s=9e4))
            rows.append(record("src", target, "ft", seed, s + gain, cost_s=cost, device=device))
        rows.append(record(BASE, "t1", "knn", seed, 0.2, role="random_init", trains_encoder=False))
        rows.append(
            record("src", "t1", "knn", seed, 0.3, trains_encoder=False, cost_s=2.0)
        )  # fmt: skip
    out = gain_per_hour(pd.DataFrame(rows))
    assert list(out.columns) == [
        "source",
        "target",
        "strategy",
        "budget",
        "comparison",
        "device_kind",
        "n_pairs",
        "gain_mean",
        "cost_s",
        "cost_hours",
        "gain_per_cpu_hour",
        "gain_per_gpu_hour",
        "reason",
    ]
    out = out.set_index(["target", "strategy"])
    ft1, ft2, knn = out.loc[("t1", "ft")], out.loc[("t2", "ft")], out.loc[("t1", "knn")]
    assert ft1["device_kind"] == "cpu" and ft2["device_kind"] == "gpu"
    assert ft1["gain_per_cpu_hour"] == pytest.approx(0.1 / 0.5) and ft1["reason"] == ""
    assert math.isnan(ft1["gain_per_gpu_hour"])
    assert ft2["gain_per_gpu_hour"] == pytest.approx(0.2 / 0.25)
    assert math.isnan(ft2["gain_per_cpu_hour"])
    # A 2-second kNN gets no rate (it would read 0.1 / (2/3600) = 180 per CPU-hour).
    assert math.isnan(knn["gain_per_cpu_hour"]) and f"< {MIN_COST_S:g} s" in knn["reason"]
    assert knn["gain_mean"] == pytest.approx(0.1)  # same_algorithm: vs its random-init run
    frame = pd.DataFrame(rows)
    frame.loc[frame["strategy"].eq("ft"), "cost_s"] = np.nan
    missing = gain_per_hour(frame).set_index(["target", "strategy"]).loc[("t1", "ft")]
    assert missing["reason"] == "no cost_s recorded" and math.isnan(missing["gain_per_cpu_hour"])


def test_cost_accuracy_marks_the_front_per_target_budget_and_device() -> None:
    rows = []
    for seed in range(2):
        rows.append(record(BASE, "t", "scratch", seed, 0.5, role="baseline", cost_s=1000))
        rows.append(record("a", "t", "ft", seed, 0.8, cost_s=500))
        rows.append(record("b", "t", "ft", seed, 0.7, cost_s=800))  # dominated by a
        rows.append(record("c", "t", "knn", seed, 0.6, trains_encoder=False, cost_s=5))
    out = cost_accuracy(pd.DataFrame(rows)).set_index("source")
    assert out.loc["a", "pareto"] and out.loc["c", "pareto"]
    assert not out.loc["b", "pareto"] and not out.loc[BASE, "pareto"]
    assert out.loc["a", "cost_hours"] == pytest.approx(500 / 3600)
    assert out.loc[BASE, "role"] == "baseline"


def _vector(acc: float, m: int, rng: np.random.Generator) -> np.ndarray:
    vec = np.zeros(m, dtype=bool)
    vec[rng.choice(m, size=round(acc * m), replace=False)] = True
    return vec


def _curve_records(
    rng: np.random.Generator, m: int = 400
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    curve = {("5/class", 50): 0.2, ("10/class", 100): 0.4, ("20/class", 200): 0.5}
    rows, correct = [], {}
    jitter = (0.01, -0.01, 0.005, -0.005)  # whole examples of 400; seed means = the curve

    def add(row: dict) -> None:
        rows.append(row)
        correct[row["key"]] = _vector(row["test_acc"], m, rng)

    for seed, j in enumerate(jitter):
        for (budget, n), acc in curve.items():
            add(record(BASE, "t", "scratch", seed, acc + j, role="baseline", budget=budget,
                       n_train=n))  # fmt: skip
        for source, acc, budget, n in (
            ("mid", 0.45, "5/class", 50),
            ("never", 0.7, "5/class", 50),
            ("worse", 0.3, "10/class", 100),
            ("flat", 0.2, "5/class", 50),
        ):
            add(record(source, "t", "ft", seed, acc - j / 2, budget=budget, n_train=n))
    rows.append(record("nobase", "t", "ft", 0, 0.5, arch="vit", budget="5/class", n_train=50))
    return pd.DataFrame(rows), correct


def test_labels_saved_interpolates_in_log_n_and_only_for_significant_gains() -> None:
    records, _ = _curve_records(np.random.default_rng(0))
    out = labels_saved(records, n_bootstrap=400)
    assert list(out.columns) == [
        "source",
        "target",
        "strategy",
        "budget",
        "arch",
        "n_train",
        "mean",
        "verdict",
        "scratch_labels_needed",
        "labels_saved",
        "labels_saved_ci_low",
        "labels_saved_ci_high",
        "interval",
        "reason",
    ]
    out = out.set_index("source")
    mid = out.loc["mid"]
    # 0.45 lies halfway between 0.4 (n=100) and 0.5 (n=200): in log(n), sqrt(100 * 200).
    needed = math.exp(math.log(100) + 0.5 * (math.log(200) - math.log(100)))
    assert mid["verdict"] == "above scratch training (significant)"
    assert mid["scratch_labels_needed"] == pytest.approx(needed)
    assert mid["labels_saved"] == pytest.approx(needed - 50) and mid["reason"] == ""
    assert mid["labels_saved_ci_low"] <= mid["labels_saved"] <= mid["labels_saved_ci_high"]
    assert mid["interval"] == "bootstrap: seeds only"
    assert "never reaches" in out.loc["never", "reason"]
    for source, word in (("worse", "below scratch"), ("flat", "not significant")):
        assert math.isnan(out.loc[source, "labels_saved"]) and word in out.loc[source, "reason"]
    assert out.loc["nobase", "verdict"] == "no scratch run"


def test_labels_saved_bootstrap_resamples_test_examples_with_correctness() -> None:
    records, correct = _curve_records(np.random.default_rng(1))
    seeds = labels_saved(records, n_bootstrap=400).set_index("source").loc["mid"]
    both = labels_saved(records, correct, n_bootstrap=400).set_index("source").loc["mid"]
    assert both["interval"] == "bootstrap: seeds + test examples"
    assert both["labels_saved"] == pytest.approx(seeds["labels_saved"])
    width = both["labels_saved_ci_high"] - both["labels_saved_ci_low"]
    assert width > seeds["labels_saved_ci_high"] - seeds["labels_saved_ci_low"]
