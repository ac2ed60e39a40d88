"""Labels saved: how many labels scratch training needs to match each significant gain."""

from __future__ import annotations

import pandas as pd

from atlbench.analysis import labels_saved
from atlbench.registry import register_report_section
from atlbench.report._study import StudyData
from atlbench.report.sections._base import Section, Table


@register_report_section("labels-saved", order=10)
class LabelsSaved(Section):
    parent = "efficiency"
    title = "Labels saved"
    intro = (
        "<p>How many labels scratch training needs to match each significant gain (interpolated "
        "in log n, bootstrap interval in the CSV).</p>"
    )
    table = Table(
        {
            "target": "Target",
            "budget": "Budget",
            "source": "Source",
            "strategy": "Strategy",
            "n_train": "Labels",
            "labels_saved": "Labels saved",
            "reason": "Note",
        }
    )

    def data(self, views: StudyData) -> pd.DataFrame | None:
        if not views.has_results or "negative-transfer" in views.omitted:
            return None
        return labels_saved(views.records, views.correct, correction=views.correction)
