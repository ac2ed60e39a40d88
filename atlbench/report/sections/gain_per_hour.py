"""Gain per compute hour: the paired gain over each recipe's cost, CPU and GPU hours apart."""

from __future__ import annotations

import pandas as pd

from atlbench.analysis import gain_per_hour
from atlbench.registry import register_report_section
from atlbench.report._study import StudyData
from atlbench.report.sections._base import Section, Table


@register_report_section("gain-per-hour", order=30)
class GainPerHour(Section):
    parent = "efficiency"
    title = "Gain per compute hour"
    intro = (
        '<p class="muted">Cost is every trial plus feature extraction. Cells cheaper than a '
        "minute get no per-hour figure: fixed overhead dominates them.</p>"
    )
    table = Table(
        {
            "target": "Target",
            "budget": "Budget",
            "source": "Source",
            "strategy": "Strategy",
            "gain_mean": "Gain (pts)",
            "cost_s": "Cost / cell (s)",
            "gain_per_cpu_hour": "Gain / CPU-hour",
            "gain_per_gpu_hour": "Gain / GPU-hour",
            "reason": "Note",
        }
    )

    def data(self, views: StudyData) -> pd.DataFrame | None:
        if not views.has_results or "efficiency" in views.omitted:
            return None
        return gain_per_hour(views.records)
