"""Seed schedules: which seeds a sweep runs, and at which seed counts it looks at the data.

A leaf value type (numpy only) shared by the suite schema, the plan and the analysis; the
statistics of the looks are in :mod:`atlbench.analysis._sequential`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SPENDING_GAMMA", "SeedSchedule", "spending"]


SPENDING_GAMMA = -4.0
"""Hwang-Shih-DeCani parameter: -4 spends like O'Brien-Fleming, little early and most at ``max``."""


def spending(t: np.ndarray | float, gamma: float = SPENDING_GAMMA) -> np.ndarray:
    """Share of alpha spent by information fraction ``t`` (Hwang, Shih & DeCani 1990, Stat Med
    9:1439-1445): ``(1 - exp(-gamma t)) / (1 - exp(-gamma))`` on [0, 1]."""
    u = np.clip(np.asarray(t, dtype=float), 0.0, 1.0)
    out: np.ndarray = np.expm1(-gamma * u) / math.expm1(-gamma)
    return out


@dataclass(frozen=True)
class SeedSchedule:
    """Seeds ``first, first + 1, ...``: ``start`` of them, then ``step`` more per look, up to
    ``max``."""

    start: int
    step: int
    max: int
    first: int = 0

    def __post_init__(self) -> None:
        if not (2 <= self.start <= self.max and self.step >= 1):
            raise ValueError(
                f"a seed schedule needs 2 <= start <= max and step >= 1, got start={self.start}, "
                f"step={self.step}, max={self.max}"
            )

    @property
    def looks(self) -> tuple[int, ...]:
        """Seed counts at which the data are analysed: start, start + step, ..., max."""
        out = list(range(self.start, self.max, self.step))
        return (*out, self.max) if not out or out[-1] != self.max else tuple(out)

    @property
    def weights(self) -> np.ndarray:
        """Share of alpha spent at each look (sums to 1)."""
        frac = np.asarray(self.looks, dtype=float) / self.max
        return np.diff(spending(np.concatenate([[0.0], frac])))

    def seeds(self, n: int) -> tuple[int, ...]:
        """The first ``n`` seeds of the schedule."""
        return tuple(range(self.first, self.first + min(n, self.max)))

    @property
    def all_seeds(self) -> tuple[int, ...]:
        return self.seeds(self.max)

    def next_look(self, n: int) -> int | None:
        """The seed count of the first look after ``n`` seeds; None once ``max`` is reached."""
        return next((k for k in self.looks if k > n), None)

    def reached(self, seeds: Sequence[int]) -> list[int]:
        """Indices of the looks whose seeds are all at or below the highest seed present."""
        if not len(seeds):
            return []
        top = int(max(seeds)) - self.first + 1
        return [k for k, n in enumerate(self.looks) if n <= top]
