"""Overfitting the budget: the selected run's train/validation gap, and how many cells overfit."""

from __future__ import annotations

import pandas as pd

from atlbench.analysis import overfitting_table
from atlbench.registry import register_report_section
from atlbench.report._study import StudyData
from atlbench.report.sections._base import Section, Table


@register_report_section("overfitting", order=20)
class Overfitting(Section):
    parent = "failure-modes"
    title = "Overfitting the budget"
    intro = (
        "<p>The selected run's training-batch accuracy minus its best validation accuracy, and "
        "how many cells peaked in the first half of a run that early stopping ended. A cell "
        "overfits when the gap exceeds 25 points and validation peaked early.</p>"
    )
    table = Table(
        {
            "target": "Target",
            "budget": "Budget",
            "source": "Source",
            "strategy": "Strategy",
            "n_cells": "Cells",
            "train_val_gap": "Train - val gap",
            "peaked_early": "Peaked early",
            "overfit_cells": "Overfit cells",
        }
    )

    def data(self, views: StudyData) -> pd.DataFrame:
        """Per recipe: the selected run's train/validation gap and how many cells overfit."""
        return overfitting_table(views.records if views.has_results else pd.DataFrame())
