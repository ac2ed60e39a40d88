"""Data efficiency and compute: learning curves per target, and accuracy against cost."""

from __future__ import annotations

from typing import Any

import pandas as pd

from atlbench.analysis import cost_accuracy
from atlbench.registry import register_report_section
from atlbench.report import _plots as plots
from atlbench.report._study import StudyData
from atlbench.report.sections._base import Section


@register_report_section("efficiency", order=50)
class Efficiency(Section):
    title = "Data efficiency and compute"
    nav = "Efficiency"
    requires = ("n_train", "cost_s", "device")  # learning curves, cost, gain per hour

    def figures(self, views: StudyData) -> dict[str, Any]:
        out: dict[str, Any] = {}
        summary = views.summary
        for target in summary["target"].unique() if not summary.empty else []:
            fig = plots.learning_curves(summary, views.records, str(target))
            if fig is not None:
                out[f"learning curve: {target}"] = fig
        return out


@register_report_section("accuracy-vs-cost", order=20)
class AccuracyVsCost(Section):
    """The Pareto plot of accuracy against cost (no heading: it sits between two tables)."""

    parent = "efficiency"

    def data(self, views: StudyData) -> pd.DataFrame:
        if not views.has_results or "efficiency" in views.omitted:
            return pd.DataFrame()
        return cost_accuracy(views.records)

    def figures(self, views: StudyData) -> dict[str, Any]:
        fig = plots.cost_plot(views.table(self.name))
        return {"accuracy vs cost": fig} if fig is not None else {}
