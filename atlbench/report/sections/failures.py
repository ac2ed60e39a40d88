"""Failures: the cells that raised, with their error (their results are missing, not zero)."""

from __future__ import annotations

import pandas as pd

from atlbench.registry import register_report_section
from atlbench.report._study import StudyData
from atlbench.report.sections._base import Section, Table

FAILURE_COLUMNS = ["source", "target", "strategy", "role", "budget", "seed", "error"]


@register_report_section("failures", order=90)
class Failures(Section):
    title = "Failures"
    missing = '<p class="muted">No failed cells.</p>'
    table = Table({c: c.capitalize() for c in FAILURE_COLUMNS})

    def data(self, views: StudyData) -> pd.DataFrame:
        if views.records.empty:
            return pd.DataFrame(columns=FAILURE_COLUMNS)
        failed = views.records[views.records["status"] != "done"]
        return failed.reindex(columns=FAILURE_COLUMNS).reset_index(drop=True)
