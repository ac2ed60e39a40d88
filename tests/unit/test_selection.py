"""The history baseline and estimator stability, checked against hand computations and scipy."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from atlbench.analysis import estimator_agreement, estimator_stability, history_scores, with_history

B5, B20 = "5/class", "20/class"


def truth_frame() -> pd.DataFrame:
    rows = [
        # source, target, budget, seed, truth
        ("a", "t1", B5, 0, 0.5), ("a", "t1", B5, 1, 0.7),  # seed-mean 0.6
        ("a", "t2", B5, 0, 0.8), ("a", "t2", B5, 1, 0.8),  # 0.8
        ("a", "t3", B5, 0, 0.4), ("a", "t3", B5, 1, 0.6),  # 0.5
        ("b", "t1", B5, 0, 0.3), ("b", "t1", B5, 1, 0.5),  # 0.4, b's only target
        ("a", "t2", B20, 0, 0.9),  # another budget: never mixed into 5/class
    ]  # fmt: skip
    frame = pd.DataFrame(rows, columns=["source", "target", "budget", "seed", "truth"])
    return frame.assign(strategy="finetune")


def test_history_is_the_mean_over_the_other_targets() -> None:
    at = pd.DataFrame([("b", "t2", B5, 0)], columns=["source", "target", "budget", "seed"])
    h = history_scores(truth_frame(), at=at)
    assert list(h.columns) == [
        "source", "target", "budget", "seed", "estimator", "score", "time_s", "set_level",
    ]  # fmt: skip
    assert set(h["estimator"]) == {"baseline_history"}
    got = {(r.source, r.target, r.budget, r.seed): r.score for r in h.itertuples()}
    expected = {
        ("a", "t1", B5): (0.8 + 0.5) / 2,
        ("a", "t2", B5): (0.6 + 0.5) / 2,
        ("a", "t3", B5): (0.6 + 0.8) / 2,
        ("b", "t2", B5): 0.4,  # scored on t2 but never fine-tuned there: t1 is another target
    }
    for (source, target, budget), value in expected.items():
        seeds = [k[3] for k in got if k[:3] == (source, target, budget)]
        assert seeds, (source, target, budget)
        for seed in seeds:  # the same seed-mean history on every seed of the key
            assert got[(source, target, budget, seed)] == pytest.approx(value)
    assert np.isnan(got[("b", "t1", B5, 0)])  # b was measured on no other target
    assert np.isnan(got[("a", "t2", B20, 0)])  # the only target at 20/class
    assert len(h) == 9 + 1


def test_with_history_is_judged_like_any_estimator() -> None:
    rng = np.random.default_rng(0)
    truth = truth_frame()
    est = truth.assign(estimator="e", score=rng.normal(size=len(truth)), time_s=0.1,
                       set_level=False).drop(columns=["truth", "strategy"])  # fmt: skip
    both = with_history(est, truth)
    assert set(both["estimator"]) == {"e", "baseline_history"}
    assert len(both.loc[both["estimator"].eq("e")]) == len(est)
    # adding it twice replaces, never duplicates
    assert len(with_history(both, truth)) == len(both)
    # the history rows enter estimator_agreement like any estimator's: on t1, sources a, c and
    # d have a history from t2 (b has none), so its weighted tau is over 3 sources
    more = pd.DataFrame(
        [(s, t, B5, seed, v)
         for s, t, v in [("c", "t1", 0.9), ("c", "t2", 0.2), ("d", "t1", 0.1), ("d", "t2", 0.3)]
         for seed in (0, 1)],
        columns=["source", "target", "budget", "seed", "truth"],
    )  # fmt: skip
    more = pd.concat([truth, more.assign(strategy="finetune")], ignore_index=True)
    agree = estimator_agreement(with_history(est.iloc[:0], more), None, truth=more)
    row = agree.loc[agree["estimator"].eq("baseline_history") & agree["target"].eq("t1")]
    assert len(row) == 1 and int(row["n_sources"].iloc[0]) == 3


def scores(rows: list[tuple[str, str, int, str, float]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["estimator", "budget", "seed", "source", "score"])
    return frame.assign(target="t")


def test_stability_matches_kendalltau_by_hand() -> None:
    sources = ["s1", "s2", "s3", "s4"]
    table = {  # budget -> seed -> scores of s1..s4
        B5: {0: [4.0, 3.0, 2.0, 1.0], 1: [3.0, 4.0, 2.0, 1.0], 2: [1.0, 2.0, 3.0, 4.0]},
        B20: {0: [4.0, 3.0, 1.0, 2.0], 1: [4.0, 3.0, 2.0, 1.0]},
    }
    rows = [("e", b, seed, src, v) for b, per in table.items() for seed, vals in per.items()
            for src, v in zip(sources, vals, strict=True)]  # fmt: skip
    # a fixed ranking, rescaled per seed and budget: only ranks matter, tau is 1
    rows += [("fixed", b, seed, src, (10 - i) * (seed + 2) + 100 * (b == B20))
             for b, per in table.items() for seed in per
             for i, src in enumerate(sources)]  # fmt: skip
    # one seed, one budget: nothing to compare
    rows += [("once", B5, 0, src, float(i)) for i, src in enumerate(sources)]
    out = estimator_stability(scores(rows)).set_index("estimator")

    def kt(x: list[float], y: list[float]) -> float:
        return float(sps.kendalltau(x, y).statistic)

    seed_taus = [kt(per[a], per[b]) for per in table.values()
                 for a, b in itertools.combinations(sorted(per), 2)]  # fmt: skip
    means = {b: np.mean(list(per.values()), axis=0) for b, per in table.items()}
    e = out.loc["e"]
    assert e["n_sources"] == 4
    assert e["seed_pairs"] == 3 + 1
    assert e["seed_tau"] == pytest.approx(np.mean(seed_taus))
    assert e["budget_pairs"] == 1
    assert e["budget_tau"] == pytest.approx(kt(list(means[B5]), list(means[B20])))
    assert e["reason"] == ""
    fixed = out.loc["fixed"]
    assert fixed["seed_tau"] == pytest.approx(1.0) and fixed["budget_tau"] == pytest.approx(1.0)
    once = out.loc["once"]
    assert once["seed_pairs"] == 0 and np.isnan(once["seed_tau"])
    assert "no seed pairs" in once["reason"] and "no budget pairs" in once["reason"]


def test_stability_uses_the_sources_both_sides_scored() -> None:
    rows = [("e", B5, 0, s, v) for s, v in zip("abcd", [1.0, 2.0, 3.0, 4.0], strict=True)]
    rows += [("e", B5, 1, s, v) for s, v in zip("abc", [1.0, 3.0, 2.0], strict=True)]
    rows += [("e", B5, 2, s, v) for s, v in zip("ab", [1.0, 2.0], strict=True)]  # too few
    out = estimator_stability(scores(rows)).iloc[0]
    assert out["seed_pairs"] == 1  # (0, 1) on a, b, c; the pairs with seed 2 share 2 sources
    assert out["seed_tau"] == pytest.approx(float(sps.kendalltau([1, 2, 3], [1, 3, 2]).statistic))
