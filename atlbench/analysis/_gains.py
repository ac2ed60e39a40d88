"""Paired gain of each transfer recipe over its partner, with an interval, a test and a verdict.

The partner comes from :mod:`atlbench.analysis._pairing` (``"same_algorithm"`` per Wang et al.,
CVPR 2019, or ``"scratch"``). Given per-example correctness, interval and test cover both the
seeds and the test examples (:mod:`atlbench.analysis._crossed`); without it, only the seeds, and
the ``interval`` column says so.

Interval and p-value are judged by different things, so they use the two readings of the same
ANOVA: the interval by its coverage (one Student t with Satterthwaite's df: 94-96% at 3 and 5
seeds), the p-value by its tail, since Holm and BH act on p-values near alpha / m
(Behrens-Fisher, :mod:`atlbench.analysis._inference`: conservative, where the Satterthwaite
p-values below 0.005 came out 1.6 times too often with 3 seeds; the Behrens-Fisher interval
itself over-covers, 97% at 3 seeds x 144 examples). Measured rates: tests/unit/test_coverage.py.
Without per-example correctness both are the seed-level paired t and agree exactly. Where they
disagree (the CI just excludes 0 but the conservative p does not reach 1 - level) the verdict
is "nominal".

The verdict words are chosen so a table never claims more than its numbers carry: only the
same-algorithm comparison may say "negative", zero spread across a few seeds is "undetermined"
(never p = 0), a CI that straddles 0 is "not significant" with no sign, and "equivalent" needs
an equivalence test (TOST) against a margin the suite sets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from atlbench.analysis._crossed import crossed_mean
from atlbench.analysis._fragility import line_gains, near_threshold, threshold_distance
from atlbench.analysis._inference import interval, p_value, tost_pvalue
from atlbench.analysis._multitest import CORRECTIONS, adjust_pvalues
from atlbench.analysis._pairing import check_comparison, difference_matrix, paired_runs
from atlbench.analysis._records import GROUP, RECOMMENDED_SEEDS, budget_order
from atlbench.analysis._sequential import SeedSchedule, futile, sequential_pvalue
from atlbench.record import Verdict

INTERVAL_CROSSED = "seeds + test examples (crossed ANOVA: Satterthwaite t CI, Behrens-Fisher p)"
INTERVAL_SEEDS = "seeds only (test-set variance not covered)"
# per comparison: (above, significant), (above, nominal), (below, significant), (below, nominal),
# and the verdict of a recipe without a partner
_SIDES: dict[str, tuple[Verdict, Verdict, Verdict, Verdict, Verdict]] = {
    "same_algorithm": (
        Verdict.POSITIVE_SIGNIFICANT,
        Verdict.POSITIVE_NOMINAL,
        Verdict.NEGATIVE_SIGNIFICANT,
        Verdict.NEGATIVE_NOMINAL,
        Verdict.NO_BASELINE,
    ),
    "scratch": (
        Verdict.ABOVE_SCRATCH_SIGNIFICANT,
        Verdict.ABOVE_SCRATCH_NOMINAL,
        Verdict.BELOW_SCRATCH_SIGNIFICANT,
        Verdict.BELOW_SCRATCH_NOMINAL,
        Verdict.NO_SCRATCH_RUN,
    ),
}
_EITHER = (Verdict.NOT_SIGNIFICANT, Verdict.EQUIVALENT, Verdict.UNDETERMINED, Verdict.TOO_FEW_SEEDS)
VERDICTS: dict[str, tuple[Verdict, ...]] = {
    comparison: (*sides[:4], *_EITHER, sides[4]) for comparison, sides in _SIDES.items()
}
"""Every verdict a comparison can give."""
_BELOW = frozenset(v for sides in _SIDES.values() for v in sides[2:4])
GAIN_COLUMNS = [
    *GROUP,
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
    "se_seed",
    "se_example",
    "ci_df",
    "p_equivalence",
    "p_equivalence_adj",
    "p_last_look",
    "stop",
    "near_threshold",
    "threshold_distance",
    "baseline_source",
    "baseline_strategy",
    "trains_encoder",
    "n_train",
]
_PART_NAMES = ("se_seed", "df_seed", "se_example", "df_example", "ci_se", "ci_df")
_NO_BASELINE = "no baseline (scratch) cell with the same arch, target, budget and seed"
_NO_RANDOM_INIT = "no random_init cell with the same arch, target, strategy, budget and seed"


def _group_inference(
    grp: pd.DataFrame, correct: Mapping[object, np.ndarray] | None
) -> tuple[tuple[float, ...], str, bool, list[str]]:
    """((s1, d1, s2, d2, ci_se, ci_df), interval, undetermined, notes) of paired rows (n >= 2).

    ``s1``/``d1``: seed part of the error (SE, df); ``s2``/``d2``: test-set part (0 without
    per-example correctness), for the Behrens-Fisher p-values; ``ci_se``/``ci_df``: the one
    Student t of the interval; see :mod:`atlbench.analysis._crossed`.
    """
    n = len(grp)
    gains = grp["gain"].to_numpy(dtype=float)
    notes: list[str] = []
    zero_spread = float(np.ptp(gains)) <= 1e-12
    matrix: np.ndarray | str = "no per-example correctness given"
    if correct is not None:
        matrix = difference_matrix(grp.sort_values("seed"), correct)
        if isinstance(matrix, str):
            notes.append(f"{matrix}; seed-level interval")
        elif matrix.shape[1] < 2:
            matrix = "fewer than 2 test examples"
    if isinstance(matrix, np.ndarray):
        cm = crossed_mean(matrix)
        parts = tuple(float(v) for v in (*cm.parts, *cm.satterthwaite))
        label = INTERVAL_CROSSED
        # nothing varies at all (not even seed x example): the interval's variance is zero
        undetermined = (zero_spread and n < RECOMMENDED_SEEDS) or not float(parts[4]) > 0
    else:
        se = float(gains.std(ddof=1) / np.sqrt(n))
        parts = (se, float(n - 1), 0.0, np.inf, se, float(n - 1))
        label = INTERVAL_SEEDS
        undetermined = zero_spread
    if undetermined:
        notes.append(
            f"the {n} seed-level gains are identical: their spread is not measurable with "
            f"{n} seeds, so no interval or p-value"
            if zero_spread
            else "no spread at all in the paired differences: nothing to test"
        )
        parts = (np.nan,) * 6
    return parts, label, undetermined, notes


def _verdict(
    comparison: str,
    n: int,
    undetermined: bool,
    low: float,
    high: float,
    p_adj: float,
    p_eq_adj: float,
    alpha: float,
) -> Verdict:
    above, above_nominal, below, below_nominal, none = _SIDES[comparison]
    if n == 0:
        return none
    if n < 2:
        return Verdict.TOO_FEW_SEEDS
    if undetermined:
        return Verdict.UNDETERMINED
    if low > 0 or high < 0:
        significant = bool(np.isfinite(p_adj) and p_adj < alpha)
        if low > 0:
            return above if significant else above_nominal
        return below if significant else below_nominal
    if np.isfinite(p_eq_adj) and p_eq_adj < alpha:
        return Verdict.EQUIVALENT
    return Verdict.NOT_SIGNIFICANT


def paired_gains(
    records: pd.DataFrame,
    correct: Mapping[object, np.ndarray] | None = None,
    comparison: str = "same_algorithm",
    metric: str = "test_acc",
    level: float = 0.95,
    alpha: float = 0.05,
    equivalence_margin: float | None = None,
    correction: str = "holm",
    schedule: SeedSchedule | None = None,
    held: Mapping[tuple[Any, ...], str] | None = None,
) -> pd.DataFrame:
    """Gain of each transfer ``(source, target, strategy, budget)`` over its paired partners.

    ``correct`` maps a cell ``key`` to its per-test-example correctness (bool array, same example
    order for every cell of a target); it is used for ``metric="test_acc"`` only. ``comparison``
    is "same_algorithm" (the Wang et al. 2019 gap; frozen recipes vs their random-init run) or
    "scratch" (every recipe vs the trained baseline). One call is one correction family.

    Columns (see ``GAIN_COLUMNS``): source, target, strategy, budget, arch, comparison, n_pairs,
    mean and baseline_mean (over paired seeds), gain_mean, gain_ci_low/high (``level``),
    p_value (two-sided; Behrens-Fisher, or the paired t at seed level), p_adj (``correction``
    over every finite p_value of the table), correction ("holm" or "benjamini-hochberg"),
    interval (what the CI covers), verdict, note, negative_transfer_gap (Wang et al. eq. 1:
    error(A(S,T)) - error(A(empty,T)) = baseline_mean - mean; positive = negative transfer;
    same_algorithm only, NaN for scratch), se_seed and se_example (the two parts of the gain's
    standard error; se_example is 0 at seed level), ci_df (df of the interval's t),
    p_equivalence (raw TOST p against ``equivalence_margin``; NaN without one) and
    p_equivalence_adj (``correction`` over the TOST p-values),
    baseline_source, baseline_strategy, trains_encoder, n_train (median over seeds).

    With a seed ``schedule`` (:mod:`atlbench.analysis._sequential`) the data were looked at after
    ``start``, ``start + step``, ... seeds: ``p_value`` (and ``p_equivalence``) is then the
    sequential p-value over the looks each comparison reached, valid whatever stopped it, and
    ``p_last_look`` the ordinary p-value of its last look; the interval is the one of the seeds
    used. ``stop`` says why the comparison has the seeds it has: decided, the schedule's maximum,
    stopped for futility (:func:`atlbench.analysis._sequential.futile`), or still open
    (``held`` gives the sweep's reason for an open one: racing, the compute cap).
    ``threshold_distance`` is how far (standard errors of the gain) the verdict sits from the
    nearest line that could change it, and ``near_threshold`` flags one that a re-run with
    other float rounding would cross about 5% of the time or more
    (:mod:`atlbench.analysis._fragility`).

    Verdicts, same_algorithm / scratch:
    "positive|negative (significant|nominal)" / "above|below scratch training (...)" when the CI
    excludes 0 (significant: p_adj < alpha too; nominal: it does not survive the correction);
    "equivalent" when the CI contains 0 and the correction-adjusted TOST p < alpha (needs a
    margin); "not significant" otherwise; "undetermined" when the seed-level gains are identical
    and there are fewer than 5 seeds, or when nothing varies (seed-level fallback: identical gains
    at any n), with CI and p NaN; "too few seeds" (1 pair); "no baseline" / "no scratch run".
    """
    if isinstance(correct, str):
        raise TypeError(
            "paired_gains(records, correct, comparison, metric, ...): the second argument is "
            "the per-example correctness mapping; pass the metric as metric=..."
        )
    check_comparison(comparison)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    if correction not in CORRECTIONS:
        raise ValueError(f"correction must be one of {sorted(CORRECTIONS)}, got {correction!r}")
    margin = equivalence_margin
    if margin is not None and not margin > 0:
        raise ValueError(f"equivalence_margin must be > 0 or None, got {margin}")
    pairs = paired_runs(records, comparison, metric)
    if pairs.empty:
        return pd.DataFrame(columns=GAIN_COLUMNS)
    use = correct if metric == "test_acc" else None
    rows = []
    for key, grp in pairs.groupby(GROUP, sort=False, dropna=False):
        paired = grp.loc[grp["baseline_value"].notna()]
        n = len(paired)
        first = paired.iloc[0] if n else grp.iloc[0]
        row: dict[str, Any] = dict(zip(GROUP, key, strict=True))
        row |= {
            "arch": first["arch"],
            "n_pairs": n,
            "mean": paired["value"].mean() if n else np.nan,
            "baseline_mean": paired["baseline_value"].mean() if n else np.nan,
            "gain_mean": paired["gain"].mean() if n else np.nan,
            "baseline_source": first["baseline_source"] if n else None,
            "baseline_strategy": first["baseline_strategy"] if n else None,
            "trains_encoder": bool(first["trains_encoder"]),
            "n_train": grp["n_train"].median() if "n_train" in grp else np.nan,
        }
        notes: list[str] = []
        parts: tuple[float, ...] = (np.nan,) * 6
        label, undetermined = "", False
        if n == 0:
            frozen = comparison == "same_algorithm" and not row["trains_encoder"]
            notes.append(_NO_RANDOM_INIT if frozen else _NO_BASELINE)
        elif n >= 2:
            parts, label, undetermined, notes = _group_inference(paired, use)
        if 0 < n < RECOMMENDED_SEEDS:
            notes.append(f"only {n} paired seed(s); use >= {RECOMMENDED_SEEDS} for a firm verdict")
        if 0 < n < len(grp):
            notes.append(f"{len(grp) - n} seed(s) without a partner left out")
        if n and paired["n_baseline"].max() > 1:
            notes.append("several partner cells per seed were averaged")
        row |= dict(zip(_PART_NAMES, parts, strict=True))
        row |= {"interval": label, "is_undetermined": undetermined}
        row["look_p"], row["look_p_eq"] = _look_pvalues(paired, use, schedule, margin)
        row["notes_list"] = notes
        rows.append(row)
    out = pd.DataFrame(rows)
    gain = out["gain_mean"].to_numpy(dtype=float)
    s1, d1, s2, d2 = (out[c].to_numpy(dtype=float) for c in _PART_NAMES[:4])
    ci_se, ci_df = out["ci_se"].to_numpy(dtype=float), out["ci_df"].to_numpy(dtype=float)
    low, high = interval(gain, ci_se, ci_df, level=level)
    # A difference of two accuracies lies in [-1, 1]: clipping drops only impossible values, so
    # coverage is unchanged (a t-interval over 3 seeds reached +105 points in the text study).
    out["gain_ci_low"], out["gain_ci_high"] = np.clip(low, -1.0, 1.0), np.clip(high, -1.0, 1.0)
    out["p_last_look"] = p_value(gain, s1, d1, s2, d2)
    out["p_value"] = out["p_last_look"]
    if schedule is not None:
        weights = schedule.weights
        out["p_value"] = [sequential_pvalue(ps, weights) for ps in out["look_p"]]
    out["p_adj"] = adjust_pvalues(out["p_value"].to_numpy(), correction)
    out["correction"] = CORRECTIONS[correction]
    p_eq_last = np.full(len(out), np.nan)
    if margin is not None:
        p_eq_last = tost_pvalue(gain, s1, d1, s2, d2, margin=margin)
        out["p_equivalence"] = p_eq_last
        if schedule is not None:
            out["p_equivalence"] = [
                sequential_pvalue(ps, schedule.weights) for ps in out["look_p_eq"]
            ]
        p_eq_adj = adjust_pvalues(out["p_equivalence"].to_numpy(), correction)
    else:
        out["p_equivalence"] = np.nan
        p_eq_adj = np.full(len(out), np.nan)
    out["p_equivalence_adj"] = p_eq_adj
    lines = line_gains(
        (s1, d1, s2, d2), ci_se, ci_df, out["p_last_look"].to_numpy(dtype=float),
        out["p_adj"].to_numpy(dtype=float), p_eq_last, p_eq_adj, margin, alpha, level,
    )  # fmt: skip
    distance = threshold_distance(gain, ci_se, lines)
    nears = near_threshold(distance)
    verdicts, notes_out, stops, decided_rows = [], [], [], []
    family = int(np.isfinite(out["p_value"].to_numpy(dtype=float)).sum())
    out["key"] = [tuple(r) for r in out[GROUP].itertuples(index=False)]
    n_pairs, p_adj = out["n_pairs"].to_numpy(dtype=int), out["p_adj"].to_numpy(dtype=float)
    undetermined_rows = out["is_undetermined"].to_numpy(dtype=bool)
    frozen_rows = ~out["trains_encoder"].to_numpy(dtype=bool)
    notes_lists: list[list[str]] = list(out["notes_list"])
    for k in range(len(out)):
        verdict = _verdict(
            comparison,
            int(n_pairs[k]),
            bool(undetermined_rows[k]),
            float(low[k]),
            float(high[k]),
            float(p_adj[k]),
            float(p_eq_adj[k]),
            alpha,
        )
        notes = list(notes_lists[k])
        directed = verdict in _SIDES[comparison][:4]  # the interval excludes zero
        if directed and np.isfinite(p_eq_adj[k]) and p_eq_adj[k] < alpha:
            notes.append(f"also inside +/-{margin:g} by TOST: the difference is small")
        if comparison == "scratch" and verdict in _BELOW and frozen_rows[k]:
            notes.append(
                "a frozen recipe against trained scratch: not evidence of negative transfer "
                "(see the same_algorithm comparison)"
            )
        decided = verdict in _DECIDED[comparison]
        if verdict not in _TESTED:
            nears[k] = False  # no interval or p-value: nothing to cross
        if nears[k]:
            notes.append(
                f"{distance[k]:.2f} standard errors from the line that decides it: a re-run "
                "with other float rounding (another CPU, a GPU) may give the other verdict"
            )
        decided_rows.append(decided)
        verdicts.append(verdict)
        notes_out.append("; ".join(notes))
    # the correction's bar for the next rejection: alpha / (m - r) for Holm, alpha (r + 1) / m for
    # BH, with r comparisons already rejected
    rejected = sum(v in _REJECTED for v in verdicts)
    divisor = family - rejected if correction == "holm" else family / (rejected + 1)
    for k in range(len(out)):
        hopeless = (
            schedule is not None
            and not decided_rows[k]
            and futile(float(gain[k]), float(ci_se[k]), int(n_pairs[k]), schedule,
                       max(divisor, 1.0), alpha, margin)
        )  # fmt: skip
        stops.append(
            _stop(schedule, int(n_pairs[k]), decided_rows[k], hopeless, out["key"].iloc[k], held)
        )
    out["verdict"], out["note"] = verdicts, notes_out
    out["stop"], out["near_threshold"] = stops, nears
    out["threshold_distance"] = distance
    out["comparison"] = comparison
    out["negative_transfer_gap"] = (
        out["baseline_mean"] - out["mean"] if comparison == "same_algorithm" else np.nan
    )
    out["n_pairs"] = out["n_pairs"].astype(int)
    return budget_order(out)[GAIN_COLUMNS]


_DECIDED: dict[str, frozenset[Verdict]] = {
    comparison: frozenset({sides[0], sides[2], Verdict.EQUIVALENT})
    for comparison, sides in _SIDES.items()
}
"""Verdicts that close a comparison: significant either way, or equivalent."""
_REJECTED = frozenset(v for sides in _SIDES.values() for v in (sides[0], sides[2]))
_TESTED = frozenset(v for sides in _SIDES.values() for v in sides[:4]) | {
    Verdict.NOT_SIGNIFICANT,
    Verdict.EQUIVALENT,
}
"""Verdicts that come from an interval and a test (the rest have neither)."""


def _look_pvalues(
    paired: pd.DataFrame,
    correct: Mapping[object, np.ndarray] | None,
    schedule: SeedSchedule | None,
    margin: float | None,
) -> tuple[list[float], list[float]]:
    """Ordinary p-values (and TOST p-values) at each look of ``schedule`` the rows reached."""
    if schedule is None or len(paired) < 2:
        return [], []
    ps, eqs = [], []
    for k in schedule.reached(paired["seed"].astype(int).tolist()):
        sub = paired[paired["seed"].isin(schedule.seeds(schedule.looks[k]))]
        if len(sub) < 2:
            ps.append(np.nan)
            eqs.append(np.nan)
            continue
        parts = _group_inference(sub, correct)[0]
        gain = float(sub["gain"].mean())
        ps.append(float(p_value(gain, *parts[:4])))
        eq = tost_pvalue(gain, *parts[:4], margin=margin) if margin is not None else np.nan
        eqs.append(float(eq))
    return ps, eqs


def _stop(
    schedule: SeedSchedule | None,
    n: int,
    decided: bool,
    hopeless: bool,
    key: tuple[Any, ...],
    held: Mapping[tuple[Any, ...], str] | None,
) -> str:
    """Why a comparison has the seeds it has (the sweep adds seeds only to "open" ones)."""
    if schedule is None:
        return "fixed seeds"
    if decided:
        return f"decided at {n} seeds"
    if n >= schedule.max:
        return f"undecided at the maximum of {schedule.max} seeds"
    if hopeless:
        return (
            f"futile at {n} seeds: at the current estimate even {schedule.max} seeds would "
            "not decide it"
        )
    reason = (held or {}).get(key)
    return f"open at {n} seeds" + (f": {reason}" if reason else "")
