"""Environment: the devices and package versions the records were produced with."""

from __future__ import annotations

import pandas as pd

from atlbench.registry import register_report_section
from atlbench.report._study import StudyData
from atlbench.report._tables import NOTHING
from atlbench.report.sections._base import Section, Table


@register_report_section("environment", order=100)
class Environment(Section):
    title = "Environment"
    table = Table({"what": "What", "value": "Value"})
    empty = NOTHING

    def data(self, views: StudyData) -> pd.DataFrame:
        records = views.records
        if records.empty:
            return pd.DataFrame(columns=["what", "value"])
        rows: dict[str, set[str]] = {}
        for col in ("device", "dtype"):
            if col in records:
                rows[col] = {str(v) for v in records[col].dropna().unique()}
        for versions in records.get("versions", pd.Series(dtype=object)).dropna():
            if isinstance(versions, dict):
                for name, version in versions.items():
                    rows.setdefault(name, set()).add(str(version))
        return pd.DataFrame(
            [(k, ", ".join(sorted(v))) for k, v in rows.items()], columns=["what", "value"]
        )
