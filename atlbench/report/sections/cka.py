"""Layer similarity (CKA): how much each block moved under fine-tuning, and how fine-tuned and
scratch-trained models differ, layer by layer. ``cka.csv`` has every comparison's per-layer
CKA in long form."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from atlbench.registry import register_report_section
from atlbench.report import _plots as plots
from atlbench.report._study import StudyData
from atlbench.report.sections._base import Section

CHANGE_CURVE = "cka: what fine-tuning changed"


def cka_items(views: StudyData) -> list[dict[str, Any]]:
    """One CKA comparison per (source, target, strategy, budget, kind): the first seed at each
    target's largest label budget."""
    size: dict[Any, float] = {}
    if "n_train" in views.records:
        size = views.records.groupby(["target", "budget"])["n_train"].median().to_dict()
    largest: dict[str, float] = {}
    for (target, _), n in size.items():
        largest[target] = max(largest.get(target, 0.0), float(n))
    seen: set[tuple[str, ...]] = set()
    out = []
    for item in sorted(views.artifacts.get("cka", []), key=lambda a: a.get("seed", 0)):
        if size.get((item["target"], item["budget"]), 0.0) < largest.get(item["target"], 0.0):
            continue
        ident = (item["source"], item["target"], item["strategy"], item["budget"], item["kind"])
        if ident not in seen:
            seen.add(ident)
            out.append(item)
    return out


@register_report_section("cka", order=70)
class LayerSimilarity(Section):
    title = "Layer similarity (CKA)"
    nav = "CKA"
    intro = (
        "<p>Linear CKA between layers of the pre-trained and fine-tuned models (how much each "
        "block moved) and between fine-tuned and scratch-trained models.</p>"
    )
    missing = (
        '<p class="muted">No CKA comparisons recorded (set <code>cka: true</code> in the '
        "suite).</p>"
    )
    csv = "cka"
    figure_alt = "cka"

    def data(self, views: StudyData) -> pd.DataFrame:
        """Per-layer CKA of every comparison in long form (for CSV and notebooks)."""
        rows = []
        for item in views.artifacts.get("cka", []):
            matrix = np.asarray(item["matrix"], dtype=float)
            if matrix.shape[0] != matrix.shape[1]:
                continue
            for layer, value in zip(item["rows"], np.diag(matrix), strict=True):
                rows.append(
                    {k: item[k] for k in ("source", "target", "strategy", "budget", "seed", "kind")}
                    | {"layer": layer, "cka": float(value)}
                )
        return pd.DataFrame(rows)

    def figures(self, views: StudyData) -> dict[str, Any]:
        """The per-layer change curve, then one heatmap per comparison."""
        out: dict[str, Any] = {}
        curves: dict[str, tuple[list[str], list[float]]] = {}
        heatmaps = {}
        for item in cka_items(views):
            matrix = np.asarray(item["matrix"], dtype=float)
            title = f"{item['kind']}: {item['source']} / {item['strategy']} on {item['target']}"
            heatmaps[f"cka: {title}"] = plots.cka_heatmap(matrix, item["rows"], item["cols"], title)
            if item["kind"] == "pre_vs_finetuned" and matrix.shape[0] == matrix.shape[1]:
                label = f"{item['source']} {item['strategy']} {item['target']} {item['budget']}"
                curves[label] = (list(item["rows"]), list(1.0 - np.diag(matrix)))
        curve = plots.layer_change_curve(curves)
        if curve is not None:
            out[CHANGE_CURVE] = curve
        return out | heatmaps
