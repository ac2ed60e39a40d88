"""Intervals, corrections and paired gains checked against scipy, statsmodels and plain loops."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import integrate
from scipy import stats as sps
from scipy.special import stdtr
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from atlbench.analysis import (
    VERDICTS,
    adjust_pvalues,
    benjamini_hochberg,
    crossed_mean,
    error_quantile,
    error_sf,
    holm,
    interval,
    mean_ci,
    p_value,
    paired_gains,
    paired_runs,
    summarize,
    tost_pvalue,
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
    status: str = "done",
) -> dict:
    return {
        "key": f"{source}|{target}|{strategy}|{budget}|{seed}|{status}",
        "source": source,
        "target": target,
        "strategy": strategy,
        "strategy_name": strategy,
        "budget": budget,
        "seed": seed,
        "arch": arch,
        "status": status,
        "test_acc": acc,
        "test_macro_f1": acc,
        "n_train": n_train,
        "n_test": 100,
        "role": role,
        "trains_encoder": trains_encoder,
        "cost_s": 600.0,
        "device": "cpu",
    }


def baseline(target: str, seed: int, acc: float, **kw: object) -> dict:
    return record(BASE, target, "scratch", seed, acc, role="baseline", **kw)


def t_pdf(t: float, df: float) -> float:
    """Student t density, written out (scipy.stats' per-call overhead is slow in quad)."""
    if math.isinf(df):
        return math.exp(-0.5 * t * t) / math.sqrt(2 * math.pi)
    log_c = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_c - (df + 1) / 2 * math.log1p(t * t / df))


def holm_loop(p: list[float]) -> list[float]:
    """Holm step-down written out directly: sort, scale by (m - rank), running max, cap at 1."""
    idx = [i for i, v in enumerate(p) if not math.isnan(v)]
    m = len(idx)
    out = [math.nan] * len(p)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: p[i])):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


# ---------------------------------------------------------------- mean_ci / corrections


@pytest.mark.parametrize("n", [2, 3, 7, 30])
def test_mean_ci_matches_scipy_t_interval(n: int) -> None:
    rng = np.random.default_rng(n)
    x = rng.normal(0.7, 0.05, size=n)
    for level in (0.9, 0.95, 0.99):
        mean, low, high = mean_ci(x, level)
        ref_low, ref_high = sps.t.interval(level, n - 1, loc=x.mean(), scale=sps.sem(x))
        assert mean == pytest.approx(x.mean(), abs=1e-12)
        assert (low, high) == pytest.approx((ref_low, ref_high), abs=1e-12)


def test_mean_ci_too_few_values_gives_nan_bounds() -> None:
    mean, low, high = mean_ci([0.5])
    assert mean == 0.5 and math.isnan(low) and math.isnan(high)
    assert all(math.isnan(v) for v in mean_ci([]))
    mean, low, _ = mean_ci([0.2, float("nan"), 0.4])
    assert mean == pytest.approx(0.3) and not math.isnan(low)


def test_holm_and_bh_match_statsmodels_and_a_loop() -> None:
    rng = np.random.default_rng(0)
    for size in (1, 2, 5, 40):
        p = rng.uniform(0, 0.2, size=size) ** 2
        if size > 2:
            p[2] = p[0]  # a tie
        np.testing.assert_allclose(holm(p), holm_loop(list(p)), rtol=0, atol=1e-15)
        np.testing.assert_allclose(holm(p), multipletests(p, method="holm")[1], atol=1e-15)
        bh = multipletests(p, method="fdr_bh")[1]
        np.testing.assert_allclose(benjamini_hochberg(p), bh, atol=1e-15)
        np.testing.assert_allclose(adjust_pvalues(p, "bh"), bh, atol=1e-15)
        # NaNs stay NaN and do not count towards m.
        with_nan = np.append(p, np.nan)
        assert np.isnan(adjust_pvalues(with_nan, "bh")[-1])
        np.testing.assert_allclose(adjust_pvalues(with_nan, "holm")[:-1], holm(p), atol=0)
    with pytest.raises(ValueError, match="correction"):
        adjust_pvalues([0.1], "bonferroni")


# ---------------------------------------------------------------- crossed ANOVA and inference


def test_crossed_mean_squares_match_statsmodels_anova() -> None:
    from statsmodels.formula.api import ols
    from statsmodels.stats.anova import anova_lm

    rng = np.random.default_rng(3)
    n, m = 4, 30
    x = (rng.random((n, m)) < 0.6).astype(float) - (rng.random((n, m)) < 0.5)
    long = pd.DataFrame(
        {"y": x.ravel(), "seed": np.repeat(np.arange(n), m), "ex": np.tile(np.arange(m), n)}
    )
    table = anova_lm(ols("y ~ C(seed) + C(ex)", data=long).fit())
    ms = table["sum_sq"] / table["df"]
    cm = crossed_mean(x)
    assert cm.ms_seed == pytest.approx(ms["C(seed)"], rel=1e-10)
    assert cm.ms_example == pytest.approx(ms["C(ex)"], rel=1e-10)
    assert cm.ms_residual == pytest.approx(ms["Residual"], rel=1e-10)
    assert cm.mean == pytest.approx(x.mean())
    # The two parts: seed means' own spread (n - 1 df), the example component truncated at 0.
    seed_means = x.mean(axis=1)
    assert cm.se_seed**2 == pytest.approx(seed_means.var(ddof=1) / n, rel=1e-10)
    assert cm.df_seed == n - 1 and cm.df_example == m - 1
    assert cm.se_example**2 == pytest.approx(max(ms["C(ex)"] - ms["Residual"], 0) / (n * m))
    # The interval's single t: truncated components, Satterthwaite df (written out).
    s, j, e = ms["C(seed)"], ms["C(ex)"], ms["Residual"]
    total = max(s - e, 0) + max(j - e, 0) + e
    df = total**2 / (s**2 / (n - 1) + j**2 / (m - 1) + e**2 / ((n - 1) * (m - 1)))
    se, got_df = cm.satterthwaite
    assert se**2 == pytest.approx(total / (n * m)) and got_df == pytest.approx(df)
    # Batched over a leading axis gives the same numbers.
    batch = crossed_mean(np.stack([x, x[::-1]]))
    assert batch.ms_seed[0] == pytest.approx(cm.ms_seed) and batch.mean.shape == (2,)


def test_error_distribution_matches_scipy_t_and_numerical_integration() -> None:
    # s2 = 0 is Student t exactly; s1 = 0 the second t.
    x = np.array([-0.3, 0.0, 0.01, 0.05, 0.2])
    np.testing.assert_allclose(error_sf(x, 0.02, 2), sps.t.sf(x / 0.02, 2), rtol=1e-12)
    np.testing.assert_allclose(error_sf(x, 0.0, 2, 0.03, 50), sps.t.sf(x / 0.03, 50), rtol=1e-12)
    # A real sum of two t's against adaptive quadrature of the convolution, at the accuracy
    # the docstring of inference._Mixture states.
    cases = [(0.01, 2, 0.02, 143), (0.03, 4, 0.01, 268), (0.02, 2, 0.02, np.inf)]
    cases += [(0.001, 2, 0.02, 143), (0.05, 2, 0.005, 2), (0.02, 4, 0.02, 30)]
    for s1, d1, s2, d2 in cases:
        for xv in (0.02, 0.06, 0.15):
            ref = integrate.quad(
                lambda t, xv=xv, s1=s1, d1=d1, s2=s2, d2=d2: (
                    t_pdf(t, d2) * stdtr(d1, -(xv - s2 * t) / s1)
                ),
                -np.inf,
                np.inf,
                epsabs=1e-14,
                epsrel=1e-10,
                limit=200,
            )[0]
            got = float(error_sf(xv, s1, d1, s2, d2))
            if ref > 1e-2:
                assert got == pytest.approx(ref, rel=3e-5)
            elif ref > 1e-3:
                assert got == pytest.approx(ref, rel=2e-4)
            elif ref > 1e-4:
                assert got == pytest.approx(ref, rel=1e-3)
        q = error_quantile(0.025, s1, d1, s2, d2)
        assert error_sf(q, s1, d1, s2, d2) == pytest.approx(0.025, abs=1e-10)
    # No spread at all: nothing to test, never p = 0.
    assert np.isnan(p_value(0.1, 0.0, 2, 0.0, 10)) and np.isnan(interval(0.1, 0.0, 2)[0])


def test_interval_p_value_and_tost_match_the_paired_t_and_statsmodels() -> None:
    rng = np.random.default_rng(4)
    a, b = rng.normal(0.6, 0.03, 6), rng.normal(0.59, 0.03, 6)
    d = a - b
    se, df = d.std(ddof=1) / np.sqrt(d.size), d.size - 1
    assert p_value(d.mean(), se, df) == pytest.approx(sps.ttest_rel(a, b).pvalue, rel=1e-10)
    low, high = interval(d.mean(), se, df, level=0.9)
    ref = sps.t.interval(0.9, df, loc=d.mean(), scale=se)
    assert (low, high) == pytest.approx(ref, abs=1e-12)
    for margin in (0.01, 0.03, 0.1):
        ref_p = ttost_paired(a, b, -margin, margin)[0]
        assert tost_pvalue(d.mean(), se, df, margin=margin) == pytest.approx(ref_p, rel=1e-9)


# ---------------------------------------------------------------- summarize


def test_summarize_seed_level_matches_scipy_and_ignores_failed() -> None:
    rng = np.random.default_rng(1)
    rows, values = [], {}
    for target in ("t1", "t2"):
        for budget, n_train in (("5/class", 50), ("10/class", 100)):
            for seed in range(4):
                acc = float(rng.uniform(0.4, 0.9))
                rows.append(record("src", target, "ft", seed, acc, budget=budget, n_train=n_train))
                values.setdefault((target, budget), []).append(acc)
            rows.append(record("src", target, "ft", 9, 0.0, budget=budget, status="failed"))
    rows += [record("one", "t1", "ft", 0, 0.5), record("flat", "t1", "ft", 0, 0.5)]
    rows.append(record("flat", "t1", "ft", 1, 0.5))
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
        "interval",
    ]
    src = out[out["source"] == "src"]
    assert len(src) == 4
    for _, row in src.iterrows():
        x = np.array(values[(row["target"], row["budget"])])
        low, high = sps.t.interval(0.95, x.size - 1, loc=x.mean(), scale=sps.sem(x))
        assert row["n_seeds"] == 4 and row["mean"] == pytest.approx(x.mean())
        assert row["std"] == pytest.approx(x.std(ddof=1))
        assert (row["ci_low"], row["ci_high"]) == pytest.approx((low, high))
        assert row["n_train"] == (50 if row["budget"] == "5/class" else 100)
        assert row["interval"].startswith("seeds only")
    # One seed, or identical seeds: no interval rather than a zero-width one.
    for source, word in (("one", "too few"), ("flat", "no spread")):
        row = out[out["source"] == source].iloc[0]
        assert math.isnan(row["ci_low"]) and word in row["interval"]


def test_summarize_with_correctness_covers_the_test_examples() -> None:
    rng = np.random.default_rng(2)
    hard = rng.random(60) < 0.4  # examples every seed finds hard
    rows, correct = [], {}
    for seed in range(3):
        vec = ~hard & (rng.random(60) < 0.95)
        row = record("src", "t", "ft", seed, float(vec.mean()))
        rows.append(row)
        correct[row["key"]] = vec
    out = summarize(pd.DataFrame(rows), correct=correct).iloc[0]
    cm = crossed_mean(np.vstack(list(correct.values())).astype(float))
    se, df = cm.satterthwaite
    half = sps.t.ppf(0.975, df) * se
    assert (out["ci_low"], out["ci_high"]) == pytest.approx(
        (out["mean"] - half, out["mean"] + half), abs=1e-12
    )
    assert out["interval"].startswith("seeds + test examples")
    seed_only = summarize(pd.DataFrame(rows)).iloc[0]
    assert out["ci_high"] - out["ci_low"] > seed_only["ci_high"] - seed_only["ci_low"]
    # Correctness that contradicts the recorded accuracy is another cell's: refuse it.
    bad = dict(correct)
    bad[rows[0]["key"]] = ~correct[rows[0]["key"]]
    with pytest.raises(ValueError, match="recorded accuracy"):
        summarize(pd.DataFrame(rows), correct=bad)


# ---------------------------------------------------------------- pairing by role


def test_pairing_uses_roles_not_labels() -> None:
    rows = []
    for seed in range(3):
        rows.append(record(BASE, "t", "scratch-long", seed, 0.5, role="baseline"))
        # Labelled "scratch" but run on a pre-trained source: a transfer cell.
        rows.append(record("imnet", "t", "scratch", seed, 0.6 + 0.01 * seed))
        rows.append(record("imnet", "t", "knn", seed, 0.4, trains_encoder=False))
        rows.append(record(BASE, "t", "knn", seed, 0.3, role="random_init", trains_encoder=False))
    records = pd.DataFrame(rows)
    same = paired_runs(records, "same_algorithm").set_index(["strategy", "seed"])
    assert set(same.index.get_level_values(0)) == {"scratch", "knn"}
    assert same.loc[("scratch", 0), "baseline_strategy"] == "scratch-long"
    assert same.loc[("scratch", 0), "baseline_role"] == "baseline"
    assert same.loc[("knn", 0), "baseline_role"] == "random_init"
    assert same.loc[("knn", 0), "gain"] == pytest.approx(0.1)
    scratch = paired_runs(records, "scratch").set_index(["strategy", "seed"])
    assert scratch.loc[("knn", 0), "baseline_strategy"] == "scratch-long"
    assert scratch.loc[("knn", 0), "gain"] == pytest.approx(-0.1)
    gains = paired_gains(records, comparison="scratch").set_index("strategy")
    assert gains.loc["scratch", "n_pairs"] == 3 and len(gains) == 2
    with pytest.raises(ValueError, match="role"):
        paired_runs(records.drop(columns="role"))


# ---------------------------------------------------------------- paired_gains, seed level


def _synthetic_sweep(rng: np.random.Generator) -> tuple[pd.DataFrame, dict, dict]:
    """Scratch at random accuracies; transfer = scratch + known offsets per source."""
    rows, base, transfer = [], {}, {}
    offsets = {
        "good": lambda: 0.10 + rng.normal(0, 0.01),
        "bad": lambda: -0.10 + rng.normal(0, 0.01),
        "noisy": lambda: rng.normal(0, 0.15),
    }
    for target in ("t1", "t2"):
        for seed in range(6):
            base[(target, seed)] = float(rng.uniform(0.3, 0.6))
            rows.append(baseline(target, seed, base[(target, seed)]))
        rows.append(baseline(target, 0, 0.99, status="failed"))  # must not be averaged in
        for source, offset in offsets.items():
            for seed in range(6):
                acc = base[(target, seed)] + offset()
                transfer.setdefault((source, target), {})[seed] = acc
                rows.append(record(source, target, "ft", seed, acc))
            rows.append(record(source, target, "ft", 7, 0.0, status="failed"))
        transfer[("few", target)] = {0: base[(target, 0)] + 0.2}
        rows.append(record("few", target, "ft", 0, base[(target, 0)] + 0.2))
    rows.append(record("orphan", "t1", "ft", 0, 0.5, arch="vit"))
    return pd.DataFrame(rows).sample(frac=1.0, random_state=3), base, transfer


def test_paired_gains_seed_level_against_scipy_and_the_documented_rule() -> None:
    rng = np.random.default_rng(42)
    records, base, transfer = _synthetic_sweep(rng)
    out = paired_gains(records)
    assert list(out.columns[:19]) == [
        "source",
        "target",
        "strategy",
        "budget",
        "arch",
        "comparison",
        "n_pairs",
        "mean",
        "baseline_mean",
        "gain_mean",
        "gain_ci_low",
        "gain_ci_high",
        "p_value",
        "p_adj",
        "correction",
        "interval",
        "verdict",
        "note",
        "negative_transfer_gap",
    ]
    out = out.set_index(["source", "target"])
    ref_p = {}
    for key, by_seed in transfer.items():
        t = np.array([by_seed[s] for s in sorted(by_seed)])
        s = np.array([base[(key[1], sd)] for sd in sorted(by_seed)])
        ref_p[key] = float(sps.ttest_rel(t, s).pvalue) if t.size >= 2 else math.nan
    keys = list(ref_p)
    ref_holm = dict(zip(keys, holm_loop([ref_p[k] for k in keys]), strict=True))
    for key, by_seed in transfer.items():
        row = out.loc[key]
        t = np.array([by_seed[s] for s in sorted(by_seed)])
        s = np.array([base[(key[1], sd)] for sd in sorted(by_seed)])
        g = t - s
        assert row["n_pairs"] == g.size and row["comparison"] == "same_algorithm"
        assert row["mean"] == pytest.approx(t.mean())
        assert row["baseline_mean"] == pytest.approx(s.mean())
        assert row["gain_mean"] == pytest.approx(g.mean(), abs=1e-12)
        # Wang et al. 2019: error(A(S,T)) - error(A(empty,T)), error = 1 - accuracy.
        gap = (1 - t).mean() - (1 - s).mean()
        assert row["negative_transfer_gap"] == pytest.approx(gap, abs=1e-12)
        if g.size < 2:
            assert row["verdict"] == "too few seeds" and math.isnan(row["p_value"])
            continue
        low, high = sps.t.interval(0.95, g.size - 1, loc=g.mean(), scale=sps.sem(g))
        assert (row["gain_ci_low"], row["gain_ci_high"]) == pytest.approx((low, high), abs=1e-12)
        assert row["p_value"] == pytest.approx(ref_p[key], rel=1e-8, abs=1e-300)
        assert row["p_adj"] == pytest.approx(ref_holm[key], rel=1e-8, abs=1e-300)
        assert row["interval"].startswith("seeds only") and row["correction"] == "holm"
        if low > 0 or high < 0:
            strength = "significant" if ref_holm[key] < 0.05 else "nominal"
            expected = f"{'positive' if low > 0 else 'negative'} ({strength})"
        else:
            expected = "not significant"
        assert row["verdict"] == expected
        assert ("5 for a firm verdict" in row["note"]) == (g.size < 5)
    for target in ("t1", "t2"):
        assert out.loc[("good", target), "verdict"] == "positive (significant)"
        assert out.loc[("bad", target), "verdict"] == "negative (significant)"
    orphan = out.loc[("orphan", "t1")]
    assert orphan["n_pairs"] == 0 and orphan["verdict"] == "no baseline"
    assert set(out["verdict"]) <= set(VERDICTS["same_algorithm"])


def test_paired_gains_bh_option_matches_statsmodels() -> None:
    records, _, _ = _synthetic_sweep(np.random.default_rng(8))
    out = paired_gains(records, correction="bh")
    finite = out["p_value"].notna().to_numpy()
    ref = multipletests(out.loc[finite, "p_value"], method="fdr_bh")[1]
    np.testing.assert_allclose(out.loc[finite, "p_adj"], ref, atol=1e-15)
    assert set(out["correction"]) == {"benjamini-hochberg"}


def test_paired_gains_holm_can_veto_a_per_comparison_ci() -> None:
    rng = np.random.default_rng(5)
    rows = []
    for k in range(30):
        gains = rng.normal(0, 1, size=5)
        gains = (gains - gains.mean()) / gains.std(ddof=1) + 3.0 / math.sqrt(5)  # t = 3.0
        for seed in range(5):
            rows.append(baseline(f"t{k}", seed, 0.5))
            rows.append(record("src", f"t{k}", "ft", seed, 0.5 + 0.01 * gains[seed]))
    out = paired_gains(pd.DataFrame(rows))
    assert np.all(out["gain_ci_low"] > 0) and np.all(out["p_value"] < 0.05)
    assert np.all(out["p_adj"] >= 0.05)
    assert set(out["verdict"]) == {"positive (nominal)"}


# ---------------------------------------------------------------- regressions


def test_frozen_recipe_below_scratch_is_never_negative_transfer() -> None:
    """A kNN under trained scratch says nothing about the source; vs its random-init run, +."""
    rows = []
    for seed in range(5):
        rows.append(baseline("t", seed, 0.70 + 0.01 * seed))
        rows.append(record("imnet", "t", "knn", seed, 0.45 + 0.012 * seed, trains_encoder=False))
        rows.append(
            record(BASE, "t", "knn", seed, 0.20 + 0.008 * seed, role="random_init",
                   trains_encoder=False)
        )  # fmt: skip
    records = pd.DataFrame(rows)
    scratch = paired_gains(records, comparison="scratch").iloc[0]
    assert scratch["verdict"] == "below scratch training (significant)"
    assert "not evidence of negative transfer" in scratch["note"]
    assert math.isnan(scratch["negative_transfer_gap"])
    same = paired_gains(records, comparison="same_algorithm").iloc[0]
    assert same["verdict"] == "positive (significant)" and same["baseline_strategy"] == "knn"
    assert same["negative_transfer_gap"] == pytest.approx(-0.25 - 0.004 * 2, abs=1e-9)
    for comparison in ("scratch", "same_algorithm"):
        verdicts = paired_gains(records, comparison=comparison)["verdict"]
        assert not (comparison == "scratch" and verdicts.str.contains("negative").any())


def test_zero_spread_with_three_seeds_is_undetermined_not_p_zero() -> None:
    rows = []
    for seed in range(3):
        rows.append(baseline("t", seed, 0.5 + 0.01 * seed))
        rows.append(record("src", "t", "ft", seed, 0.52 + 0.01 * seed))  # gain 0.02 every seed
    out = paired_gains(pd.DataFrame(rows)).iloc[0]
    assert out["verdict"] == "undetermined"
    assert math.isnan(out["p_value"]) and math.isnan(out["p_adj"])
    assert math.isnan(out["gain_ci_low"]) and "identical" in out["note"]
    assert out["gain_mean"] == pytest.approx(0.02)


def test_exactly_zero_mean_gain_is_not_significant_without_a_margin() -> None:
    rows = []
    for seed, g in enumerate((0.02, -0.02, 0.01, -0.01)):
        rows.append(baseline("t", seed, 0.5))
        rows.append(record("src", "t", "ft", seed, 0.5 + g))
    records = pd.DataFrame(rows)
    out = paired_gains(records).iloc[0]
    assert out["gain_mean"] == pytest.approx(0.0, abs=1e-15)
    assert out["verdict"] == "not significant"
    assert math.isnan(out["p_equivalence"])
    # Only a TOST against a suite-set margin can say "equivalent".
    wide = paired_gains(records, equivalence_margin=0.05).iloc[0]
    d = np.array([0.02, -0.02, 0.01, -0.01])
    ref = ttost_paired(0.5 + d, np.full(4, 0.5), -0.05, 0.05)[0]
    assert wide["p_equivalence"] == pytest.approx(ref, rel=1e-9)
    assert wide["verdict"] == "equivalent"
    narrow = paired_gains(records, equivalence_margin=0.005).iloc[0]
    assert narrow["verdict"] == "not significant"


def test_baseline_found_by_role_whatever_its_label() -> None:
    rows = []
    for seed in range(4):
        rows.append(record(BASE, "t", "scratch-long", seed, 0.5, role="baseline"))
        rows.append(record("imnet", "t", "scratch", seed, 0.6 + 0.01 * seed))
    out = paired_gains(pd.DataFrame(rows))
    assert list(out["strategy"]) == ["scratch"]  # the transfer cell labelled "scratch"
    assert out.iloc[0]["baseline_strategy"] == "scratch-long"
    assert out.iloc[0]["n_pairs"] == 4


def test_paired_gains_with_correctness_uses_the_crossed_design() -> None:
    rng = np.random.default_rng(9)
    m = 80
    hard = rng.normal(0, 1.5, m)  # shared difficulty
    rows, correct, diffs = [], {}, []
    for seed in range(4):
        b = hard + rng.normal(0, 0.5, m) > 0
        a = hard + 0.3 + rng.normal(0, 0.5, m) > 0
        rb, ra = baseline("t", seed, float(b.mean())), record("src", "t", "ft", seed, a.mean())
        correct[rb["key"]], correct[ra["key"]] = b, a
        rows += [rb, ra]
        diffs.append(a.astype(float) - b)
    records = pd.DataFrame(rows)
    out = paired_gains(records, correct).iloc[0]
    cm = crossed_mean(np.vstack(diffs))
    se, df = cm.satterthwaite
    assert out["gain_ci_low"] == pytest.approx(cm.mean - sps.t.ppf(0.975, df) * se, abs=1e-12)
    assert out["p_value"] == pytest.approx(float(p_value(cm.mean, *cm.parts)), rel=1e-9)
    assert out["se_example"] > 0 and out["interval"].startswith("seeds + test examples")
    # A missing vector falls back to seeds, and says so.
    partial = {k: v for k, v in correct.items() if k != rows[0]["key"]}
    fallback = paired_gains(records, partial).iloc[0]
    assert fallback["interval"].startswith("seeds only") and "missing" in fallback["note"]
    with pytest.raises(TypeError, match="metric"):
        paired_gains(records, "test_acc")  # type: ignore[arg-type]


def test_gain_interval_is_clipped_to_the_range_a_difference_of_accuracies_can_take() -> None:
    rows = []
    for seed, (base, acc) in enumerate([(0.05, 0.95), (0.45, 0.95), (0.05, 0.95)]):
        rows.append(baseline("t", seed, base))
        rows.append(record("src", "t", "ft", seed, acc))
    out = paired_gains(pd.DataFrame(rows)).iloc[0]
    gains = np.array([0.9, 0.5, 0.9])
    low, high = sps.t.interval(0.95, 2, loc=gains.mean(), scale=sps.sem(gains))
    assert high > 1.0  # the plain t-interval claims an impossible gain
    assert out["gain_ci_low"] == pytest.approx(low)
    assert out["gain_ci_high"] == 1.0
    assert out["verdict"].startswith("positive")  # the verdict reads the unclipped interval
