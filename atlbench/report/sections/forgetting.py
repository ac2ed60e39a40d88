"""Forgetting: the source head's accuracy on its own task before and after each transfer
recipe, beside the per-layer change that fine-tuning made (1 - CKA)."""

from __future__ import annotations

from typing import Any

import pandas as pd

from atlbench.analysis import forgetting_table
from atlbench.registry import register_report_section
from atlbench.report._study import StudyData
from atlbench.report._tables import interval_text
from atlbench.report.sections._base import Section, Table
from atlbench.report.sections.cka import CHANGE_CURVE


@register_report_section("forgetting", order=10)
class Forgetting(Section):
    parent = "failure-modes"
    title = "Forgetting"
    intro = (
        "<p>The source head's accuracy on its own task's held-out test split, before and after "
        "adaptation; the drop's 95% interval is over seeds. Frozen recipes forget exactly "
        "nothing. L2-SP, LP-FT, LoRA and frozen layers are expected to forget less than full "
        "fine-tuning (Li et al. 2018; Kumar et al. 2022): compare the rows. Beside it, how far "
        "each block moved (1 - CKA).</p>"
    )
    csv = "forgetting"
    table = Table(
        {
            "target": "Target",
            "budget": "Budget",
            "source": "Source",
            "strategy": "Strategy",
            "n_seeds": "Seeds",
            "source_acc_before": "Source acc. before",
            "source_acc_after": "Source acc. after",
            "forgetting": "Forgetting",
            "forgetting_ci": "95% CI",
        }
    )
    figures_at = "beside"

    def data(self, views: StudyData) -> pd.DataFrame:
        """``forgetting.csv``: the drop with a 95% interval over seeds, per transfer recipe."""
        return forgetting_table(views.records if views.has_results else pd.DataFrame())

    def shown(self, views: StudyData) -> pd.DataFrame:
        table = views.table(self.name)
        if table.empty:
            return table
        low, high = table["forgetting_ci_low"], table["forgetting_ci_high"]
        return table.assign(forgetting_ci=interval_text(low, high, 3))

    def available(self, views: StudyData) -> bool:
        return len(views.table(self.name)) > 0

    def figures(self, views: StudyData) -> dict[str, Any]:
        return {k: v for k, v in views.figures_of("cka").items() if k == CHANGE_CURVE}
