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
        if "acc" in column or column in (
            "mean",
            "std",
            "ci_low",
            "ci_high",
            "mean_macro_f1",
            "score",
        ):
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
        '<div class="scroll"><table class="sortable">'
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table></div>"
    )


def _pts(value: float) -> str:
    return f"{value * 100:+.1f}".replace("-", "\u2212")


def _recipe(row: Any) -> str:
    return f"{row['source']} with {row['strategy'].replace('_', ' ')}"


def _best_line(target: str, budget: str, grp: pd.DataFrame) -> str:
    """One sentence per (target, budget): the winner, its margin over scratch, and how sure."""
    top = grp.iloc[0]
    where = f"On {target} (budget {budget})"
    if top["strategy"] == "scratch":
        return (
            f"{where}, training from scratch is best ({top['mean_acc']:.3f} test accuracy): "
            "no pre-trained source beat it."
        )
    line = f"{where}, the best recipe is {_recipe(top)}: {top['mean_acc']:.3f} test accuracy"
    tied = grp.iloc[1:][np.isclose(grp["mean_acc"].iloc[1:], top["mean_acc"])]
    if len(tied):
        line += ", tied with " + " and ".join(_recipe(r) for _, r in tied.iterrows())
    gain = top["gain_vs_scratch"]
    if isinstance(gain, float) and not math.isnan(gain):
        more = "above" if gain >= 0 else "below"
        line += f", {abs(gain) * 100:.1f} points {more} training from scratch"
        lo, hi = top["gain_ci_low"], top["gain_ci_high"]
        verdict = str(top.get("verdict", ""))
        if not math.isnan(lo):
            sure = {
                "significant": "significant after Holm correction",
                "nominal": "the CI excludes zero, but not after Holm correction for all "
                "comparisons",
                "inconclusive": "the CI includes zero: not distinguishable with this many seeds",
            }.get(verdict.partition("(")[2].rstrip(")"), verdict)
            line += f" (95% CI {_pts(lo)} to {_pts(hi)} points; {sure})"
    return line + "."


def _recipe_of(row: Any) -> str:
    return f"{row.source} with {str(row.strategy).replace('_', ' ')}"


def headlines(views: Views) -> list[str]:
    """Plain-words findings: the best recipe per target, where transfer hurt or did not help."""
    lines = []
    board = views.leaderboard
    for (target, budget), grp in board.groupby(["target", "budget"], sort=False):
        lines.append(_best_line(str(target), str(budget), grp))
    gains = views.gains
    if not gains.empty:
        for row in gains[gains["verdict"] == "negative (significant)"].itertuples():
            lines.append(
                f"Transfer hurt: {_recipe_of(row)} on {row.target} (budget {row.budget}) is "
                f"{abs(row.gain_mean) * 100:.1f} points below training from scratch "
                "(significant after Holm correction)."
            )
        nominal_hurt = gains[gains["verdict"] == "negative (nominal)"].sort_values("gain_mean")
        if len(nominal_hurt):
            worst = "; ".join(
                f"{_recipe_of(r)} on {r.target} ({r.budget}) {r.gain_mean * 100:+.1f}"
                for r in nominal_hurt.head(3).itertuples()
            )
            lines.append(
                f"{len(nominal_hurt)} more transfer results fall below scratch with a 95% CI below "
                f"zero, not significant after Holm correction; the worst: {worst} points."
            )
        n = len(gains)
        wins = int((gains["verdict"] == "positive (significant)").sum())
        nominal = int((gains["verdict"] == "positive (nominal)").sum())
        unsure = int(gains["verdict"].str.endswith("(inconclusive)").sum())
        if wins:
            lines.append(f"{wins} of {n} transfer results significantly beat scratch training.")
        if nominal:
            lines.append(
                f"{nominal} of {n} transfer results beat scratch with a 95% CI above zero, but do "
                "not survive Holm correction over all comparisons: confirm them with more seeds."
            )
        if unsure:
            lines.append(
                f"{unsure} of {n} transfer results cannot be told apart from training from scratch "
                "with this many seeds: the 95% CI of their gain includes zero."
            )
    gap = views.domain_gap.dropna(subset=["gain"])
    for target, grp in gap.groupby("target", sort=False):
        if len(grp) < 2:
            continue
        near, far = grp.loc[grp["mmd"].idxmin()], grp.loc[grp["mmd"].idxmax()]
        lines.append(
            f"On {target}, the source pre-trained on the closest data ({near['source']}, "
            f"MMD\u00b2 {near['mmd']:.3g}) is at {_pts(near['gain'])} points against scratch "
            "with its best strategy (averaged over budgets); the most distant "
            f"({far['source']}, MMD\u00b2 {far['mmd']:.3g}) at {_pts(far['gain'])}."
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
    curves = (
        [c for c in (plots.learning_curves(summary, t) for t in summary["target"].unique()) if c]
        if not summary.empty
        else []
    )
    notes = []
    if not views.gains.empty and (views.gains["n_pairs"] < 5).any():
        notes.append(
            "Some comparisons rest on fewer than 5 paired seeds: their confidence intervals are "
            "wide and verdicts often inconclusive. At least 5 seeds are recommended."
        )
    if views.failures is not None and len(views.failures):
        notes.append(
            f"{len(views.failures)} cells failed; see Failures. "
            "Their results are missing, not zero."
        )
    negative = views.gains
    neg_cols = {
        "target": "target",
        "budget": "budget",
        "source": "source",
        "strategy": "strategy",
        "n_pairs": "pairs",
        "mean": "acc",
        "scratch_mean": "scratch acc",
        "gain_mean": "gain (pts)",
        "gain_ci_low": "CI low",
        "gain_ci_high": "CI high",
        "p_holm": "p (Holm)",
        "negative_transfer_gap": "NTG (pts)",
        "verdict": "verdict",
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
    gap = views.domain_gap
    gap_cols = {
        "target": "target",
        "source": "source",
        "mmd": "MMD²",
        "mmd_p": "p (MMD)",
        "frechet": "Fréchet",
        "best_strategy": "best strategy",
        "gain": "gain (pts)",
    }
    return template.render(
        domain_gap_table=table_html(gap, gap_cols) if len(gap) else None,
        domain_gap_figs=[f for f in (plots.domain_gap_plot(gap, "mmd"),) if f] if len(gap) else [],
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
        labels_saved=table_html(views.labels_saved)
        if views.labels_saved is not None and len(views.labels_saved)
        else None,
        gain_hour=table_html(views.gain_per_hour)
        if views.gain_per_hour is not None and len(views.gain_per_hour)
        else None,
        pareto=pareto,
        estimator_scores=table_html(views.estimator_table) if not views.estimates.empty else None,
        estimator_agreement=table_html(views.agreement) if views.agreement is not None else None,
        estimator_figs=estimator_figs,
        cka_figs=views.cka_figures(),
        timing_table=table_html(views.timing),
        failures=table_html(views.failures)
        if views.failures is not None and len(views.failures)
        else None,
        environment=table_html(views.environment),
    )


def write_report(views: Views, path: Path, suite_name: str, description: str = "") -> Path:
    from atlbench.cache import atomic_write_text

    atomic_write_text(path, render_report(views, suite_name, description))
    return path
