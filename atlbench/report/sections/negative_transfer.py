"""Negative transfer: each recipe against the same algorithm without the source (Wang et al.
2019) and against scratch training, and the probability that transfer improves on the former.

``negative_transfer.csv`` holds both comparisons, one row each per transfer recipe.
"""

from __future__ import annotations

import pandas as pd

from atlbench.analysis import probability_of_improvement
from atlbench.record import Verdict
from atlbench.registry import register_report_section
from atlbench.report._study import COMPARISON_COLUMNS, StudyData
from atlbench.report._tables import interval_text, pts
from atlbench.report.sections._base import Section, Table, rows_of

NEGATIVE_TRANSFER_COLUMNS = COMPARISON_COLUMNS
COMPARISON = Table(
    {
        "target": "Target",
        "budget": "Budget",
        "source": "Source",
        "strategy": "Strategy",
        "baseline": "Compared with",
        "n_pairs": "Pairs",
        "gain_mean": "Gain (pts)",
        "interval95": "95% CI (pts)",
        "p_adj": "p (adjusted)",
        "verdict": "Verdict",
        "stop": "Seeds",
    }
)
NO_COMPARISONS = '<p class="muted">No comparisons.</p>'


def comparison_view(gains: pd.DataFrame) -> pd.DataFrame:
    """A comparison with its baseline and interval as text."""
    out = gains.copy()
    out["baseline"] = [
        f"{s} / {t}" if isinstance(s, str) else ""
        for s, t in zip(out["baseline_source"], out["baseline_strategy"], strict=True)
    ]
    out["interval95"] = [
        "" if pd.isna(lo) else f"[{pts(lo)}, {pts(hi)}]"
        for lo, hi in zip(out["gain_ci_low"], out["gain_ci_high"], strict=True)
    ]
    return out


def _recipe(row: object) -> str:
    return f"{row.source} with {str(row.strategy).replace('_', ' ')}"  # type: ignore[attr-defined]


@register_report_section("negative-transfer", order=30)
class NegativeTransfer(Section):
    title = "Negative transfer"
    requires = ("trains_encoder", "n_train")  # pairing by role, labels saved
    intro = (
        "<p>Verdicts: <b>significant</b> when the 95% CI excludes zero and the corrected p-value "
        "is below 0.05; <b>nominal</b> when the CI excludes zero but the comparison does not "
        "survive the correction over the table (a lead to confirm with more seeds); <b>not "
        "significant</b> otherwise (no sign is given); <b>equivalent</b> only from two "
        "one-sided tests against the suite's equivalence margin; <b>undetermined</b> when fewer "
        "than 5 seeds agree exactly (no spread to test). With a seed schedule, seeds were added "
        "only to open comparisons and the p-values are sequential (alpha spent over the looks, "
        "valid whatever stopped a comparison); <b>Seeds</b> says how many each used and why it "
        "stopped. A verdict that a re-run with other float rounding (another CPU, a GPU) would "
        "cross about 5% of the time or more is flagged <i>near threshold</i> in its note; "
        "<i>threshold_distance</i> in the CSV says how far, in standard errors, it sits from the "
        "line that decides it. On the same kind of CPU with the same package versions every "
        "result reproduces bit for bit, whatever the number of cores or jobs. The "
        "negative-transfer gap (NTG, Wang et al.) is the transfer model's test error minus the "
        "baseline's; positive means transfer hurt.</p>"
    )
    csv = "negative_transfer"
    csv_always = True

    def data(self, views: StudyData) -> pd.DataFrame:
        tables = [t for t in (views.gains, views.vs_scratch) if not t.empty]
        if not tables:
            return pd.DataFrame(columns=NEGATIVE_TRANSFER_COLUMNS)
        both = pd.concat(tables, ignore_index=True)
        return both.reindex(columns=NEGATIVE_TRANSFER_COLUMNS)


@register_report_section("same-algorithm", order=10)
class SameAlgorithm(Section):
    parent = "negative-transfer"
    title = "Against the same algorithm without the source"
    table = COMPARISON
    empty = NO_COMPARISONS

    def data(self, views: StudyData) -> pd.DataFrame:
        return views.gains

    def shown(self, views: StudyData) -> pd.DataFrame:
        return comparison_view(views.gains)

    def words(self, views: StudyData) -> list[str]:
        same, lines = views.gains, list[str]()
        if same.empty:
            return lines
        for row in rows_of(same[same["verdict"] == Verdict.NEGATIVE_SIGNIFICANT]):
            lines.append(
                f"Negative transfer: {_recipe(row)} on {row.target} ({row.budget}) is "
                f"{abs(row.gain_mean) * 100:.1f} points below the same algorithm without the "
                f"source ({row.baseline_source}), significant after {views.correction_name} "
                "correction."
            )
        for verdict, words in (
            (Verdict.POSITIVE_SIGNIFICANT, "helps significantly"),
            (Verdict.POSITIVE_NOMINAL, "helps nominally (CI above zero, not after correction)"),
            (Verdict.EQUIVALENT, "is equivalent within the margin"),
        ):
            n = int((same["verdict"] == verdict).sum())
            if n:
                lines.append(
                    f"The source {words} in {n} of {len(same)} recipes, against the same "
                    "algorithm without it."
                )
        return lines


@register_report_section("vs-scratch", order=20)
class VsScratch(Section):
    parent = "negative-transfer"
    title = "Against scratch training"
    intro = (
        '<p class="muted">For frozen recipes this compares two different algorithms: "below '
        'scratch training" is not negative transfer.</p>'
    )
    table = COMPARISON
    empty = NO_COMPARISONS

    def data(self, views: StudyData) -> pd.DataFrame:
        return views.vs_scratch

    def shown(self, views: StudyData) -> pd.DataFrame:
        return comparison_view(views.vs_scratch)

    def words(self, views: StudyData) -> list[str]:
        scratch = views.vs_scratch
        if scratch.empty:
            return []
        frozen = scratch[~scratch["trains_encoder"].astype(bool)]
        below = frozen[frozen["verdict"] == Verdict.BELOW_SCRATCH_SIGNIFICANT]
        return [
            f"Below scratch training: {_recipe(row)} on {row.target} ({row.budget}) is "
            f"{abs(row.gain_mean) * 100:.1f} points below a network trained from scratch; a "
            "frozen recipe, so this compares two algorithms and is not negative transfer."
            for row in rows_of(below.sort_values("gain_mean").head(3))
        ]


@register_report_section("p-improvement", order=30)
class ProbabilityOfImprovement(Section):
    parent = "negative-transfer"
    title = "Probability of improvement"
    intro = (
        "<p>P(transfer beats the same algorithm without the source) over paired seeds; exact "
        "Clopper-Pearson 95% interval (ties count half; the interval counts them as losses at "
        "its lower end and wins at its upper end).</p>"
    )
    table = Table(
        {
            "source": "Source",
            "strategy": "Strategy",
            "budget": "Budget",
            "n_pairs": "Pairs",
            "wins": "Wins",
            "ties": "Ties",
            "losses": "Losses",
            "prob_improvement": "P(improvement)",
            "ci": "95% CI",
        }
    )

    def data(self, views: StudyData) -> pd.DataFrame | None:
        if not views.has_results or "negative-transfer" in views.omitted:
            return None
        table = probability_of_improvement(views.records)
        return table if len(table) else None

    def shown(self, views: StudyData) -> pd.DataFrame | None:
        table = views.frame(self.name)
        if table is None:
            return None
        return table.assign(ci=interval_text(table["ci_low"], table["ci_high"], 2))
