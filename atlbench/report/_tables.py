"""HTML pieces of the report: sortable tables that fit a 1280 px page, and figure strips.

A table shows a few main columns with human headers. Every other column of a row (the CSVs keep
them all, under stable names) is folded: the row's last cell is a ``<details>`` toggle, and
while it is open the row below it (``tr.fold``, spanning the table) lists those columns as
header and value. A wide frame so grows downwards when a reader opens a row, never sideways.
Every value is escaped here, one by one; figures are base64 SVG data URIs.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from markupsafe import Markup, escape

from atlbench.record import Verdict
from atlbench.report import _plots as plots

# At most this many main columns: a section that names more folds the rest under each row.
MAX_COLUMNS = 12
NOTHING = Markup('<p class="muted">Nothing to show.</p>')
# Headers of columns many tables share; a section names its own in its ``Table``.
HEADERS: dict[str, str] = {
    "target": "Target", "budget": "Budget", "source": "Source", "strategy": "Strategy",
    "role": "Role", "seed": "Seed", "seeds": "Seeds", "trials": "Trials", "n_train": "Labels",
    "n_pairs": "Pairs", "n_seeds": "Seeds", "n_cells": "Cells", "n_sources": "Sources",
    "cells": "Cells", "cost_s": "Cost / cell (s)", "mean": "Accuracy",
    "baseline_mean": "Baseline accuracy", "gain_mean": "Gain (pts)", "p_adj": "p (adjusted)",
    "negative_transfer_gap": "NTG (pts)", "verdict": "Same algorithm, no source",
    "scratch_verdict": "Against scratch training", "edge_flags": "Edge flags",
    "estimator": "Estimator", "score": "Score", "truth": "Truth", "reason": "Note",
    "error": "Error", "train_samples_per_s": "Train samples/s",
    "time_to_best_s": "Time to best (s)", "peak_mem_mb": "Peak memory (MB)",
    "data_wait_s": "Data wait (s)", "compute_time_s": "Compute (s)", "weighted_tau": "Weighted τ",
    "rel_top1": "Rel. top-1", "indicative": "Indicative",
}  # fmt: skip
# verdicts get their colour here, the one place that words them
POSITIVE = (Verdict.POSITIVE_SIGNIFICANT, Verdict.ABOVE_SCRATCH_SIGNIFICANT)
NEGATIVE = (Verdict.NEGATIVE_SIGNIFICANT, Verdict.BELOW_SCRATCH_SIGNIFICANT)
LEANS_POSITIVE = (Verdict.POSITIVE_NOMINAL, Verdict.ABOVE_SCRATCH_NOMINAL)
LEANS_NEGATIVE = (Verdict.NEGATIVE_NOMINAL, Verdict.BELOW_SCRATCH_NOMINAL)


def header(column: str, headers: Mapping[str, str] | None = None) -> str:
    """The human header of ``column``: the section's own, the shared one, or the name."""
    if headers and column in headers:
        return headers[column]
    return HEADERS.get(column, column.replace("_", " "))


def fmt(value: Any, column: str) -> tuple[str, str]:
    """(display text, sort key) of a cell."""
    if value is None or value is pd.NA or value is pd.NaT:
        return "", ""
    if isinstance(value, float) and math.isnan(value):
        return "", ""
    if isinstance(value, bool | np.bool_):
        return ("yes" if value else "no"), str(int(value))
    if isinstance(value, float | np.floating):
        value = float(value)
        if column in ("gain_mean", "negative_transfer_gap"):
            return f"{value * 100:+.1f}", f"{value}"
        if column.endswith("_s") or column.endswith("_mb") or column.endswith("per_s"):
            return (f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"), f"{value}"
        if column in ("mean", "baseline_mean", "score", "truth", "prob_improvement", "mean_acc"):
            return f"{value:.3f}", f"{value}"
        return f"{value:.3g}", f"{value}"
    return str(value), str(value)


def cell_class(column: str, text: str, key: str) -> str:
    """Colour for verdicts and signed gains."""
    if column in ("verdict", "scratch_verdict"):
        if text in POSITIVE:
            return "pos"
        if text in NEGATIVE:
            return "neg"
        if text in LEANS_POSITIVE:
            return "lean-pos"
        if text in LEANS_NEGATIVE:
            return "lean-neg"
        return ""
    if column in ("gain_mean", "gain") and key:
        try:
            return "pos" if float(key) > 0 else "neg" if float(key) < 0 else ""
        except ValueError:
            return ""
    return ""


def _is_text(series: pd.Series) -> bool:
    return series.dtype == object or isinstance(series.dtype, pd.StringDtype)


def table_html(
    frame: pd.DataFrame | None,
    columns: Sequence[str],
    headers: Mapping[str, str] | None = None,
) -> Markup:
    """A sortable table of the main ``columns`` (at most :data:`MAX_COLUMNS`).

    The frame's other columns (but those starting with ``_``) fold under each row: the row's
    last cell opens a full-width row below it that lists them as header and value.
    """
    if frame is None or frame.empty:
        return NOTHING
    shown = [c for c in columns if c in frame.columns][:MAX_COLUMNS]
    rest = [c for c in frame.columns if c not in shown and not str(c).startswith("_")]
    text = {c: _is_text(frame[c]) for c in [*shown, *rest]}
    head = "".join(
        f'<th class="{"l" if text[c] else ""}">{html.escape(header(c, headers))}</th>'
        for c in shown
    )
    if rest:
        head += '<th class="l nosort">More</th>'
    rows = []
    for record in frame[[*shown, *rest]].to_dict("records"):
        cells = []
        for c in shown:
            value, key = fmt(record[c], c)
            cls = " ".join(filter(None, ["l" if text[c] else "", cell_class(c, value, key)]))
            cells.append(f'<td class="{cls}" data-v="{html.escape(key)}">{html.escape(value)}</td>')
        if rest:
            cells.append(
                f'<td class="l more"><details><summary>{len(rest)} more</summary></details></td>'
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
        if rest:
            rows.append(_fold(record, rest, headers, len(shown) + 1))
    body = "".join(rows)
    return Markup(
        f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def _fold(
    record: Mapping[Any, Any], columns: list[str], headers: Mapping[str, str] | None, span: int
) -> str:
    """The row under a row: its other columns as header and value, shown while it is open."""
    items = []
    for c in columns:
        value, key = fmt(record[c], c)
        cls = cell_class(c, value, key)
        attr = f' class="{cls}"' if cls else ""
        items.append(
            f"<div><dt>{html.escape(header(c, headers))}</dt>"
            f"<dd{attr}>{html.escape(value)}</dd></div>"
        )
    cell = f'<td class="l" colspan="{span}"><dl class="more">{"".join(items)}</dl></td>'
    return f'<tr class="fold">{cell}</tr>'


def figures_html(figures: Mapping[str, Any], alt: str | None = None, lead: str = "") -> Markup:
    """The figures side by side (``lead``, already-escaped HTML such as a table, first)."""
    if not figures and not lead:
        return Markup("")
    images = "".join(
        f'<img alt="{escape(alt if alt is not None else name)}" src="{plots.to_data_uri(fig)}">'
        for name, fig in figures.items()
    )
    return Markup(f'<div class="figs">{lead}{images}</div>')


def pts(value: float) -> str:
    """A proportion as signed percentage points, with a true minus sign."""
    return f"{value * 100:+.1f}".replace("-", "\u2212")


def interval_text(low: pd.Series, high: pd.Series, digits: int) -> list[str]:
    """``[low, high]`` per row, blank where there is no interval."""
    return [
        "" if pd.isna(lo) else f"[{lo:.{digits}f}, {hi:.{digits}f}]"
        for lo, hi in zip(low, high, strict=True)
    ]
