"""Every table the report and the CSVs show, as pandas DataFrames: the Python face of a results
directory.

``Views`` is what :func:`atlbench.load_results` and :func:`atlbench.run_suite` return. Each
attribute is a DataFrame with documented columns, so a notebook gets exactly what
``leaderboard.csv`` and the HTML report show, and :meth:`Views.figures` returns the report's
figures as matplotlib ``Figure`` objects. The tables are computed by the registered report
sections (:mod:`atlbench.report.sections`), once each; :meth:`Views.frame` gives any section's
frame by name, a plug-in's included.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from atlbench.report._study import COMPARISON_COLUMNS as NEGATIVE_TRANSFER_COLUMNS
from atlbench.report._study import DISPLAY_COLUMNS, StudyData
from atlbench.report.sections import ordered  # importing it registers the built-in sections
from atlbench.report.sections.cka import cka_items
from atlbench.report.sections.estimators import BASELINES, ESTIMATOR_COLUMNS, baseline_comparison
from atlbench.report.sections.failures import FAILURE_COLUMNS
from atlbench.report.sections.summary import next_steps, protocol
from atlbench.report.sections.timing import TIMING_COLUMNS

__all__ = [
    "BASELINES",
    "DISPLAY_COLUMNS",
    "ESTIMATOR_COLUMNS",
    "FAILURE_COLUMNS",
    "NEGATIVE_TRANSFER_COLUMNS",
    "TIMING_COLUMNS",
    "Views",
]


class Views(StudyData):
    """Tables over one results directory's records, estimates and artifacts.

    Besides the attributes below: ``records``, ``estimates`` (finished estimator scores),
    ``truth`` (what estimators are judged against), ``summary`` (accuracy per recipe),
    ``gains`` and ``vs_scratch`` (the two paired comparisons), ``agreement`` (each estimator
    against the truth) and ``omitted`` (sections left out, and why).
    """

    # -- the CSVs -------------------------------------------------------------------------------
    @property
    def leaderboard(self) -> pd.DataFrame:
        """``leaderboard.csv``: per target and budget, every recipe ranked by mean accuracy."""
        return self.table("leaderboard")

    @property
    def negative_transfer(self) -> pd.DataFrame:
        """``negative_transfer.csv``: both comparisons, one row each per transfer recipe."""
        return self.table("negative-transfer")

    @property
    def estimators_csv(self) -> pd.DataFrame:
        """``estimators.csv``: seed-mean scores per (target, budget, estimator, source), the
        seed-mean truth beside them, and each estimator's agreement with the truth."""
        return self.table("estimators")

    @property
    def timing(self) -> pd.DataFrame:
        """``timing.csv``: one row per finished cell, every clock, throughput and memory figure."""
        return self.table("timing-cells")

    @property
    def timing_summary(self) -> pd.DataFrame:
        """``timing_summary.csv``: per strategy and role, median and total cost and throughput."""
        return self.table("timing")

    @property
    def forgetting(self) -> pd.DataFrame:
        """``forgetting.csv``: the source head's accuracy on its own task before and after each
        transfer recipe, and the drop with a 95% interval over seeds."""
        return self.table("forgetting")

    @property
    def label_mapping(self) -> pd.DataFrame:
        """``label_mapping.csv``: per (source with a head, target), where target classes land."""
        return self.table("label-mapping")

    @property
    def domain_gap(self) -> pd.DataFrame:
        """``domain_gap.csv``: source held-out data against target on two rulers, with the gain
        of the suite's truth strategy."""
        return self.table("domain-gap")

    def cka_table(self) -> pd.DataFrame:
        """``cka.csv``: per-layer CKA of every comparison in long form."""
        return self.table("cka")

    # -- the report's other tables --------------------------------------------------------------
    @property
    def failure_modes(self) -> pd.DataFrame:
        """Per (source, target): each failure mode in plain words (source, target, mode,
        statement)."""
        return self.table("failure-modes")

    @property
    def overfitting(self) -> pd.DataFrame:
        """Per recipe: the selected run's train/validation gap and how many cells overfit."""
        return self.table("overfitting")

    @property
    def p_improvement(self) -> pd.DataFrame | None:
        """P(transfer beats the same algorithm without the source) per recipe."""
        return self.frame("p-improvement")

    @property
    def labels_saved(self) -> pd.DataFrame | None:
        """Labels scratch training needs to match each significant gain."""
        return self.frame("labels-saved")

    @property
    def gain_per_hour(self) -> pd.DataFrame | None:
        """Gain per CPU- or GPU-hour of each recipe."""
        return self.frame("gain-per-hour")

    @property
    def cost_accuracy(self) -> pd.DataFrame:
        """Accuracy against cost per recipe, with its Pareto front."""
        return self.table("accuracy-vs-cost")

    @property
    def stability(self) -> pd.DataFrame:
        """How much each estimator's ranking agrees with itself across seeds and budgets."""
        return self.table("stability")

    @property
    def failures(self) -> pd.DataFrame:
        """The cells that failed, with their error."""
        return self.table("failures")

    @property
    def environment(self) -> pd.DataFrame:
        """Devices and package versions the records were produced with."""
        return self.table("environment")

    # -- words ----------------------------------------------------------------------------------
    @property
    def protocol(self) -> dict[str, Any]:
        """What the verdicts rest on: budgets, validation, seeds, trials, what intervals cover."""
        return protocol(self)

    @property
    def next_steps(self) -> list[str]:
        """What to do about an inconclusive study, in the suite's own terms."""
        return next_steps(self)

    @property
    def baseline_comparison(self) -> list[str]:
        """Which estimators do not beat the best static baseline, per budget."""
        return baseline_comparison(self)

    # -- figures --------------------------------------------------------------------------------
    def figures(self) -> dict[str, Any]:
        """The report's figures as matplotlib ``Figure`` objects, by name, in page order (they
        display inline in a notebook)."""
        out: dict[str, Any] = {}
        for section in ordered():
            for name, fig in self.figures_of(section.name).items():
                out.setdefault(name, fig)
        return out

    def cka_items(self) -> list[dict[str, Any]]:
        """One CKA comparison per (source, target, strategy, budget, kind): the first seed at
        each target's largest label budget."""
        return cka_items(self)

    def cka_figures(self) -> dict[str, Any]:
        """The per-layer change curve, then one heatmap per comparison."""
        return self.figures_of("cka")
