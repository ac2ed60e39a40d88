"""Sequential seeds: schedule, spending, the sequential p-value, racing, and their error rates
under optional stopping, simulated with two generators.

The generators are the probit model of tests/unit/test_coverage.py (Gaussian per-example
difficulty) and a harder one: per-example difficulty from a Student t with 3 df (heavy tails:
a few examples almost nobody gets right or wrong) and seed effects strongly correlated between
the two arms of a seed (rho 0.5-0.95: both arms see the same label subset). The true gain is
``E[Phi((mu + z) / rest)]`` over the difficulty ``z``, by quadrature for the t.

Each simulated family of ``FAMILY`` comparisons runs the sweep's rule: the schedule's first
seeds, then, at every look, the sequential p-values, Holm over the family, and a comparison
stops as soon as it is significant (corrected p < alpha and the interval excludes 0) or at
``max``. Run ``python -m pytest -q -s -p no:cacheprovider tests/unit/test_sequential.py`` to
print the rates and the decisions per cell against fixed 3- and 10-seed designs.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.special import ndtr
from test_coverage import probit_arms

from atlbench.analysis import adjust_pvalues, crossed_mean, interval, p_value, paired_gains
from atlbench.analysis._racing import race, race_pvalues
from atlbench.analysis._sequential import futile, sequential_pvalue
from atlbench.record import Verdict
from atlbench.seeds import SeedSchedule, spending

ALPHA = 0.05
FAMILY = 10
SCHEDULE = SeedSchedule(3, 2, 15)
M_EXAMPLES = 200


# ------------------------------------------------------------------ schedule and p-value


def test_schedule_looks_and_spending_weights() -> None:
    s = SeedSchedule(3, 2, 15)
    assert s.looks == (3, 5, 7, 9, 11, 13, 15)
    assert SeedSchedule(3, 4, 12).looks == (3, 7, 11, 12)
    assert SeedSchedule(5, 5, 5).looks == (5,)
    w = s.weights
    assert w.sum() == pytest.approx(1.0, abs=1e-12)
    # Hwang, Shih & DeCani (1990) spending with gamma = -4, written out in float64
    t = np.array(s.looks) / 15
    cum = (1 - np.exp(4 * t)) / (1 - np.exp(4))
    np.testing.assert_allclose(np.cumsum(w), cum, rtol=1e-12)
    assert spending(0.0) == 0.0 and spending(1.0) == pytest.approx(1.0)
    # gamma -> 0 is linear spending (the family's limit), and it is increasing for any gamma
    np.testing.assert_allclose(spending(t, -1e-9), t, atol=1e-8)
    assert np.all(np.diff(spending(np.linspace(0, 1, 50), 1.0)) > 0)
    assert s.seeds(5) == (0, 1, 2, 3, 4) and s.next_look(3) == 5 and s.next_look(15) is None
    assert s.reached([0, 1, 2, 3, 4, 5]) == [0, 1]  # 6 seeds: the looks at 3 and 5
    with pytest.raises(ValueError, match="start <= max"):
        SeedSchedule(5, 1, 3)


def test_sequential_pvalue_is_the_weighted_minimum() -> None:
    w = np.array([0.5, 0.3, 0.2])
    assert sequential_pvalue([0.04, 0.03, 0.002], w) == pytest.approx(0.01)
    assert sequential_pvalue([0.2, np.nan], w) == pytest.approx(0.4)
    assert sequential_pvalue([0.9, 0.8], w) == 1.0
    assert np.isnan(sequential_pvalue([np.nan], w)) and np.isnan(sequential_pvalue([], w))
    # one look with weight 1 is the ordinary p-value
    assert sequential_pvalue([0.0314], np.ones(1)) == pytest.approx(0.0314)


def _records(gains_per_seed: np.ndarray, rng: np.random.Generator, m: int = 200) -> tuple:
    """Transfer and scratch cells whose per-example differences give the per-seed gains."""
    rows, correct = [], {}
    base = 0.6
    for s, g in enumerate(gains_per_seed):
        b = np.zeros(m, dtype=bool)
        b[rng.permutation(m)[: round(base * m)]] = True
        a = b.copy()
        flip = round(abs(g) * m)
        # flip `flip` examples in the gain's direction, plus a few that swap both ways
        pool = np.flatnonzero(~a) if g > 0 else np.flatnonzero(a)
        a[rng.choice(pool, flip, replace=False)] = g > 0
        swap_in = rng.choice(np.flatnonzero(~a & ~b), 3, replace=False)
        swap_out = rng.choice(np.flatnonzero(a & b), 3, replace=False)
        a[swap_in], a[swap_out] = True, False
        for role, src, strat, vec in (
            ("transfer", "src", "finetune", a),
            ("baseline", "arch (random init)", "scratch", b),
        ):
            key = f"{src}-{strat}-{s}"
            correct[key] = vec
            rows.append(
                dict(key=key, source=src, target="t", strategy=strat, budget="5/class",
                     seed=s, role=role, status="done", test_acc=vec.mean(), arch="arch",
                     trains_encoder=True, n_train=25)
            )  # fmt: skip
    return pd.DataFrame(rows), correct


def test_identical_seed_gains_take_the_interval_variance() -> None:
    """Five seeds with identical +5-point gains: the p-value comes from the same variance as
    the interval (once p = 4.6e-182 beside an interval [+3.9, +6.1])."""
    rng = np.random.default_rng(5)
    records, correct = _records(np.full(5, 0.05), rng)
    out = paired_gains(records, correct, "scratch")
    row = out.iloc[0]
    assert row["gain_mean"] == pytest.approx(0.05)
    assert row["gain_ci_low"] > 0  # the interval excludes zero ...
    # ... and the p-value agrees with it: never smaller than the interval's own t would give
    se = (row["gain_ci_high"] - row["gain_ci_low"]) / 2 / sps.t.ppf(0.975, row["ci_df"])
    p_interval = 2 * sps.t.sf(row["gain_mean"] / se, row["ci_df"])
    assert p_interval <= row["p_value"] < 0.05
    assert row["p_value"] > 1e-12


def test_paired_gains_with_a_schedule_uses_the_sequential_p() -> None:
    rng = np.random.default_rng(11)
    gains = rng.normal(0.04, 0.03, 7)
    records, correct = _records(gains, rng)
    fixed = paired_gains(records, correct, "scratch")
    seq = paired_gains(records, correct, "scratch", schedule=SeedSchedule(3, 2, 7))
    # the last look is the fixed analysis of all 7 seeds
    assert seq["p_last_look"].iloc[0] == pytest.approx(fixed["p_value"].iloc[0])
    looks = []
    for n in (3, 5, 7):
        sub = records[records["seed"] < n]
        looks.append(paired_gains(sub, correct, "scratch")["p_value"].iloc[0])
    want = sequential_pvalue(looks, SeedSchedule(3, 2, 7).weights)
    assert seq["p_value"].iloc[0] == pytest.approx(want)
    assert seq["p_value"].iloc[0] >= fixed["p_value"].iloc[0]
    assert seq["gain_ci_low"].iloc[0] == pytest.approx(fixed["gain_ci_low"].iloc[0])
    stop = seq["stop"].iloc[0]
    assert stop.startswith("decided") if seq["p_adj"].iloc[0] < ALPHA else "maximum" in stop
    assert fixed["stop"].iloc[0] == "fixed seeds"


# ------------------------------------------------------------------ simulation


def _true_acc(mu: np.ndarray, scale_z: np.ndarray, rest: np.ndarray, heavy: bool) -> np.ndarray:
    if not heavy:
        return ndtr(mu / np.sqrt(scale_z**2 + rest**2))
    grid = np.linspace(-60, 60, 24001)
    dens = sps.t.pdf(grid, 3)
    out = np.empty(mu.size)
    for i in range(mu.size):
        vals = ndtr((mu[i] + scale_z[i] * grid) / rest[i]) * dens
        out[i] = np.trapezoid(vals, grid)
    return out


def simulate(
    rng: np.random.Generator, count: int, n: int, m: int, null: bool, heavy: bool,
    large: float = 0.0,
):  # fmt: skip
    """``count`` comparisons of ``n`` seeds x ``m`` examples (see the module docstring); a
    share ``large`` of the shifted ones has a true gain of 8-25 points instead of 0.5-8."""
    sz = rng.uniform(1.0, 2.5, count) / (np.sqrt(3.0) if heavy else 1.0)  # t(3) has sd sqrt(3)
    sw = rng.uniform(0.1, 0.8, count)
    se = rng.uniform(0.1, 1.0, count)
    su = rng.uniform(0.05, 0.4, count)
    rho = rng.uniform(0.5, 0.95, count) if heavy else rng.uniform(0.0, 0.8, count)
    rest = np.sqrt(sw**2 + se**2 + su**2)
    acc_b = rng.uniform(0.4, 0.92, count)
    shift = np.zeros(count) if null else rng.uniform(0.005, 0.08, count)
    big = rng.random(count) < large
    shift[big] = rng.uniform(0.08, 0.25, int(big.sum()))
    shift *= rng.choice([-1.0, 1.0], count)
    acc_a = np.clip(acc_b + shift, 0.05, 0.99)
    tau = np.sqrt(sz**2 * (3.0 if heavy else 1.0) + rest**2)
    mu_a, mu_b = sps.norm.ppf(acc_a) * tau, sps.norm.ppf(acc_b) * tau  # starting points

    if heavy:
        z = rng.standard_t(3, size=(count, 1, m)) * sz[:, None, None]
    else:
        z = rng.normal(size=(count, 1, m)) * sz[:, None, None]
    a, b = probit_arms(rng, (mu_a, mu_b), z, n, (sw, se, su, rho))
    d = (a - b).astype(np.float32)
    truth = _true_acc(mu_a, sz, rest, heavy) - _true_acc(mu_b, sz, rest, heavy)
    return d, truth


def _analyse(d: np.ndarray, n: int) -> tuple[np.ndarray, ...]:
    cm = crossed_mean(d[:, :n, :].astype(float))
    se, df = cm.satterthwaite
    low, high = interval(cm.mean, se, df)
    return cm.mean, low, high, p_value(cm.mean, *cm.parts), df


def run_sequential(
    d: np.ndarray, schedule: SeedSchedule, correction: str = "holm"
) -> dict[str, np.ndarray]:
    """The sweep's rule over families of FAMILY comparisons (rows of ``d`` in order)."""
    count = d.shape[0]
    fam = count // FAMILY
    looks = [_analyse(d, n) for n in schedule.looks]
    w = schedule.weights
    open_ = np.ones(count, bool)
    pstar = np.ones(count)
    used = np.zeros(count, int)
    low, high, sig = np.zeros(count), np.zeros(count), np.zeros(count, bool)
    for k, n in enumerate(schedule.looks):
        mean, lo, hi, p, df = looks[k]
        p_k = np.where(np.isfinite(p), p / w[k], 1.0)
        pstar = np.where(open_, np.minimum(pstar, np.minimum(p_k, 1.0)), pstar)
        adj = np.concatenate(
            [adjust_pvalues(pstar[f * FAMILY : (f + 1) * FAMILY], correction) for f in range(fam)]
        )
        decided = open_ & (adj < ALPHA) & ((lo > 0) | (hi < 0))
        last = k == len(schedule.looks) - 1
        se = (hi - lo) / 2 / sps.t.ppf(0.975, df)
        # the correction's divisor for the next rejection in each family, as paired_gains uses
        rejected = np.repeat((sig | decided).reshape(fam, FAMILY).sum(axis=1), FAMILY)
        div = FAMILY - rejected if correction == "holm" else FAMILY / (rejected + 1)
        hopeless = np.array(
            [bool(o and not dd and futile(float(g), float(e), n, schedule, max(v, 1.0), ALPHA))
             for o, dd, g, e, v in zip(open_, decided, mean, se, div, strict=True)]
        )  # fmt: skip
        closing = decided | hopeless | (open_ & last)
        low[closing], high[closing], used[closing] = lo[closing], hi[closing], n
        sig |= decided
        open_ &= ~closing
    # a stopped comparison's adjusted p can only fall as others' p* fall: decided stays decided
    return {"low": low, "high": high, "sig": sig, "used": used}


def run_fixed(d: np.ndarray, n: int) -> dict[str, np.ndarray]:
    _mean, lo, hi, p, _ = _analyse(d, n)
    fam = d.shape[0] // FAMILY
    adj = np.concatenate([adjust_pvalues(p[f * FAMILY : (f + 1) * FAMILY]) for f in range(fam)])
    sig = (adj < ALPHA) & ((lo > 0) | (hi < 0))
    return {"low": lo, "high": hi, "sig": sig, "used": np.full(d.shape[0], n)}


@pytest.fixture(scope="module", params=["gaussian", "heavy"])
def sims(request: pytest.FixtureRequest) -> dict:
    heavy = request.param == "heavy"
    rng = np.random.default_rng(20261204 + heavy)
    out: dict = {"name": request.param}
    for null in (True, False):
        d, truth = simulate(rng, 1500, SCHEDULE.max, M_EXAMPLES, null, heavy)
        out[null] = {
            "truth": truth,
            "seq": run_sequential(d, SCHEDULE),
            "fixed3": run_fixed(d, 3),
            "fixed10": run_fixed(d, 10),
        }
    # families of 5 null and 5 shifted comparisons, for the false discovery rate under BH
    d0, t0 = simulate(rng, 750, SCHEDULE.max, M_EXAMPLES, True, heavy)
    d1, t1 = simulate(rng, 750, SCHEDULE.max, M_EXAMPLES, False, heavy, large=0.3)
    half = FAMILY // 2
    d = np.concatenate(
        [d0.reshape(-1, half, *d0.shape[1:]), d1.reshape(-1, half, *d1.shape[1:])], 1
    )
    truth = np.concatenate([t0.reshape(-1, half), t1.reshape(-1, half)], 1).ravel()
    out["bh"] = {
        "truth": truth,
        "seq": run_sequential(d.reshape(-1, *d0.shape[1:]), SCHEDULE, "bh"),
    }
    # real tables mix small gains with large ones (the text study's +60 points)
    d, truth = simulate(rng, 1500, SCHEDULE.max, M_EXAMPLES, False, heavy, large=0.3)
    out["mixed"] = {
        "truth": truth,
        "seq": run_sequential(d, SCHEDULE),
        "fixed3": run_fixed(d, 3),
        "fixed10": run_fixed(d, 10),
    }
    return out


def _covered(res: dict, truth: np.ndarray) -> np.ndarray:
    return (res["low"] <= truth) & (truth <= res["high"])


def test_sequential_rule_coverage_and_familywise_error(sims: dict) -> None:
    seq_null, seq_alt = sims[True]["seq"], sims[False]["seq"]
    seq_mixed = sims["mixed"]["seq"]
    cover = np.concatenate(
        [
            _covered(seq_null, sims[True]["truth"]),
            _covered(seq_alt, sims[False]["truth"]),
            _covered(seq_mixed, sims["mixed"]["truth"]),
        ]
    )
    fwer = seq_null["sig"].reshape(-1, FAMILY).any(axis=1).mean()
    print(f"\n[{sims['name']}] sequential: coverage {cover.mean():.3f}, FWER {fwer:.3f}")
    assert 0.93 <= cover.mean() <= 0.97
    assert fwer <= ALPHA
    # every design at the same error rates; decisions reached per cell (one cell = one seed of
    # both arms), on the shifted comparisons (true gains of 0.5-8 points)
    for effects in (False, "mixed"):
        for name in ("seq", "fixed3", "fixed10"):
            res = sims[effects][name]
            wrong = (res["sig"] & ((res["low"] > 0) != (sims[effects]["truth"] > 0))).mean()
            fw = sims[True][name]["sig"].reshape(-1, FAMILY).any(axis=1).mean()
            print(
                f"[{sims['name']}, {'0.5-8 pts' if effects is False else 'mixed'}] {name:8s}: "
                f"decided {res['sig'].mean():.3f} of shifted comparisons with "
                f"{res['used'].mean():.2f} seeds on average "
                f"({res['sig'].sum() / res['used'].sum() * 100:.2f} decisions per 100 seeds); "
                f"wrong sign {wrong:.4f}; null FWER {fw:.3f}"
            )
            assert fw <= ALPHA and wrong <= ALPHA / 2


def test_sequential_decides_more_per_seed_than_fixed_designs(sims: dict) -> None:
    """On a realistic mix of gains, the schedule reaches more decisions per seed spent than 10
    fixed seeds, and far more decisions than 3 fixed seeds."""
    seq, ten, three = (sims["mixed"][k] for k in ("seq", "fixed10", "fixed3"))
    assert seq["used"].mean() < ten["used"].mean()
    assert seq["sig"].sum() / seq["used"].sum() > ten["sig"].sum() / ten["used"].sum()
    assert seq["sig"].mean() > 2 * three["sig"].mean()


# ------------------------------------------------------------------ racing


def test_racing_never_drops_the_true_best_more_often_than_alpha() -> None:
    """Races of 5 recipes over 3-15 seeds: the best is ahead by 0-3 points of seed noise sd 4
    (correlated across recipes through the seed's label subset); the race stops seeding a
    recipe once eliminated. The true best must be eliminated in <= alpha of the races."""
    rng = np.random.default_rng(7)
    races, k = 1000, 5
    dropped, eliminated_others = 0, 0
    for _r in range(races):
        gap = rng.uniform(0.0, 0.03)
        means = np.array([0.70, 0.70 - gap, 0.70 - gap, 0.66, 0.60])
        seed_effect = rng.normal(0, 0.04, SCHEDULE.max)
        acc = means[:, None] + 0.7 * seed_effect + rng.normal(0, 0.03, (k, SCHEDULE.max))
        alive = np.ones(k, bool)
        n_run = np.full(k, SCHEDULE.start)
        for n in SCHEDULE.looks:
            n_run[alive] = n
            seen = np.where(np.arange(SCHEDULE.max)[:, None] < n_run[None, :], acc.T, np.nan)
            pvals, _ = race_pvalues(seen[:n], np.arange(n), SCHEDULE)
            alive &= ~(np.isfinite(pvals) & (pvals < ALPHA))
        dropped += not alive[0]
        eliminated_others += int((~alive[1:]).sum())
    rate = dropped / races
    print(f"\nracing: true best dropped in {rate:.3f} of races; {eliminated_others} others")
    assert rate <= ALPHA
    assert eliminated_others > races  # the race does eliminate clearly worse recipes


def test_verdict_words_of_a_decided_comparison() -> None:
    rng = np.random.default_rng(3)
    records, correct = _records(np.full(5, 0.2) + rng.normal(0, 0.01, 5), rng)
    out = paired_gains(records, correct, "scratch", schedule=SeedSchedule(3, 2, 5))
    assert out["verdict"].iloc[0] == Verdict.ABOVE_SCRATCH_SIGNIFICANT
    assert out["stop"].iloc[0] == "decided at 5 seeds"


def test_race_table_names_the_leader_and_eliminates_a_clear_loser() -> None:
    rng = np.random.default_rng(2)
    rows = [
        dict(target="t", budget="b", source=src, strategy="ft", seed=s, test_acc=mu + e)
        for s in range(5)
        for src, mu, e in (("good", 0.8, rng.normal(0, 0.01)), ("bad", 0.5, rng.normal(0, 0.01)))
    ]
    table = race(pd.DataFrame(rows), SeedSchedule(3, 2, 5), ALPHA).set_index("source")
    assert table.loc["bad", "eliminated"] and not table.loc["good", "eliminated"]
    assert table.loc["bad", "leader"] == "good / ft" and table.loc["bad", "n_seeds"] == 5


def test_benjamini_hochberg_under_optional_stopping_keeps_the_false_discovery_rate(
    sims: dict,
) -> None:
    """``correction: bh`` with the schedule: on families of 5 null and 5 shifted comparisons
    the false discovery rate and the null comparisons' false "significant" rate stay <= 5%."""
    res, truth = sims["bh"]["seq"], sims["bh"]["truth"]
    null = (truth == 0).reshape(-1, FAMILY)
    sig = res["sig"].reshape(-1, FAMILY)
    false = (sig & null).sum(axis=1)
    fdr = float(np.mean(np.where(sig.sum(axis=1) > 0, false / np.maximum(sig.sum(axis=1), 1), 0)))
    per_null = float(sig[null].mean())
    cover = _covered(res, truth).mean()
    print(f"\n[{sims['name']}] BH: FDR {fdr:.3f}, null false-significant {per_null:.4f}, "
          f"decided {sig[~null].mean():.3f} of shifted, coverage {cover:.3f}")  # fmt: skip
    assert fdr <= ALPHA and per_null <= ALPHA
    assert 0.93 <= cover <= 0.97
