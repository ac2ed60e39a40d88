"""Estimator-vs-truth agreement checked against scipy and a pairwise weighted-tau loop."""

from __future__ import annotations

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


def rec(source: str, target: str, strategy: str, budget: str, n_train: int, seed: int, acc: float,
        status: str = "done") -> dict:  # fmt: skip
    return {
        "key": f"{source}{target}{strategy}{budget}{seed}{status}",
        "suite": "unit",
        "source": source,
        "target": target,
        "strategy": strategy,
        "budget": budget,
        "budget_kind": "per_class",
        "budget_value": float(n_train),
        "n_train": n_train,
        "seed": seed,
        "status": status,
        "arch": "a",
        "test_acc": acc,
        "test_macro_f1": acc,
        "val_acc": acc,
        "train_time_s": 1.0,
        "trainable_params": 1,
        "total_params": 1,
        "device": "cpu",
    }


def make_records(rng: np.random.Generator, sources: list[str], targets: list[str]):
    """Records over two strategies and two budgets; returns them with the reference truths."""
    rows, means = [], {}
    for target in targets:
        for seed in range(3):
            for budget, n in (("5/class", 50), ("20/class", 200)):
                rows.append(rec("scratch src", target, "scratch", budget, n, seed, 0.99))
        for source in sources:
            for strategy in ("probe", "finetune"):
                for budget, n in (("5/class", 50), ("20/class", 200)):
                    accs = rng.uniform(0.2, 0.9, size=3)
                    for seed, a in enumerate(accs):
                        rows.append(rec(source, target, strategy, budget, n, seed, float(a)))
                    rows.append(rec(source, target, strategy, budget, n, 9, 1.0, "failed"))
                    means[(source, target, strategy, n)] = float(np.mean(accs))
    return pd.DataFrame(rows), means


def test_ground_truth_best_and_named_strategy() -> None:
    rng = np.random.default_rng(0)
    sources, targets = ["s1", "s2", "s3"], ["t1", "t2"]
    records, means = make_records(rng, sources, targets)
    best = ground_truth(records).set_index(["source", "target"])["truth"]
    ft = ground_truth(records, truth="finetune").set_index(["source", "target"])["truth"]
    for s in sources:
        for t in targets:
            # Largest budget only; scratch (0.99 everywhere) must never be the truth.
            expected = max(means[(s, t, "probe", 200)], means[(s, t, "finetune", 200)])
            assert best[(s, t)] == pytest.approx(expected)
            assert ft[(s, t)] == pytest.approx(means[(s, t, "finetune", 200)])


def test_estimator_agreement_matches_references() -> None:
    rng = np.random.default_rng(11)
    sources = [f"s{i}" for i in range(9)]
    targets = ["t1", "t2", "t3"]
    records, _ = make_records(rng, sources, targets)
    truth = ground_truth(records).set_index(["source", "target"])["truth"]
    score_rows = []
    for t in targets:
        for s in sources:
            score_rows.append((s, t, "good", truth[(s, t)] + rng.normal(0, 0.05)))
            score_rows.append((s, t, "random", rng.normal()))
        # Only two sources scored: too few for a correlation.
        score_rows += [(s, t, "sparse", rng.normal()) for s in sources[:2]]
    scores = pd.DataFrame(score_rows, columns=["source", "target", "estimator", "score"])
    out = estimator_agreement(scores, records)
    assert list(out.columns) == [
        "target",
        "estimator",
        "n_sources",
        "weighted_tau",
        "pearson_r",
        "rel_top1",
        "reason",
    ]
    out = out.set_index(["target", "estimator"])
    for t in targets:
        for est in ("good", "random"):
            sub = scores[(scores["target"] == t) & (scores["estimator"] == est)]
            x = sub["score"].to_numpy()
            y = np.array([truth[(s, t)] for s in sub["source"]])
            row = out.loc[(t, est)]
            assert row["n_sources"] == len(sources) and row["reason"] == ""
            assert row["weighted_tau"] == pytest.approx(weighted_tau_loop(x, y), abs=1e-12)
            assert row["weighted_tau"] == pytest.approx(sps.weightedtau(x, y).statistic)
            assert row["pearson_r"] == pytest.approx(sps.pearsonr(x, y).statistic, abs=1e-12)
            assert row["rel_top1"] == pytest.approx(y[np.argmax(x)] / y.max())
        sparse = out.loc[(t, "sparse")]
        assert sparse["n_sources"] == 2 and "need >= 3" in sparse["reason"]
        assert math.isnan(sparse["weighted_tau"]) and math.isnan(sparse["rel_top1"])
    # A score close to the truth ranks far better than noise on average.
    assert out.xs("good", level="estimator")["weighted_tau"].mean() > 0.5


def test_estimator_agreement_accepts_truth_frame_and_is_rank_sensitive() -> None:
    rng = np.random.default_rng(2)
    truth_values = rng.uniform(0.3, 0.9, size=6)
    truth = pd.DataFrame(
        {"source": [f"s{i}" for i in range(6)], "target": "t", "truth": truth_values}
    )
    perfect = truth.assign(estimator="perfect", score=np.log(truth_values))  # monotone transform
    reverse = truth.assign(estimator="reverse", score=-truth_values)
    scores = pd.concat([perfect, reverse])[["source", "target", "estimator", "score"]]
    out = estimator_agreement(scores, None, truth=truth).set_index("estimator")
    assert out.loc["perfect", "weighted_tau"] == pytest.approx(1.0)
    assert out.loc["perfect", "rel_top1"] == pytest.approx(1.0)
    assert out.loc["reverse", "weighted_tau"] == pytest.approx(-1.0)
    assert out.loc["reverse", "pearson_r"] == pytest.approx(-1.0)
    assert out.loc["reverse", "rel_top1"] == pytest.approx(truth_values.min() / truth_values.max())
