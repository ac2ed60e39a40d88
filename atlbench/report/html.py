"""The self-contained HTML report: protocol box, plain-words summary, tables, figures.

Everything user-supplied is escaped (jinja2 autoescape for the page, ``html.escape`` in tables);
figures are base64 data URIs, so the file opens offline and fetches nothing. Tables show the
columns a reader needs with human headers, narrow enough for a 1280 px page; every column is in
the linked CSVs (stable names) and, per table, behind an "all columns" fold.
"""

from __future__ import annotations

import html
import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from atlbench.report import plots
from atlbench.report.views import Views

SECTIONS = [
    ("summary", "Summary"),
    ("leaderboard", "Leaderboard"),
    ("negative-transfer", "Negative transfer"),
    ("failure-modes", "Failure modes"),
    ("efficiency", "Efficiency"),
    ("estimators", "Estimators"),
    ("cka", "CKA"),
    ("timing", "Timing"),
    ("failures", "Failures"),
    ("environment", "Environment"),
]
TITLES = {
    "target": "Target", "budget": "Budget", "rank": "#", "source": "Source",
    "strategy": "Strategy", "role": "Role", "labels": "Labels fit / val", "seeds": "Seeds",
    "trials": "Trials", "accuracy": "Accuracy [95% CI]", "gain": "Gain vs scratch [95% CI]",
    "scratch_verdict": "Against scratch training", "verdict": "Same algorithm, no source",
    "edge_flags": "Edge flags", "cost_s": "Cost / cell (s)", "n_pairs": "Pairs",
    "baseline": "Compared with", "mean": "Accuracy", "baseline_mean": "Baseline accuracy",
    "gain_mean": "Gain (pts)", "interval95": "95% CI (pts)", "p_adj": "p (adjusted)",
    "negative_transfer_gap": "NTG (pts)", "estimator": "Estimator", "weighted_tau": "Weighted τ",
    "tau_ci": "τ 95% CI", "p_value": "p (τ > 0)", "rel_top1": "Rel. top-1", "n_sources": "Sources",
    "indicative": "Indicative", "reason": "Note", "cells": "Cells",
    "median_cost_s": "Median cost (s)",
    "total_cost_s": "Total cost (s)", "train_samples_per_s": "Train samples/s",
    "time_to_best_s": "Time to best (s)", "peak_mem_mb": "Peak memory (MB)",
    "data_wait_s": "Data wait (s)", "compute_time_s": "Compute (s)",
    "prob_improvement": "P(improvement)", "wins": "Wins", "ties": "Ties", "losses": "Losses",
    "ci": "95% CI", "n_train": "Labels", "labels_saved": "Labels saved", "gain_per_cpu_hour":
    "Gain / CPU-hour", "gain_per_gpu_hour": "Gain / GPU-hour", "ruler": "Ruler", "mmd": "MMD²",
    "mmd_p": "p (MMD)", "frechet": "Fréchet", "gain_strategy": "Gain of", "error": "Error",
    "seed": "Seed", "what": "What", "value": "Value", "score": "Score", "truth": "Truth",
    "mode": "Failure mode", "statement": "What the data shows", "forgetting": "Forgetting",
    "forgetting_ci": "95% CI", "source_acc_before": "Source acc. before",
    "source_acc_after": "Source acc. after", "n_seeds": "Seeds", "n_cells": "Cells",
    "overfit_cells": "Overfit cells", "peaked_early": "Peaked early",
    "train_val_gap": "Train - val gap", "n_target_classes": "Target classes",
    "n_confident": "Confident", "n_shared": "Shared", "mapping": "Target class → source class",
    "seed_tau": "τ across seeds", "seed_pairs": "Seed pairs", "budget_tau": "τ across budgets",
    "budget_pairs": "Budget pairs",
}  # fmt: skip
POSITIVE = ("positive (significant)", "above scratch training (significant)")
NEGATIVE = ("negative (significant)", "below scratch training (significant)")


def _fmt(value: Any, column: str) -> tuple[str, str]:
    """(display text, sort key) of a cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", ""
    if isinstance(value, bool | np.bool_):
        return ("yes" if value else "no"), str(int(value))
    if isinstance(value, float | np.floating):
        if column in ("gain_mean", "negative_transfer_gap"):
            return f"{value * 100:+.1f}", f"{value}"
        if column.endswith("_s") or column.endswith("_mb") or column.endswith("per_s"):
            return (f"{value:,.0f}" if abs(value) >= 100 else f"{value:.2f}"), f"{value}"
        if column in ("mean", "baseline_mean", "score", "truth", "prob_improvement", "mean_acc"):
            return f"{value:.3f}", f"{value}"
        return f"{value:.3g}", f"{value}"
    return str(value), str(value)


def _cell_class(column: str, text: str, key: str) -> str:
    if column in ("verdict", "scratch_verdict"):
        if text in POSITIVE:
            return "pos"
        if text in NEGATIVE:
            return "neg"
        if text.endswith("(nominal)"):
            return "lean-pos" if text.startswith(("positive", "above")) else "lean-neg"
        return ""
    if column in ("gain_mean", "gain") and key:
        try:
            return "pos" if float(key) > 0 else "neg" if float(key) < 0 else ""
        except ValueError:
            return ""
    return ""


def table_html(frame: pd.DataFrame | None, columns: list[str], full: bool = True) -> Markup:
    """A sortable table of ``columns`` with human headers; every value is escaped. With
    ``full``, every other column of ``frame`` is one click away, folded below it."""
    if frame is None or frame.empty:
        return Markup('<p class="muted">Nothing to show.</p>')
    shown = [c for c in columns if c in frame.columns]
    out = Markup(_table(frame, shown))  # values inside are escaped one by one
    rest = [c for c in frame.columns if c not in shown and not c.startswith("_")]
    if full and rest:
        out += Markup(
            f"<details><summary>All {len(frame.columns)} columns</summary>"
            f'<div class="scroll">{_table(frame, list(frame.columns))}</div></details>'
        )
    return Markup(out)


def _table(frame: pd.DataFrame, columns: list[str]) -> str:
    head = "".join(
        f'<th class="{"l" if frame[c].dtype == object else ""}">'
        f"{html.escape(TITLES.get(c, c.replace('_', ' ')))}</th>"
        for c in columns
    )
    rows = []
    for record in frame[columns].to_dict("records"):
        cells = []
        for c in columns:
            text, key = _fmt(record[c], c)
            cls = " ".join(
                filter(None, ["l" if frame[c].dtype == object else "", _cell_class(c, text, key)])
            )
            cells.append(f'<td class="{cls}" data-v="{html.escape(key)}">{html.escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    body = "".join(rows)
    return f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _pts(value: float) -> str:
    return f"{value * 100:+.1f}".replace("-", "\u2212")


def _with_ci(value: float, low: float, high: float, points: bool) -> str:
    if value != value:
        return ""
    if points:
        body = _pts(value)
        return body if low != low else f"{body} [{_pts(low)}, {_pts(high)}]"
    return f"{value:.3f}" if low != low else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def leaderboard_view(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with the compact, human columns of the report."""
    out = board.copy()
    out["labels"] = [
        "" if n != n else f"{int(f)} / {int(v)}" if f == f and v == v else f"{int(n)}"
        for n, f, v in zip(out["n_train"], out["n_fit"], out["n_val"], strict=True)
    ]
    out["accuracy"] = [
        _with_ci(m, lo, hi, False)
        for m, lo, hi in zip(out["mean_acc"], out["ci_low"], out["ci_high"], strict=True)
    ]
    out["gain"] = [
        _with_ci(g, lo, hi, True)
        for g, lo, hi in zip(
            out["gain_vs_scratch"], out["gain_ci_low"], out["gain_ci_high"], strict=True
        )
    ]
    return out


def comparison_view(gains: pd.DataFrame) -> pd.DataFrame:
    out = gains.copy()
    out["baseline"] = [
        f"{s} / {t}" if isinstance(s, str) else ""
        for s, t in zip(out["baseline_source"], out["baseline_strategy"], strict=True)
    ]
    out["interval95"] = [
        "" if lo != lo else f"[{_pts(lo)}, {_pts(hi)}]"
        for lo, hi in zip(out["gain_ci_low"], out["gain_ci_high"], strict=True)
    ]
    return out


# -- plain words ----------------------------------------------------------------------------------


def _recipe(row: Any) -> str:
    return f"{row.source} with {str(row.strategy).replace('_', ' ')}"


def _best_line(target: str, budget: str, grp: pd.DataFrame) -> str:
    """One sentence per (target, budget): the highest mean, and how it compares with scratch."""
    top = grp.iloc[0]
    where = f"On {target} ({budget})"
    if top["role"] == "baseline":
        return (
            f"{where}, training from scratch has the highest mean ({top['mean_acc']:.3f}); no "
            "pre-trained recipe is significantly above it."
            if not grp["scratch_verdict"].isin(["above scratch training (significant)"]).any()
            else f"{where}, training from scratch has the highest mean ({top['mean_acc']:.3f})."
        )
    recipe = f"{top['source']} with {str(top['strategy']).replace('_', ' ')}"
    line = f"{where}, the highest mean is {recipe}: {top['mean_acc']:.3f}"
    gain = top["gain_vs_scratch"]
    if isinstance(gain, float) and gain == gain:
        line += f", {_pts(gain)} points against scratch training"
        if top["gain_ci_low"] == top["gain_ci_low"]:
            line += f" [{_pts(top['gain_ci_low'])}, {_pts(top['gain_ci_high'])}]"
        line += f" ({top['scratch_verdict']})"
    return line + "."


def headlines(views: Views) -> list[str]:
    """Findings in plain words, each stated only as strongly as the data supports."""
    lines = []
    for (target, budget), grp in views.leaderboard.groupby(["target", "budget"], sort=False):
        lines.append(_best_line(str(target), str(budget), grp))
    corr = views.protocol["correction"]
    same, scratch = views.gains, views.vs_scratch
    if not same.empty:
        for row in same[same["verdict"] == "negative (significant)"].itertuples():
            lines.append(
                f"Negative transfer: {_recipe(row)} on {row.target} ({row.budget}) is "
                f"{abs(row.gain_mean) * 100:.1f} points below the same algorithm without the "
                f"source ({row.baseline_source}), significant after {corr} correction."
            )
        for verdict, words in (("positive (significant)", "helps significantly"),
                               ("positive (nominal)",
                                "helps nominally (CI above zero, not after correction)"),
                               ("equivalent", "is equivalent within the margin")):  # fmt: skip
            n = int((same["verdict"] == verdict).sum())
            if n:
                lines.append(
                    f"The source {words} in {n} of {len(same)} recipes, against the same "
                    "algorithm without it."
                )
    if not scratch.empty:
        frozen = scratch[~scratch["trains_encoder"].astype(bool)]
        below = frozen[frozen["verdict"] == "below scratch training (significant)"]
        for row in below.sort_values("gain_mean").head(3).itertuples():
            lines.append(
                f"Below scratch training: {_recipe(row)} on {row.target} ({row.budget}) is "
                f"{abs(row.gain_mean) * 100:.1f} points below a network trained from scratch; a "
                "frozen recipe, so this compares two algorithms and is not negative transfer."
            )
    gap = views.domain_gap
    gap = gap[(gap["ruler"] == "reference")].dropna(subset=["gain"]) if len(gap) else gap
    for target, grp in gap.groupby("target", sort=False) if len(gap) else []:
        if len(grp) < 2:
            continue
        near, far = grp.loc[grp["mmd"].idxmin()], grp.loc[grp["mmd"].idxmax()]
        lines.append(
            f"On {target}, on the reference ruler, the closest source ({near['source']}, MMD² "
            f"{near['mmd']:.3g}) gains {_pts(near['gain'])} points with {near['gain_strategy']}, "
            f"the most distant ({far['source']}, MMD² {far['mmd']:.3g}) {_pts(far['gain'])}."
        )
    return lines


def protocol_lines(views: Views) -> list[str]:
    p = views.protocol
    imported = views.suite.get("imported")
    if imported:  # the measurements are the source's; atlbench ran no protocol of its own
        citation = " ".join(imported.get("citation") or [])
        return [
            f"Imported with atlbench import from {imported.get('origin', 'a table')}: how each "
            "accuracy was measured is the source's protocol, not atlbench's."
            + (f" {citation}" if citation else ""),
            f"Label budgets: {', '.join(p['budgets']) or 'none'}; seeds: {len(p['seeds'])}.",
            f"Estimators are judged against {p['truth']}, at each budget.",
        ]
    trials = ", ".join(f"{k} {v}" for k, v in sorted(p["trials"].items())) or "none"
    validation = (
        "budgeted: selection inside the label budget (hold-out for trained recipes, k-fold CV "
        "for frozen ones), then a retrain on all of it"
        if p["validation"] == "budgeted"
        else "full: selection on the target's whole validation split (optimistic)"
    )
    return [
        f"Label budgets: {', '.join(p['budgets']) or 'none'}; seeds: {len(p['seeds'])}.",
        f"Validation: {validation}.",
        f"Tuning trials per cell: {trials} ({p['schedule'].replace('_', ' ')}).",
        f"Intervals cover {p['interval'] or 'seeds'}; p-values are {p['correction']}-corrected "
        "per table"
        + (f"; equivalence margin ±{p['margin'] * 100:g} points." if p["margin"] else "."),
        f"Estimators are judged against {p['truth']}, at each budget, on the labels of that "
        "budget.",
    ]


# -- the page -------------------------------------------------------------------------------------


def _figs(figures: dict[str, Any], prefix: str) -> list[tuple[str, str]]:
    return [(n, plots.to_data_uri(f)) for n, f in figures.items() if n.startswith(prefix)]


def _optional(frame: pd.DataFrame | None, columns: list[str]) -> Markup | None:
    return table_html(frame, columns) if frame is not None and len(frame) else None


LEADERBOARD = ["budget", "rank", "source", "strategy", "labels", "trials", "accuracy", "gain",
               "scratch_verdict", "verdict", "cost_s"]  # fmt: skip
COMPARISON = ["target", "budget", "source", "strategy", "baseline", "n_pairs", "gain_mean",
              "interval95", "p_adj", "verdict"]  # fmt: skip
AGREEMENT = ["target", "budget", "estimator", "n_sources", "weighted_tau", "tau_ci", "p_value",
             "rel_top1", "indicative", "reason"]  # fmt: skip
IMPROVEMENT = ["source", "strategy", "budget", "n_pairs", "wins", "ties", "losses",
               "prob_improvement", "ci"]  # fmt: skip
PER_HOUR = ["target", "budget", "source", "strategy", "gain_mean", "cost_s", "gain_per_cpu_hour",
            "gain_per_gpu_hour", "reason"]  # fmt: skip
LABELS_SAVED = ["target", "budget", "source", "strategy", "n_train", "labels_saved", "reason"]
DOMAIN_GAP = ["target", "source", "ruler", "mmd", "mmd_p", "frechet", "gain_strategy", "gain"]
FORGETTING = ["target", "budget", "source", "strategy", "n_seeds", "source_acc_before",
              "source_acc_after", "forgetting", "forgetting_ci"]  # fmt: skip
OVERFITTING = ["target", "budget", "source", "strategy", "n_cells", "train_val_gap",
               "peaked_early", "overfit_cells"]  # fmt: skip
LABEL_MAPPING = ["target", "source", "n_target_classes", "n_confident", "n_shared", "mapping"]
STABILITY = ["target", "estimator", "n_sources", "seed_tau", "seed_pairs", "budget_tau",
             "budget_pairs", "reason"]  # fmt: skip


def _interval_text(low: pd.Series, high: pd.Series, digits: int) -> list[str]:
    return [
        "" if lo != lo else f"[{lo:.{digits}f}, {hi:.{digits}f}]"
        for lo, hi in zip(low, high, strict=True)
    ]


def _tables(views: Views) -> dict[str, Any]:
    board = leaderboard_view(views.leaderboard)
    agreement = views.agreement
    if agreement is not None:
        agreement = agreement.assign(
            tau_ci=_interval_text(agreement["tau_ci_low"], agreement["tau_ci_high"], 2)
        )
    improve = views.p_improvement
    if improve is not None:
        improve = improve.assign(ci=_interval_text(improve["ci_low"], improve["ci_high"], 2))
    same, scratch = views.gains, views.vs_scratch
    forgetting = views.forgetting
    if len(forgetting):
        forgetting = forgetting.assign(
            forgetting_ci=_interval_text(
                forgetting["forgetting_ci_low"], forgetting["forgetting_ci_high"], 3
            )
        )
    return {
        "failure_modes": _optional(views.failure_modes, ["source", "target", "mode", "statement"]),
        "forgetting": _optional(forgetting, FORGETTING),
        "overfitting": _optional(views.overfitting, OVERFITTING),
        "label_mapping": _optional(views.label_mapping, LABEL_MAPPING),
        "leaderboards": [
            (t, table_html(g, LEADERBOARD)) for t, g in board.groupby("target", sort=False)
        ],
        "same_table": _optional(comparison_view(same) if len(same) else None, COMPARISON),
        "scratch_table": _optional(comparison_view(scratch) if len(scratch) else None, COMPARISON),
        "p_improve": _optional(improve, IMPROVEMENT),
        "labels_saved": _optional(views.labels_saved, LABELS_SAVED),
        "gain_hour": _optional(views.gain_per_hour, PER_HOUR),
        "domain_gap_table": _optional(views.domain_gap, DOMAIN_GAP),
        "estimator_agreement": _optional(agreement, AGREEMENT),
        "stability": _optional(views.stability, STABILITY),
        "timing_summary": table_html(
            views.timing_summary, list(views.timing_summary.columns), False
        ),
        "timing_table": table_html(views.timing, list(views.timing.columns), False),
        "failures": table_html(views.failures, list(views.failures.columns), False)
        if len(views.failures)
        else None,
        "environment": table_html(views.environment, ["what", "value"], False),
    }


def _figures(views: Views) -> dict[str, Any]:
    figures = views.figures()
    return {
        "heatmaps": _figs(figures, "gain heatmap"),
        "curves": _figs(figures, "learning curve"),
        "cost_figs": _figs(figures, "accuracy vs cost"),
        "domain_gap_figs": _figs(figures, "domain gap"),
        "estimator_figs": _figs(figures, "estimator"),
        "cka_figs": _figs(figures, "cka"),
        "change_curve": _figs(figures, "cka: what fine-tuning changed"),
    }


def render_report(views: Views, suite_name: str, description: str = "", csv_dir: str = "") -> str:
    env = Environment(
        loader=PackageLoader("atlbench.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    notes = []
    if len(views.failures):
        notes.append(
            f"{len(views.failures)} cells failed; see Failures. Their results are missing, "
            "not zero."
        )
    done = int((views.records.get("status") == "done").sum()) if not views.records.empty else 0
    return env.get_template("report.html.j2").render(
        suite_name=suite_name,
        description=description,
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        n_done=done,
        n_failed=len(views.failures),
        sections=SECTIONS,
        protocol=protocol_lines(views),
        next_steps=views.next_steps,
        headlines=headlines(views),
        notes=notes,
        csv_dir=csv_dir,
        has_estimates=not views.estimates.empty,
        omitted=views.omitted,
        baseline_lines=views.baseline_comparison,
        **_tables(views),
        **_figures(views),
    )


def write_report(
    views: Views,
    path: Path,
    suite_name: str,
    description: str = "",
    results_dir: Path | None = None,
) -> Path:
    from atlbench.cache import atomic_write_text

    csv_dir = ""
    if results_dir is not None:
        csv_dir = os.path.relpath(Path(results_dir).resolve(), Path(path).resolve().parent)
    atomic_write_text(path, render_report(views, suite_name, description, csv_dir))
    return path
