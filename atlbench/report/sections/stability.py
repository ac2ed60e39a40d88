"""Estimator stability: how much each estimator's ranking agrees with itself across seeds and
budgets (Kendall tau between its rankings; Agostinelli et al. 2022)."""

from __future__ import annotations

import pandas as pd

from atlbench.analysis import estimator_stability
from atlbench.registry import register_report_section
from atlbench.report._study import StudyData
from atlbench.report.sections._base import Section, Table
from atlbench.report.sections.estimators import BASELINES


@register_report_section("stability", order=10)
class Stability(Section):
    parent = "estimators"
    title = "Stability"
    intro = (
        "<p>How much each estimator's ranking of the sources agrees with itself across seeds "
        "(label subsets) and across budgets: mean pairwise Kendall τ (Agostinelli et al., ECCV "
        "2022). No metric wins everywhere; an unstable ranking is a reason for caution.</p>"
    )
    table = Table(
        {
            "target": "Target",
            "estimator": "Estimator",
            "n_sources": "Sources",
            "seed_tau": "τ across seeds",
            "seed_pairs": "Seed pairs",
            "budget_tau": "τ across budgets",
            "budget_pairs": "Budget pairs",
            "reason": "Note",
        }
    )

    def data(self, views: StudyData) -> pd.DataFrame:
        scores = views.estimates[~views.estimates["estimator"].isin(BASELINES)]
        return estimator_stability(scores) if len(scores) else pd.DataFrame()
