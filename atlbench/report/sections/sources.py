"""Sources: the suite's source models, and how well each zoo model learned its own task.

A zoo source is only a pre-trained model if it learned its pre-training task; its accuracy on
that task's validation and held-out test splits is read from the zoo's cache side-car (written
when the model was pre-trained), so it shows whether the weights were trained in this sweep or
an earlier one. Nothing is trained here.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from atlbench.registry import register_report_section
from atlbench.report._study import StudyData
from atlbench.report.sections._base import Section, Table

ENTRY_FIELDS = {"id", "reported_accuracy", "eval_on"}  # a source entry's keys besides its kind
WEAK = 0.8  # own-task validation accuracy below which a zoo source is called under-trained
SOURCE_COLUMNS = [
    "source", "kind", "pretrained_on", "val_acc", "test_acc", "epochs", "pretrain_s",
    "reported_accuracy",
]  # fmt: skip


def _pretraining(recipe: dict[str, Any]) -> dict[str, Any]:
    """The zoo recipe's task and, when its weights are in this machine's cache, its figures."""
    task = recipe.get("pretrain_on") or {}
    if not task:
        return {"pretrained_on": "nothing (random initialisation)"}
    classes = task.get("classes")
    named = f" {classes}" if isinstance(classes, list) else ""
    row: dict[str, Any] = {"pretrained_on": f"{task.get('task', '?')}{named}"}
    try:
        from atlbench.sources.zoo import ZooParams, pretrain_summary

        summary = pretrain_summary(ZooParams.model_validate(recipe))
    except Exception:  # an arch this install lacks, or a recipe of another version: no figures
        return row
    if summary is None:
        return row | {"note": "not in this machine's zoo cache"}
    if summary.get("num_classes"):
        row["pretrained_on"] += f" ({summary['num_classes']} classes)"
    return row | {
        "val_acc": summary.get("val_acc"),
        "test_acc": summary.get("test_acc"),
        "epochs": summary.get("epochs"),
        "pretrain_s": summary.get("train_time_s"),
    }


def source_table(suite: dict[str, Any]) -> pd.DataFrame:
    """One row per source entry of the suite's settings (``suite`` as the store keeps it)."""
    rows = []
    for entry in suite.get("sources") or []:
        kind = next((k for k, v in entry.items() if k not in ENTRY_FIELDS and v is not None), "?")
        row: dict[str, Any] = {"source": entry.get("id"), "kind": kind}
        if kind == "zoo":
            row |= _pretraining(entry["zoo"])
        if entry.get("reported_accuracy") is not None:
            row["reported_accuracy"] = entry["reported_accuracy"]
        rows.append(row)
    frame = pd.DataFrame(rows)
    extra = [c for c in frame.columns if c not in SOURCE_COLUMNS]
    return frame.reindex(columns=[*SOURCE_COLUMNS, *extra])


@register_report_section("sources", order=10)
class Sources(Section):
    parent = "environment"
    title = "Sources"
    intro = (
        "<p>The source models. A zoo model is pre-trained here, once, on a built-in task: its "
        "accuracy on that task's validation and held-out test splits says how well it learned "
        "it (from the zoo cache, whether trained in this sweep or an earlier one).</p>"
    )
    table = Table(
        {
            "source": "Source",
            "kind": "Kind",
            "pretrained_on": "Pre-trained on",
            "val_acc": "Own-task val. acc.",
            "test_acc": "Own-task test acc.",
            "pretrain_s": "Pre-training (s)",
        },
        more={"epochs": "Epochs", "reported_accuracy": "Reported accuracy", "note": "Note"},
    )

    def data(self, views: StudyData) -> pd.DataFrame:
        return source_table(views.suite)

    def shown(self, views: StudyData) -> pd.DataFrame:
        """Columns no source has a value for are dropped (a suite without zoo sources)."""
        return views.table(self.name).dropna(axis=1, how="all")

    def lines(self, views: StudyData) -> list[str]:
        """Zoo sources that barely learned their own task are not real pre-trained models."""
        table = views.table(self.name)
        if table.empty:
            return []
        weak = table[table["val_acc"].astype(float) < WEAK]
        return [
            f"{row.source} reaches only {row.val_acc:.2f} validation accuracy on its own "
            "pre-training task: it is hardly a pre-trained model. Give its recipe more data "
            "(n_per_class), epochs or a higher lr."
            for row in weak.itertuples()
        ]
