"""How far a re-run with other float rounding moves each comparison, and whether the
``near_threshold`` flag saw the verdicts that changed (issue #23, item 6).

Give two results directories of the same suite, e.g. the committed quickstart and a run made
with another CPU's kernels::

    ATLBENCH_CACHE=/tmp/avx2/cache ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 \\
        atlbench sweep suites/quickstart.yaml --results-dir /tmp/avx2/r --reports-dir /tmp/avx2/p
    python tests/benchmarks/rerun_spread.py results/quickstart /tmp/avx2/r/quickstart

For every comparison (both tables) with the same seeds in both runs it prints the SD of the
change of the mean gain in standard errors of the first run's interval, by whether the recipe
trains the encoder (what :data:`atlbench.analysis._fragility.RERUN_SD` holds); then, over every
comparison, how many verdicts differ and how many of those the first run had flagged.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd
from scipy import stats

KEY = ["source", "target", "strategy", "budget", "comparison"]


def load(results: str) -> pd.DataFrame:
    """Both comparison tables of a results directory, as the report computes them."""
    from atlbench.report._study import StudyData
    from atlbench.store import Store

    with Store(results) as store:
        data = StudyData.from_store(store)
        return pd.concat([data.gains, data.vs_scratch], ignore_index=True)


def statistics(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean gain, the interval's standard error, seeds, kind, verdict and flag per comparison."""
    level_t = stats.t.ppf(0.975, frame["ci_df"].astype(float))
    out = frame[KEY].copy()
    out["gain"] = frame["gain_mean"]
    out["se"] = (frame["gain_ci_high"] - frame["gain_ci_low"]) / (2.0 * level_t)
    out["n"] = frame["n_pairs"]
    out["trained"] = frame["trains_encoder"].astype(bool)
    out["verdict"] = frame["verdict"]
    out["near"] = frame["near_threshold"].astype(bool)
    out["distance"] = frame["threshold_distance"]
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("first", help="results directory (e.g. results/quickstart)")
    parser.add_argument("second", help="results directory of the re-run")
    args = parser.parse_args(argv)
    a, b = statistics(load(args.first)), statistics(load(args.second))
    both = a.merge(b, on=KEY, suffixes=("_a", "_b"))
    finite = np.isfinite(both["gain_a"]) & np.isfinite(both["gain_b"]) & (both["se_a"] > 0)
    same_n = both[(both["n_a"] == both["n_b"]) & finite]
    print(f"{len(both)} comparisons in both runs, {len(same_n)} with the same seeds")
    for trained, grp in same_n.groupby("trained_a"):
        kind = "trained" if trained else "frozen"
        moved = (grp["gain_b"] - grp["gain_a"]) / grp["se_a"]
        print(
            f"  {kind:8s} n={len(grp):3d}: change of the mean gain in standard errors: "
            f"SD {moved.std(ddof=1):.3f}, RMS {np.sqrt((moved**2).mean()):.3f}, "
            f"median |change| {moved.abs().median():.3f}, max {moved.abs().max():.3f}"
        )
    changed = both[both["verdict_a"] != both["verdict_b"]]
    print(
        f"verdicts changed: {len(changed)} of {len(both)}; flagged in the first run: "
        f"{int(changed['near_a'].sum())} of those; flagged overall: {int(both['near_a'].sum())}"
    )
    for row in changed.itertuples(index=False):
        mark = "flagged" if row.near_a else "NOT FLAGGED"
        print(
            f"  {row.source} -> {row.target} / {row.strategy} / {row.budget} vs {row.comparison}:"
            f" {row.verdict_a} (n={row.n_a}, {row.distance_a:.2f} SE) -> {row.verdict_b} "
            f"(n={row.n_b}) [{mark}]"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
