"""The leaderboard: per target and label budget, every recipe ranked by mean test accuracy.

``leaderboard.csv`` has the stable columns of :data:`atlbench.report._leaderboard.
LEADERBOARD_COLUMNS`; the page shows accuracy and gain with their intervals as text, one table
per target, and folds the rest under each row.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from atlbench.analysis import summarize
from atlbench.record import Verdict
from atlbench.registry import register_report_section
from atlbench.report import _plots as plots
from atlbench.report._leaderboard import leaderboard
from atlbench.report._study import StudyData
from atlbench.report._tables import pts
from atlbench.report.sections._base import Section, Table


def _with_ci(value: float, low: float, high: float, points: bool) -> str:
    if pd.isna(value):
        return ""
    if points:
        body = pts(value)
        return body if pd.isna(low) else f"{body} [{pts(low)}, {pts(high)}]"
    return f"{value:.3f}" if pd.isna(low) else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def leaderboard_view(board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with the compact, human columns of the report."""
    out = board.copy()
    out["labels"] = [
        "" if pd.isna(n) else f"{int(f)} / {int(v)}" if pd.notna(f) and pd.notna(v) else f"{int(n)}"
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


def _best_line(target: str, budget: str, grp: pd.DataFrame) -> str:
    """One sentence per (target, budget): the highest mean, and how it compares with scratch."""
    top = grp.iloc[0]
    where = f"On {target} ({budget})"
    if top["role"] == "baseline":
        return (
            f"{where}, training from scratch has the highest mean ({top['mean_acc']:.3f}); no "
            "pre-trained recipe is significantly above it."
            if not grp["scratch_verdict"].isin([Verdict.ABOVE_SCRATCH_SIGNIFICANT]).any()
            else f"{where}, training from scratch has the highest mean ({top['mean_acc']:.3f})."
        )
    recipe = f"{top['source']} with {str(top['strategy']).replace('_', ' ')}"
    line = f"{where}, the highest mean is {recipe}: {top['mean_acc']:.3f}"
    gain = top["gain_vs_scratch"]
    if isinstance(gain, float) and gain == gain:
        line += f", {pts(gain)} points against scratch training"
        if pd.notna(top["gain_ci_low"]):
            line += f" [{pts(top['gain_ci_low'])}, {pts(top['gain_ci_high'])}]"
        line += f" ({top['scratch_verdict']})"
    return line + "."


@register_report_section("leaderboard", order=20)
class Leaderboard(Section):
    title = "Leaderboard"
    intro = (
        "<p>Per target and label budget, ranked by mean test accuracy over seeds. <i>Labels fit "
        "/ val</i>: of the budget, how many labels fitted and how many validated during "
        "selection (k-fold CV uses every label for both). <i>Against scratch training</i>: "
        "paired gain over the same architecture trained from scratch on the same labels (same "
        "seed) with the same number of trials. <i>Same algorithm, no source</i>: the verdict "
        "against the same recipe on a randomly initialised encoder (frozen recipes) or trained "
        'from scratch (recipes that train the encoder); only this comparison can say "negative '
        'transfer" (Wang et al., CVPR 2019). Intervals are 95% and cover seeds and test '
        "examples.</p>"
    )
    csv = "leaderboard"
    csv_always = True
    table = Table(
        {
            "budget": "Budget",
            "rank": "#",
            "source": "Source",
            "strategy": "Strategy",
            "labels": "Labels fit / val",
            "trials": "Trials",
            "accuracy": "Accuracy [95% CI]",
            "gain": "Gain vs scratch [95% CI]",
            "scratch_verdict": "Against scratch training",
            "verdict": "Same algorithm, no source",
            "cost_s": "Cost / cell (s)",
        },
        group_by="target",
    )

    def data(self, views: StudyData) -> pd.DataFrame:
        empty = pd.DataFrame()
        if not views.has_results:
            return leaderboard(empty, empty, empty, empty, empty)
        f1 = summarize(views.shown_records, "test_macro_f1")
        return leaderboard(views.shown_records, views.summary, f1, views.vs_scratch, views.gains)

    def shown(self, views: StudyData) -> pd.DataFrame:
        return leaderboard_view(views.table(self.name))

    def words(self, views: StudyData) -> list[str]:
        board = views.table(self.name)
        return [
            _best_line(str(target), str(budget), grp)
            for (target, budget), grp in board.groupby(["target", "budget"], sort=False)
        ]


@register_report_section("gain-heatmaps", order=10)
class GainHeatmaps(Section):
    parent = "leaderboard"
    title = "Gain heatmaps"
    intro = (
        '<p class="muted">Same-algorithm gain in points per budget; ** significant after '
        "correction, * nominal (CI excludes zero, correction not passed).</p>"
    )

    def figures(self, views: StudyData) -> dict[str, Any]:
        return {f"gain heatmap: {b}": fig for b, fig in plots.gain_heatmaps(views.gains).items()}
