"""Transferability estimators: how well each score ranks the sources, judged against the
measured accuracy of the suite's truth strategy, beside static baselines.

``estimators.csv``: seed-mean scores per (target, budget, estimator, source), the seed-mean
truth beside them, and each estimator's agreement with the truth.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from atlbench.registry import register_report_section
from atlbench.report import _plots as plots
from atlbench.report._study import StudyData
from atlbench.report._tables import interval_text
from atlbench.report.sections._base import Section, Table

ESTIMATOR_COLUMNS = [
    "target",
    "budget",
    "estimator",
    "source",
    "score",
    "time_s",
    "truth",
    "truth_strategy",
    "n_sources",
    "n_seeds",
    "weighted_tau",
    "tau_ci_low",
    "tau_ci_high",
    "p_value",
    "pearson_r",
    "rel_top1",
    "indicative",
    "set_level",
    "reason",
]
# static baselines scored like estimators (with "baseline_history", a source's record on the
# other targets): in the agreement tables they are what every estimator must beat
BASELINES = ("baseline_params", "baseline_reported_acc", "baseline_history")


def baseline_comparison(views: StudyData) -> list[str]:
    """Plain words: which estimators do not beat the best static baseline, per budget."""
    agreement = views.agreement
    if agreement is None or agreement.empty:
        return []
    lines = []
    for (target, budget), grp in agreement.groupby(["target", "budget"], sort=False):
        is_base = grp["estimator"].str.startswith("baseline_")
        base = grp[is_base].dropna(subset=["weighted_tau"])
        est = grp[~is_base].dropna(subset=["weighted_tau"])
        if base.empty or est.empty:
            continue
        best = base.iloc[base["weighted_tau"].to_numpy(dtype=float).argmax()]
        losers = est[est["weighted_tau"] <= best["weighted_tau"]]["estimator"].tolist()
        note = " (indicative: fewer than 5 sources)" if bool(grp["indicative"].any()) else ""
        if losers:
            lines.append(
                f"On {target} ({budget}), {len(losers)} of {len(est)} estimators do not beat "
                f"the {best['estimator'].removeprefix('baseline_')} baseline "
                f"(weighted τ {best['weighted_tau']:.2f}): {', '.join(losers)}{note}."
            )
        else:
            name = best["estimator"].removeprefix("baseline_")
            lines.append(
                f"On {target} ({budget}), every estimator beats the best baseline "
                f"({name}, τ {best['weighted_tau']:.2f}){note}."
            )
    return lines


@register_report_section("estimators", order=60)
class Estimators(Section):
    title = "Transferability estimators"
    nav = "Estimators"
    intro = (
        "<p>Scores from frozen features of the budgeted labels (the labels the prediction is "
        "about), judged against the measured accuracy of the truth strategy at the same budget, "
        "beside three baselines that never look at the target's features (backbone parameter "
        "count, the source's reported accuracy when the suite gives it, and its history: its "
        "mean tuned accuracy on the study's other targets): weighted Kendall τ of seed means "
        "with a bootstrap CI over seeds and a permutation p-value, and relative top-1 (accuracy "
        "of the estimator's pick over the best source's). Fewer than 5 sources: indicative "
        "only.</p>"
    )
    missing = '<p class="muted">No estimator scores recorded.</p>'
    csv = "estimators"
    csv_always = True
    table = Table(
        {
            "target": "Target",
            "budget": "Budget",
            "estimator": "Estimator",
            "n_sources": "Sources",
            "weighted_tau": "Weighted τ",
            "tau_ci": "τ 95% CI",
            "p_value": "p (τ > 0)",
            "rel_top1": "Rel. top-1",
            "indicative": "Indicative",
            "reason": "Note",
        }
    )

    def data(self, views: StudyData) -> pd.DataFrame:
        """``estimators.csv`` (columns :data:`ESTIMATOR_COLUMNS`)."""
        est = views.selection_scores
        if est.empty:
            return pd.DataFrame(columns=ESTIMATOR_COLUMNS)
        keys = ["target", "budget", "estimator", "source"]
        scores = est.groupby(keys, as_index=False).agg(
            score=("score", "mean"), time_s=("time_s", "mean"), set_level=("set_level", "max")
        )
        if not views.truth.empty:
            truth = views.truth.groupby(["source", "target", "budget"], as_index=False).agg(
                truth=("truth", "mean"), truth_strategy=("strategy", "first")
            )
            scores = scores.merge(truth, on=["source", "target", "budget"], how="left")
        if views.agreement is not None:
            scores = scores.merge(views.agreement, on=["target", "budget", "estimator"], how="left")
        return scores.reindex(columns=ESTIMATOR_COLUMNS).sort_values(keys, ignore_index=True)

    def shown(self, views: StudyData) -> pd.DataFrame | None:
        """The agreement table (one row per estimator), its interval as text."""
        agreement = views.agreement
        if agreement is None:
            return None
        low, high = agreement["tau_ci_low"], agreement["tau_ci_high"]
        return agreement.assign(tau_ci=interval_text(low, high, 2))

    def available(self, views: StudyData) -> bool:
        return not views.estimates.empty

    def lines(self, views: StudyData) -> list[str]:
        return baseline_comparison(views)

    def figures(self, views: StudyData) -> dict[str, Any]:
        out: dict[str, Any] = {}
        truth, estimates = views.truth, views.estimates
        if truth.empty or estimates.empty:
            return out
        for name in sorted(set(estimates["estimator"])):
            fig = plots.estimator_scatter(estimates, truth, name)
            if fig is not None:
                out[f"estimator: {name}"] = fig
        return out
