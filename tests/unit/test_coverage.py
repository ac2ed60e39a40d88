"""Coverage of the gain and accuracy intervals on simulated sweeps shaped like the quickstart.

Each simulated comparison has 3 or 5 seeds and a test set of 144 or 269 examples (the quickstart's
two targets). Correctness is a thresholded latent score (a probit model)::

    correct[arm, s, j] = 1[mu_arm + u[arm, s] + z[j] + w[arm, j] + e[arm, s, j] > 0]

- ``z[j]``: per-example difficulty shared by both arms and every seed (sd 1 to 2.5);
- ``w[arm, j]``: the arm's own per-example strengths (sd 0.1 to 0.8), so arms err on partly
  different examples;
- ``u[arm, s]``: the seed's effect (label subset, init, order; sd 0.02 to 0.3 on the latent scale,
  correlated 0 to 0.8 between the arms of one seed because they share the label subset);
- ``e``: model-to-model noise per example (sd 0.1 to 1).

These give seed-level accuracy sds of about 1 to 3 points, as in the quickstart. Because every
term is Gaussian, an arm's expected accuracy over the populations of label subsets *and* test
examples is exactly ``Phi(mu / tau)`` with ``tau`` the total latent sd, so the true gain is known
in closed form. Null comparisons have equal ``mu``; shifted ones a true gain of 0.5 to 8 points
of either sign. Every simulated comparison goes through the functions ``paired_gains`` uses
(``crossed_mean``, its ``satterthwaite`` and ``parts``, ``interval``, ``p_value``,
``adjust_pvalues``); one test checks that
``paired_gains`` and ``summarize`` give the same numbers on a sample of them.

Run ``python -m pytest -q -s -p no:cacheprovider tests/unit/test_coverage.py`` to print the rates.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps
from scipy.special import ndtr

from atlbench.analysis import (
    adjust_pvalues,
    crossed_mean,
    interval,
    p_value,
    paired_gains,
    summarize,
)

DESIGNS = [(3, 144), (3, 269), (5, 144), (5, 269)]
N_PER_CELL = 2000  # per design and per null/shifted: 8,000 null and 8,000 shifted comparisons
FAMILY = 10
ALPHA = 0.05


def probit_arms(
    rng: np.random.Generator,
    mus: tuple[np.ndarray, np.ndarray],
    z: np.ndarray,
    n: int,
    scales: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """Correctness (0/1, ``count x n x m``) of the two arms of each comparison: example
    difficulty ``z`` shared by both arms, per-arm example effects (sd ``sw``), seed x example
    noise (``se``) and seed effects (``su``) correlated ``rho`` between the arms of a seed."""
    sw, se, su, rho = (v[:, None, None] for v in scales)
    count, m = z.shape[0], z.shape[2]
    common = rng.normal(size=(count, n, 1))

    def arm(mu: np.ndarray) -> np.ndarray:
        w = rng.normal(size=(count, 1, m)) * sw
        u = common * np.sqrt(rho) + rng.normal(size=(count, n, 1)) * np.sqrt(1 - rho)
        e = rng.normal(size=(count, n, m)) * se
        return (mu[:, None, None] + u * su + z + w + e > 0).astype(float)

    return arm(mus[0]), arm(mus[1])


def simulate(rng: np.random.Generator, count: int, n: int, m: int, null: bool) -> dict:
    """``count`` comparisons of ``n`` seeds x ``m`` test examples; see the module docstring."""
    sz = rng.uniform(1.0, 2.5, count)
    sw = rng.uniform(0.1, 0.8, count)
    se = rng.uniform(0.1, 1.0, count)
    su = rng.uniform(0.02, 0.3, count)
    rho = rng.uniform(0.0, 0.8, count)
    tau = np.sqrt(sz**2 + sw**2 + se**2 + su**2)
    acc_b = rng.uniform(0.4, 0.92, count)
    shift = np.zeros(count) if null else rng.uniform(0.005, 0.08, count)
    shift *= rng.choice([-1.0, 1.0], count)
    acc_a = np.clip(acc_b + shift, 0.05, 0.99)
    mu_a, mu_b = sps.norm.ppf(acc_a) * tau, sps.norm.ppf(acc_b) * tau
    z = rng.normal(size=(count, 1, m)) * sz[:, None, None]
    a, b = probit_arms(rng, (mu_a, mu_b), z, n, (sw, se, su, rho))
    return {
        "a": a,
        "b": b,
        "truth_gain": ndtr(mu_a / tau) - ndtr(mu_b / tau),
        "truth_a": ndtr(mu_a / tau),
    }


def inference(x: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, ...]:
    """Mean, interval and two-sided p of each (seeds x examples) matrix, as paired_gains does:
    the interval from one Satterthwaite t, the p-value from Behrens-Fisher."""
    cm = crossed_mean(x)
    se, df = cm.satterthwaite
    low, high = interval(cm.mean, se, df, level=level)
    return cm.mean, low, high, p_value(cm.mean, *cm.parts)


def seed_only(x: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The old interval: Student t over the seed-level means only."""
    per_seed = x.mean(axis=2)
    n = per_seed.shape[1]
    se = per_seed.std(axis=1, ddof=1) / np.sqrt(n)
    return interval(per_seed.mean(1), se, n - 1, level=level)


def satterthwaite_p(x: np.ndarray, null: np.ndarray) -> np.ndarray:
    """p-values of the interval's own t (``CrossedMean.satterthwaite``): not used as p-values."""
    cm = crossed_mean(x)
    se, df = cm.satterthwaite
    return p_value(cm.mean - null, se, df)


def arm_interval(x: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """The per-arm accuracy interval of ``summarize`` (same construction as the gain's)."""
    return inference(x, level)[1:3]


@pytest.fixture(scope="module")
def sims() -> dict:
    rng = np.random.default_rng(20240607)
    out = {}
    for n, m in DESIGNS:
        for null in (True, False):
            sim = simulate(rng, N_PER_CELL, n, m, null)
            d = sim["a"] - sim["b"]
            mean, low, high, p = inference(d)
            s_low, s_high = seed_only(d)
            a_low, a_high = arm_interval(sim["a"])
            p_truth = p_value(mean - sim["truth_gain"], *crossed_mean(d).parts)
            p_satt = satterthwaite_p(d, sim["truth_gain"])
            out[(n, m, null)] = sim | {
                "mean": mean,
                "low": low,
                "high": high,
                "p": p,
                "covered": (low <= sim["truth_gain"]) & (sim["truth_gain"] <= high),
                "seed_covered": (s_low <= sim["truth_gain"]) & (sim["truth_gain"] <= s_high),
                "arm_covered": (a_low <= sim["truth_a"]) & (sim["truth_a"] <= a_high),
                "seed_sd": sim["a"].mean(axis=2).std(axis=1, ddof=1),
                "p_truth": p_truth,
                "p_satt": p_satt,
            }
    return out


def test_gain_and_accuracy_intervals_cover_the_truth(sims: dict, record_property) -> None:
    lines = ["design            gain cover  seed-only cover  arm cover  median seed sd (pts)"]
    checks = []
    for (n, m, null), s in sims.items():
        kind = "null " if null else "shift"
        cover, seed_cover, arm_cover = (float(s[k].mean()) for k in ("covered", "seed_covered",
                                                                   "arm_covered"))  # fmt: skip
        lines.append(
            f"{n} seeds x {m} {kind}   {cover:.3f}        {seed_cover:.3f}        "
            f"{arm_cover:.3f}      {100 * float(np.median(s['seed_sd'])):.1f}"
        )
        record_property(f"coverage_{n}x{m}_{kind.strip()}", cover)
        checks.append((n, m, null, cover, arm_cover, bool(np.all(np.isfinite(s["low"])))))
    for null in (True, False):
        pooled = np.concatenate([s["covered"] for (_, _, z), s in sims.items() if z == null])
        seed = np.concatenate([s["seed_covered"] for (_, _, z), s in sims.items() if z == null])
        lines.append(
            f"all {'null' if null else 'shifted'} ({pooled.size}): gain {pooled.mean():.3f}, "
            f"seed-only {seed.mean():.3f}"
        )
        assert 0.93 <= pooled.mean() <= 0.97
        assert seed.mean() < pooled.mean() - 0.02  # the seed-only interval undercovers
    print("\n" + "\n".join(lines))
    for n, m, null, cover, arm_cover, finite in checks:
        assert finite, "every simulated comparison has an interval"
        assert 0.93 <= cover <= 0.97, (n, m, null, cover)
        assert 0.93 <= arm_cover <= 0.97, (n, m, null, arm_cover)


def _families(p: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shuffle p-values into rows of FAMILY comparisons (one report table each)."""
    p = rng.permutation(p)
    return p[: p.size // FAMILY * FAMILY].reshape(-1, FAMILY)


def test_false_significant_calls_under_the_null_after_correction(sims: dict) -> None:
    rng = np.random.default_rng(1)
    null_p = np.concatenate([s["p"] for (_, _, z), s in sims.items() if z])
    shift_p = np.concatenate([s["p"] for (_, _, z), s in sims.items() if not z])
    raw = float(np.mean(null_p < ALPHA))
    lines = [f"null comparisons: {null_p.size}; uncorrected false-positive rate {raw:.4f}"]
    assert 0.03 <= raw <= 0.07  # the test itself is calibrated (= 1 - null coverage)
    fams = _families(null_p, rng)
    for correction in ("holm", "bh"):
        adj = np.vstack([adjust_pvalues(f, correction) for f in fams])
        per_comparison = float(np.mean(adj < ALPHA))
        family_wise = float(np.mean((adj < ALPHA).any(axis=1)))
        lines.append(
            f"{correction}, all-null families of {FAMILY}: false 'significant' per comparison "
            f"{per_comparison:.4f}, families with any {family_wise:.4f} ({len(fams)} families)"
        )
        assert per_comparison <= ALPHA
        assert family_wise <= ALPHA
    # Mixed tables: half the comparisons null, half shifted.
    nulls, shifts = _families(null_p, rng)[:, : FAMILY // 2], _families(shift_p, rng)
    k = min(len(nulls), len(shifts))
    mixed = np.hstack([nulls[:k], shifts[:k, : FAMILY // 2]])
    is_null = np.zeros(mixed.shape, dtype=bool)
    is_null[:, : FAMILY // 2] = True
    for correction in ("holm", "bh"):
        sig = np.vstack([adjust_pvalues(f, correction) for f in mixed]) < ALPHA
        fwer = float(np.mean((sig & is_null).any(axis=1)))
        fdp = (sig & is_null).sum(axis=1) / np.maximum(sig.sum(axis=1), 1)
        lines.append(
            f"{correction}, mixed families: family-wise false rate {fwer:.4f}, "
            f"false discovery rate {fdp.mean():.4f}, power {sig[~is_null].mean():.3f}"
        )
        assert float(fdp.mean()) <= ALPHA
        if correction == "holm":
            assert fwer <= ALPHA
    print("\n" + "\n".join(lines))


def test_paired_gains_and_summarize_reproduce_the_simulated_numbers(sims: dict) -> None:
    """The records path (pairing by role, correctness lookup) gives the batched numbers."""
    rows, correct, expect = [], {}, {}
    for (n, m, null), s in sims.items():
        for i in range(8):
            target = f"t{n}x{m}{'n' if null else 's'}{i}"
            expect[target] = (s["mean"][i], s["low"][i], s["high"][i], s["p"][i])
            for seed in range(n):
                for arm, role, source in (("a", "transfer", "src"), ("b", "baseline", "rand")):
                    key = f"{target}|{arm}|{seed}"
                    vec = s[arm][i, seed].astype(bool)
                    correct[key] = vec
                    rows.append(
                        {
                            "key": key,
                            "source": source,
                            "target": target,
                            "strategy": "finetune" if arm == "a" else "scratch",
                            "budget": "5/class",
                            "seed": seed,
                            "arch": "resnet",
                            "status": "done",
                            "test_acc": float(vec.mean()),
                            "n_train": 50,
                            "role": role,
                            "trains_encoder": True,
                        }
                    )
    records = pd.DataFrame(rows)
    gains = paired_gains(records, correct).set_index("target")
    for target, (mean, low, high, p) in expect.items():
        row = gains.loc[target]
        assert row["gain_mean"] == pytest.approx(mean, abs=1e-12)
        assert (row["gain_ci_low"], row["gain_ci_high"]) == pytest.approx((low, high), abs=1e-12)
        assert row["p_value"] == pytest.approx(p, rel=1e-9, abs=1e-300)
        assert row["interval"].startswith("seeds + test examples")
    summary = summarize(records, correct=correct)
    summary = summary[summary["source"] == "src"].set_index("target")
    for (n, m, null), s in sims.items():
        low, high = arm_interval(s["a"][:8])
        for i in range(8):
            row = summary.loc[f"t{n}x{m}{'n' if null else 's'}{i}"]
            assert (row["ci_low"], row["ci_high"]) == pytest.approx((low[i], high[i]), abs=1e-12)


def test_small_p_values_are_not_too_frequent(sims: dict) -> None:
    """Holm and BH act on p-values near alpha / m: the tail must be calibrated, not only 5%.

    Rates of p < a under the truth, divided by a (1 = exact, < 1 conservative), for the
    Behrens-Fisher p-values used and for p-values of the interval's own Satterthwaite t, which
    is why that t is not used for p-values.
    """
    lines = ["P(p < a) / a under the truth, a = 0.05 0.01 0.005: Behrens-Fisher | Satterthwaite"]
    for n in (3, 5):
        p = np.concatenate([s["p_truth"] for (k, _, _), s in sims.items() if k == n])
        q = np.concatenate([s["p_satt"] for (k, _, _), s in sims.items() if k == n])
        bf = [float(np.mean(p < a)) / a for a in (0.05, 0.01, 0.005)]
        st = [float(np.mean(q < a)) / a for a in (0.05, 0.01, 0.005)]
        lines.append(
            f"{n} seeds ({p.size}):  "
            + "  ".join(f"{v:.2f}" for v in bf)
            + "  |  "
            + "  ".join(f"{v:.2f}" for v in st)
        )
        assert bf[0] <= 1.2 and bf[1] <= 1.2 and bf[2] <= 1.3
    print("\n" + "\n".join(lines))
