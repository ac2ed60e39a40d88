"""Estimator-vs-truth agreement checked against scipy and a pairwise weighted-tau loop."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from atlbench.analysis import estimator_agreement, ground_truth


def weighted_tau_loop(x: np.ndarray, y: np.ndarray) -> float:
    """Vigna's weighted tau, hyperbolic weights 1/(rank+1), additive pair weights, no ties.

    As in scipy's default (rank=True) the ranks come from decreasing lexicographic order of (x, y)
    and of (y, x), and the two values are averaged.
    """
    n = len(x)

    def one(a: np.ndarray, b: np.ndarray) -> float:
        order = np.lexsort((-b, -a))
        rank = np.empty(n)
        rank[order] = np.arange(n)
        w = 1.0 / (rank + 1.0)
        num = den = 0.0
        for i in range(n):
            for j in range(i + 1, n):
                num += (w[i] + w[j]) * np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
                den += w[i] + w[j]
        return num / den

    return 0.5 * (one(x, y) + one(y, x))


def rec(source: str, target: str, strategy: str, name: str, budget: str, seed: int, acc: float,
        role: str = "transfer", status: str = "done") -> dict:  # fmt: skip
    return {
        "key": f"{source}|{target}|{strategy}|{budget}|{seed}|{status}",
        "source": source,
        "target": target,
        "strategy": strategy,
        "strategy_name": name,
        "budget": budget,
        "n_train": 50 if budget == "5/class" else 200,
        "seed": seed,
        "status": status,
        "arch": "a",
        "test_acc": acc,
        "role": role,
        "trains_encoder": name not in ("linear_probe", "knn"),
    }


SEEDS = range(4)


def make_records(rng: np.random.Generator, sources: list[str], targets: list[str]):
    """Two fine-tune variants, a probe and a kNN per source; returns the per-seed accuracies."""
    rows, acc = [], {}
    strategies = [
        ("finetune-lr3", "finetune"),
        ("finetune-lr4", "finetune"),
        ("probe", "linear_probe"),
        ("knn", "knn"),
    ]
    for target in targets:
        for budget in ("5/class", "20/class"):
            for seed in SEEDS:
                rows.append(rec("rand", target, "scratch", "scratch", budget, seed, 0.99,
                                role="baseline"))  # fmt: skip
            for source in sources:
                for label, name in strategies:
                    # The probe and the kNN beat fine-tuning here: they must never be the truth.
                    base = rng.uniform(0.2, 0.7) + (0.3 if name in ("linear_probe", "knn") else 0)
                    for seed in SEEDS:
                        a = float(base + rng.normal(0, 0.02))
                        acc[(source, target, budget, label, seed)] = a
                        rows.append(rec(source, target, label, name, budget, seed, a))
                    rows.append(rec(source, target, label, name, budget, 9, 1.0, status="failed"))
    return pd.DataFrame(rows), acc


def test_ground_truth_is_the_best_finetune_variant_never_a_probe() -> None:
    rng = np.random.default_rng(0)
    sources, targets = ["s1", "s2", "s3"], ["t1", "t2"]
    records, acc = make_records(rng, sources, targets)
    truth = ground_truth(records)
    assert list(truth.columns) == ["source", "target", "budget", "seed", "strategy", "truth"]
    assert len(truth) == len(sources) * len(targets) * 2 * len(SEEDS)
    for (source, target, budget), grp in truth.groupby(["source", "target", "budget"]):
        means = {
            label: np.mean([acc[(source, target, budget, label, s)] for s in SEEDS])
            for label in ("finetune-lr3", "finetune-lr4")
        }
        best = max(means, key=means.get)
        assert set(grp["strategy"]) == {best}
        for seed, value in zip(grp["seed"], grp["truth"], strict=True):
            assert value == pytest.approx(acc[(source, target, budget, best, seed)])
    # A label that is not a strategy_name selects that strategy alone.
    probe = ground_truth(records, truth="probe")
    assert set(probe["strategy"]) == {"probe"}
    one = ground_truth(records, truth="finetune-lr4")
    assert set(one["strategy"]) == {"finetune-lr4"}
    assert ground_truth(records, truth="nothing").empty


def _scores(truth: pd.DataFrame, rng: np.random.Generator, sources: list[str]) -> pd.DataFrame:
    rows = []
    for r in truth.itertuples(index=False):
        rows.append((r.source, r.target, r.budget, r.seed, "good", r.truth + rng.normal(0, 0.03)))
        rows.append((r.source, r.target, r.budget, r.seed, "random", rng.normal()))
        if r.source in sources[:2]:
            rows.append((r.source, r.target, r.budget, r.seed, "sparse", rng.normal()))
        if r.source in sources[:4]:
            rows.append((r.source, r.target, r.budget, r.seed, "four", rng.normal()))
    return pd.DataFrame(rows, columns=["source", "target", "budget", "seed", "estimator", "score"])


def test_estimator_agreement_matches_references() -> None:
    rng = np.random.default_rng(11)
    sources = [f"s{i}" for i in range(9)]
    records, _ = make_records(rng, sources, ["t1", "t2"])
    truth = ground_truth(records)
    scores = _scores(truth, rng, sources)
    out = estimator_agreement(scores, records, n_bootstrap=200, n_permutations=200)
    assert list(out.columns) == [
        "target",
        "budget",
        "estimator",
        "n_sources",
        "n_seeds",
        "weighted_tau",
        "tau_ci_low",
        "tau_ci_high",
        "p_value",
        "pearson_r",
        "rel_top1",
        "indicative",
        "reason",
    ]
    out = out.set_index(["target", "budget", "estimator"])
    tmean = truth.groupby(["target", "budget", "source"])["truth"].mean()
    smean = scores.groupby(["target", "budget", "estimator", "source"])["score"].mean()
    for (target, budget, est), row in out.iterrows():
        if est in ("sparse", "four"):
            continue
        x = smean.loc[(target, budget, est)].to_numpy()
        y = tmean.loc[(target, budget)].reindex(smean.loc[(target, budget, est)].index).to_numpy()
        assert row["n_sources"] == 9 and row["n_seeds"] == len(SEEDS)
        assert row["weighted_tau"] == pytest.approx(weighted_tau_loop(x, y), abs=1e-12)
        assert row["weighted_tau"] == pytest.approx(sps.weightedtau(x, y).statistic)
        assert row["pearson_r"] == pytest.approx(sps.pearsonr(x, y).statistic, abs=1e-12)
        assert row["rel_top1"] == pytest.approx(y[np.argmax(x)] / y.max())
        assert not row["indicative"] and row["reason"] == ""
        assert 0 < row["p_value"] <= 1
    for target in ("t1", "t2"):
        for budget in ("5/class", "20/class"):
            good = out.loc[(target, budget, "good")]
            assert good["weighted_tau"] > 0.5 and good["p_value"] < 0.05
            assert good["tau_ci_low"] <= good["weighted_tau"] <= good["tau_ci_high"]
            sparse = out.loc[(target, budget, "sparse")]
            assert sparse["n_sources"] == 2 and "need >= 3" in sparse["reason"]
            assert math.isnan(sparse["weighted_tau"]) and sparse["indicative"]
            four = out.loc[(target, budget, "four")]
            assert four["indicative"] and "indicative" in four["reason"]
            assert np.isfinite(four["weighted_tau"])


def test_permutation_p_value_matches_exact_enumeration_and_scipy() -> None:
    rng = np.random.default_rng(5)

    def tau(x: np.ndarray, y: np.ndarray) -> float:
        return sps.weightedtau(x, y).statistic

    for n in (4, 6, 9):
        truth_values = rng.uniform(0.3, 0.9, size=n)
        frame = pd.DataFrame(
            {
                "source": [f"s{i}" for i in range(n)],
                "target": "t",
                "budget": "5/class",
                "seed": 0,
                "truth": truth_values,
            }
        )
        score = truth_values + rng.normal(0, 0.15, size=n)
        scores = frame.drop(columns="truth").assign(estimator="e", score=score)
        row = estimator_agreement(scores, None, truth=frame, n_permutations=3000, seed=1).iloc[0]
        observed = tau(score, truth_values)
        if n <= 6:  # exact: every pairing of truths with sources
            perms = itertools.permutations(truth_values)
            null = np.array([tau(score, np.array(p)) for p in perms])
            ref = float(np.mean(null >= observed - 1e-12))
            assert row["p_value"] == pytest.approx(ref, abs=1e-12)
        else:  # Monte Carlo against scipy's (SE ~ 0.007 each at these sizes)
            ref = sps.permutation_test(
                (score, truth_values),
                tau,
                permutation_type="pairings",
                alternative="greater",
                n_resamples=5000,
                random_state=0,
            ).pvalue
            assert row["p_value"] == pytest.approx(ref, abs=0.03)
        assert math.isnan(row["tau_ci_low"]) and "one seed" in row["reason"]
        assert row["indicative"] == (n < 5)


def test_seed_bootstrap_interval_against_a_plain_loop() -> None:
    rng = np.random.default_rng(8)
    n_src, n_seed = 7, 5
    base = rng.uniform(0.3, 0.9, n_src)
    truth_m = base[:, None] + rng.normal(0, 0.05, (n_src, n_seed))
    score_m = truth_m + rng.normal(0, 0.08, (n_src, n_seed))
    rows_t, rows_s = [], []
    for i in range(n_src):
        for s in range(n_seed):
            rows_t.append((f"s{i}", "t", "b", s, truth_m[i, s]))
            rows_s.append((f"s{i}", "t", "b", s, "e", score_m[i, s]))
    truth = pd.DataFrame(rows_t, columns=["source", "target", "budget", "seed", "truth"])
    scores = pd.DataFrame(
        rows_s, columns=["source", "target", "budget", "seed", "estimator", "score"]
    )
    row = estimator_agreement(scores, None, truth=truth, n_bootstrap=1500, seed=2).iloc[0]
    ref_rng = np.random.default_rng(77)
    reps = []
    for _ in range(1500):
        idx = ref_rng.integers(0, n_seed, n_seed)
        sm, tm = score_m[:, idx].mean(1), truth_m[:, idx].mean(1)
        reps.append(sps.weightedtau(sm, tm).statistic)
    low, high = np.quantile(reps, [0.025, 0.975])
    assert row["tau_ci_low"] == pytest.approx(low, abs=0.05)
    assert row["tau_ci_high"] == pytest.approx(high, abs=0.05)


def test_estimator_agreement_accepts_truth_frame_and_is_rank_sensitive() -> None:
    rng = np.random.default_rng(2)
    truth_values = rng.uniform(0.3, 0.9, size=6)
    truth = pd.DataFrame(
        {
            "source": [f"s{i}" for i in range(6)],
            "target": "t",
            "budget": "5/class",
            "seed": 0,
            "truth": truth_values,
        }
    )
    perfect = truth.assign(estimator="perfect", score=np.log(truth_values))  # monotone transform
    reverse = truth.assign(estimator="reverse", score=-truth_values)
    scores = pd.concat([perfect, reverse]).drop(columns="truth")
    out = estimator_agreement(scores, None, truth=truth).set_index("estimator")
    assert out.loc["perfect", "weighted_tau"] == pytest.approx(1.0)
    assert out.loc["perfect", "rel_top1"] == pytest.approx(1.0)
    assert out.loc["perfect", "p_value"] == pytest.approx(1 / math.factorial(6))
    assert out.loc["reverse", "weighted_tau"] == pytest.approx(-1.0)
    assert out.loc["reverse", "pearson_r"] == pytest.approx(-1.0)
    assert out.loc["reverse", "rel_top1"] == pytest.approx(truth_values.min() / truth_values.max())
    with pytest.raises(ValueError, match="seed"):
        estimator_agreement(scores.drop(columns="seed"), None, truth=truth)
