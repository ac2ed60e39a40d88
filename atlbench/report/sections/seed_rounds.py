"""Seed rounds: with a seed schedule, how many seeds each comparison used, why it stopped, and
which questions a compute cap left open with what closing them would cost.

``seed_rounds.csv`` has one row per comparison (both tables); ``stop`` is decided at n seeds,
undecided at the maximum, or open (with the sweep's reason: racing, the compute cap).
"""

from __future__ import annotations

import pandas as pd

from atlbench.registry import register_report_section
from atlbench.report._study import StudyData
from atlbench.report.sections._base import Section, Table

SEED_ROUND_COLUMNS = [
    "target", "budget", "source", "strategy", "comparison", "n_pairs", "verdict", "stop",
    "p_adj", "near_threshold",
]  # fmt: skip


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


@register_report_section("seed-rounds", order=25)
class SeedRounds(Section):
    parent = "negative-transfer"
    title = "Seeds spent where verdicts were open"
    intro = (
        '<p class="muted">The sweep ran the schedule\'s first seeds everywhere, then added seeds '
        "only to comparisons still open: not yet significant either way nor equivalent, below "
        "the schedule's maximum, not eliminated by racing (a recipe shown worse than its "
        "target's leader at the same error budget) and within the compute cap.</p>"
    )
    csv = "seed_rounds"
    folded = True
    table = Table(
        {
            "target": "Target",
            "budget": "Budget",
            "source": "Source",
            "strategy": "Strategy",
            "comparison": "Against",
            "n_pairs": "Seeds",
            "verdict": "Verdict",
            "stop": "Why it stopped",
        }
    )

    def data(self, views: StudyData) -> pd.DataFrame | None:
        if views.schedule is None:
            return None
        both = views.table("negative-transfer")  # both comparisons, computed once for the page
        if both.empty:
            return None
        return both.reindex(columns=SEED_ROUND_COLUMNS)

    def words(self, views: StudyData) -> list[str]:
        frame = views.frame(self.name)
        if frame is None or frame.empty:
            return []
        schedule = views.schedule
        assert schedule is not None
        decided = frame["stop"].str.startswith("decided")
        looks = ", ".join(str(n) for n in schedule.looks)
        lines = [
            f"Schedule: looks at {looks} seeds. {int(decided.sum())} of {len(frame)} comparisons "
            f"reached a decision; {int((frame['n_pairs'] > schedule.start).sum())} got more "
            f"than the first {schedule.start} seeds."
        ]
        rounds = views.seed_rounds
        for q in rounds.get("open", []):
            lines.append(
                f"Open at the compute cap: {q['source']} / {q['strategy']} on {q['target']} "
                f"({q['budget']}, {q['comparison']}) with {q['n_seeds']} seeds; reaching the "
                f"maximum would cost {q['cells_to_max']} more cells, about "
                f"{_minutes(float(q['seconds_to_max']))}."
            )
        near = int(frame["near_threshold"].fillna(False).astype(bool).sum())
        if near:
            lines.append(
                f"{near} verdict(s) sit near their threshold: a re-run with other float "
                "rounding (another CPU, a GPU) would flip each about 5% of the time or more."
            )
        return lines
