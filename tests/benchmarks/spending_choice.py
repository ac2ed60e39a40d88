"""Which alpha-spending function decides the most comparisons per seed (issue #23, item 1).

Runs the sweep's sequential rule (``run_sequential`` of tests/unit/test_sequential.py: Holm over
families of 10, futility stops, the union-bound p-value) on the same simulated comparisons with
each spending function, for the default schedule 3/2/15 and the quickstart's 3/4/11, with both
generators. Prints the share of shifted comparisons decided, the seeds spent, decisions per 100
seeds, and the family-wise error on null comparisons::

    python tests/benchmarks/spending_choice.py              # pocock, hsd-4, obf
    python tests/benchmarks/spending_choice.py pocock hsd-4

Not a unit test: a few minutes on a CPU. The package uses Hwang-Shih-DeCani with gamma = -4
(``atlbench.seeds.spending``).
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
from scipy import stats as sps

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import test_sequential as sim

from atlbench import seeds


def pocock(t: np.ndarray) -> np.ndarray:
    """Lan-DeMets Pocock type: ``ln(1 + (e - 1) t)``."""
    return np.log1p((math.e - 1.0) * np.clip(np.asarray(t, float), 0.0, 1.0))


def obrien_fleming(t: np.ndarray) -> np.ndarray:
    """Lan-DeMets O'Brien-Fleming type at alpha 0.05, as a share of alpha."""
    u = np.clip(np.asarray(t, float), 1e-12, 1.0)
    out: np.ndarray = (2.0 - 2.0 * sps.norm.cdf(sps.norm.isf(0.025) / np.sqrt(u))) / 0.05
    return out


_HSD = seeds.spending  # the package's own, before main() swaps the module attribute
FAMILIES: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "pocock": pocock,
    "hsd-4": lambda t: _HSD(t, -4.0),
    "obf": obrien_fleming,
}


def main(names: list[str]) -> None:
    original = seeds.spending
    try:
        for schedule in (seeds.SeedSchedule(3, 2, 15), seeds.SeedSchedule(3, 4, 11)):
            for heavy in (False, True):
                rng = np.random.default_rng(7 + heavy)
                cases = {
                    "mixed": sim.simulate(rng, 1500, schedule.max, 200, False, heavy, large=0.3),
                    "small": sim.simulate(rng, 1500, schedule.max, 200, False, heavy),
                    "null": sim.simulate(rng, 1500, schedule.max, 200, True, heavy),
                }
                for name in names:
                    seeds.spending = FAMILIES[name]  # what SeedSchedule.weights reads
                    weights = np.round(schedule.weights, 3)
                    kind = "heavy" if heavy else "gaussian"
                    print(f"{schedule.looks} {name} {kind}: weights {weights}")
                    for case, (d, _truth) in cases.items():
                        res = sim.run_sequential(d, schedule, "holm")
                        decided = res["sig"].mean()
                        per100 = res["sig"].sum() / res["used"].sum() * 100
                        line = (
                            f"    {case:5s}: decided {decided:.3f}, seeds {res['used'].mean():.2f}"
                            f", {per100:.2f} decisions per 100 seeds"
                        )
                        if case == "null":
                            fwer = res["sig"].reshape(-1, sim.FAMILY).any(axis=1).mean()
                            line += f", family-wise error {fwer:.3f}"
                        print(line)
    finally:
        seeds.spending = original


if __name__ == "__main__":
    main(sys.argv[1:] or list(FAMILIES))
