"""The self-contained HTML report: plain-words summary, tables, figures, environment.

Everything user-supplied is escaped (jinja2 autoescape for the page, ``html.escape`` in tables);
figures are base64 data URIs, so the file opens offline and fetches nothing.
"""

from __future__ import annotations

import html
import math
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
    ("efficiency", "Efficiency"),
    ("estimators", "Estimators"),
    ("cka", "CKA"),
    ("timing", "Timing"),
    ("failures", "Failures"),
    ("environment", "Environment"),
]


def _fmt(value: Any, column: str) -> tuple[str, str]:
    """(display text, sort key) of a cell."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "", ""
    if isinstance(value, float | np.floating):
        if "gain" in column or column in ("ntg", "negative_transfer_gap"):
            return f"{value * 100:+.1f}", f"{value}"
        if "acc" in column or column in ("mean", "std", "ci_low", "ci_high", "mean_macro_f1", "score"):
            return f"{value:.3f}", f"{value}"
        if column.endswith("_s"):
            return f"{value:.2f}", f"{value}"
        return f"{value:.4g}", f"{value}"
    return str(value), str(value)


def table_html(frame: pd.DataFrame, columns: dict[str, str] | None = None) -> Markup:
    """A sortable HTML table; every value is escaped."""
    if frame is None or frame.empty:
        return Markup('<p class="muted">Nothing to show.</p>')
    columns = columns or {c: c for c in frame.columns}
    head = "".join(
        f'<th class="{"l" if frame[c].dtype == object else ""}">{html.escape(title)}</th>'
        for c, title in columns.items()
    )
    rows = []
    for record in frame[list(columns)].to_dict("records"):
        cells = []
        for c in columns:
            text, key = _fmt(record[c], c)
            cls = "l" if frame[c].dtype == object else ""
            if "gain" in c and key:
                cls += " pos" if float(key) > 0 else " neg" if float(key) < 0 else ""
            if c == "verdict" and isinstance(record[c], str):
                cls += " neg" if record[c].startswith("negative (sig") else ""
                cls += " pos" if record[c].startswith("positive (sig") else ""
            cells.append(f'<td class="{cls}" data-v="{html.escape(key)}">{html.escape(text)}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return Markup(
        f'<table class="sortable"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
    )


def headlines(views: Views) -> list[str]:
    """Plain-words findings: the best recipe per target, where transfer hurt or did not help."""
    lines = []
    board = views.leaderboard
    for (target, budget), grp in board.groupby(["target", "budget"], sort=False):
        top = grp.iloc[0]
        gain = top["gain_vs_scratch"]
        what = f"Best for {target} at {budget}: {top['source']} + {top['strategy']}, {top['mean_acc']:.3f} accuracy"
        if isinstance(gain, float) and not math.isnan(gain):
            lo, hi = top["gain_ci_low"], top["gain_ci_high"]
            ci = "" if math.isnan(lo) else f" (95% CI {lo * 100:+.1f} to {hi * 100:+.1f})"
            what += f", {gain * 100:+.1f} points over scratch{ci}"
        elif top["strategy"] == "scratch":
            what += " (training from scratch won)"
        lines.append(what + ".")
    gains = views.gains
    if not gains.empty:
        sig_neg = gains[gains["verdict"] == "negative (significant)"]
        for row in sig_neg.itertuples():
            lines.append(
                f"Negative transfer: {row.source} + {row.strategy} on {row.target} at {row.budget} is "
                f"{abs(row.gain_mean) * 100:.1f} points worse than scratch (significant)."
            )
        inconclusive = gains[gains["verdict"].isin(["negative (inconclusive)", "positive (inconclusive)"])]
        if len(inconclusive):
            lines.append(
                f"{len(inconclusive)} of {len(gains)} transfer results are not distinguishable from "
                "scratch at this number of seeds (CI of the gain straddles zero)."
            )
    return lines


def render_report(views: Views, suite_name: str, description: str = "") -> str:
    env = Environment(
        loader=PackageLoader("atlbench.report", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
    )
    template = env.get_template("report.html.j2")
    board = views.leaderboard
    leaderboards = [
        (target, table_html(grp.drop(columns=["target"])))
        for target, grp in board.groupby("target", sort=False)
    ]
    summary = views.summary
    curves = [c for c in (plots.learning_curves(summary, t) for t in summary["target"].unique()) if c] if not summary.empty else []
    notes = []
    if not views.gains.empty and (views.gains["n_pairs"] < 5).any():
        notes.append(
            "Some comparisons rest on fewer than 5 paired seeds: their confidence intervals are wide "
            "and verdicts often inconclusive. At least 5 seeds are recommended."
        )
    if views.failures is not None and len(views.failures):
        notes.append(f"{len(views.failures)} cells failed; see Failures. Their results are missing, not zero.")
    negative = views.gains
    neg_cols = {
        "target": "target", "budget": "budget", "source": "source", "strategy": "strategy",
        "n_pairs": "pairs", "mean": "acc", "scratch_mean": "scratch acc", "gain_mean": "gain (pts)",
        "gain_ci_low": "CI low", "gain_ci_high": "CI high", "p_holm": "p (Holm)",
        "negative_transfer_gap": "NTG (pts)", "verdict": "verdict",
    }
    estimator_figs = []
    if not views.estimates.empty and not views.truth.empty:
        for name in views.estimates["estimator"].unique():
            fig = plots.estimator_scatter(views.estimates, views.truth, name)
            if fig:
                estimator_figs.append(fig)
    pareto = [
        f
        for f in (
            plots.pareto_plot(board, "train_time_s", "train time (s)"),
            plots.pareto_plot(board, "trainable_params", "trainable parameters"),
        )
        if f
    ]
    return template.render(
        suite_name=suite_name,
        description=description,
        generated=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        n_done=int((views.records.get("status") == "done").sum()) if not views.records.empty else 0,
        n_failed=0 if views.failures is None else len(views.failures),
        sections=SECTIONS,
        headlines=headlines(views),
        notes=notes,
        leaderboards=leaderboards,
        heatmap=plots.gain_heatmap(views.gains),
        negative_table=table_html(negative, {k: v for k, v in neg_cols.items() if k in negative}),
        p_improve=table_html(views.p_improvement) if views.p_improvement is not None else None,
        curves=curves,
        labels_saved=table_html(views.labels_saved) if views.labels_saved is not None and len(views.labels_saved) else None,
        gain_hour=table_html(views.gain_per_hour) if views.gain_per_hour is not None and len(views.gain_per_hour) else None,
        pareto=pareto,
        estimator_scores=table_html(views.estimator_table) if not views.estimates.empty else None,
        estimator_agreement=table_html(views.agreement) if views.agreement is not None else None,
        estimator_figs=estimator_figs,
        cka_figs=views.cka_figures(),
        timing_table=table_html(views.timing),
        failures=table_html(views.failures) if views.failures is not None and len(views.failures) else None,
        environment=table_html(views.environment),
    )


def write_report(views: Views, path: Path, suite_name: str, description: str = "") -> Path:
    from atlbench.cache import atomic_write_text

    atomic_write_text(path, render_report(views, suite_name, description))
    return path
