"""Label mapping: for sources with their own head, where each target class lands among the
source's classes (P(z | y), as in LEEP)."""

from __future__ import annotations

import pandas as pd

from atlbench.registry import register_report_section
from atlbench.report._study import StudyData
from atlbench.report.sections._base import Section, Table

COLUMNS = ["source", "target", "n_target_classes", "n_confident", "n_shared", "mapping"]


@register_report_section("label-mapping", order=30)
class LabelMapping(Section):
    parent = "failure-modes"
    title = "Label mapping"
    intro = (
        "<p>For sources with their own head: the source class each target class lands on, "
        "P(z | y) as in LEEP (Nguyen et al. 2020). Confident: at least half of the class's mass "
        "on one source class; shared: two or more target classes land on the same source "
        "class.</p>"
    )
    csv = "label_mapping"
    table = Table(
        {
            "target": "Target",
            "source": "Source",
            "n_target_classes": "Target classes",
            "n_confident": "Confident",
            "n_shared": "Shared",
            "mapping": "Target class → source class",
        }
    )

    def data(self, views: StudyData) -> pd.DataFrame:
        """Per (source with a head, target): how target classes land on source classes."""
        rows = []
        for item in views.artifacts.get("label_mapping", []):
            pairs = [
                f"{name} → {z} ({p:.2f})"
                for name, z, p in zip(item["class_names"], item["top"], item["top_p"], strict=True)
            ]
            rows.append({k: item[k] for k in COLUMNS[:5]} | {"mapping": "; ".join(pairs)})
        return pd.DataFrame(rows, columns=COLUMNS)
