"""Statistics over sweep records: intervals, paired gains, estimator agreement, cost, drift."""

from atlbench.analysis._correlation import estimator_agreement, ground_truth
from atlbench.analysis._crossed import CrossedMean, crossed_mean
from atlbench.analysis._domain import DriftResult, drift_test, frechet_distance, mmd_rbf
from atlbench.analysis._efficiency import (
    MIN_COST_S,
    cell_cost_seconds,
    cost_accuracy,
    device_kind,
    gain_per_hour,
    labels_saved,
    pareto_front,
)
from atlbench.analysis._failure_modes import forgetting_table, overfit_flags, overfitting_table
from atlbench.analysis._gains import VERDICTS, paired_gains
from atlbench.analysis._improvement import (
    clopper_pearson,
    interquartile_mean,
    probability_of_improvement,
)
from atlbench.analysis._inference import error_quantile, error_sf, interval, p_value, tost_pvalue
from atlbench.analysis._multitest import adjust_pvalues, benjamini_hochberg, holm
from atlbench.analysis._pairing import COMPARISONS, paired_runs
from atlbench.analysis._records import ROLES, done_rows
from atlbench.analysis._selection import (
    HISTORY,
    estimator_stability,
    history_scores,
    with_history,
)
from atlbench.analysis._stats import mean_ci, summarize

__all__ = [
    "COMPARISONS",
    "HISTORY",
    "MIN_COST_S",
    "ROLES",
    "VERDICTS",
    "CrossedMean",
    "DriftResult",
    "adjust_pvalues",
    "benjamini_hochberg",
    "cell_cost_seconds",
    "clopper_pearson",
    "cost_accuracy",
    "crossed_mean",
    "device_kind",
    "done_rows",
    "drift_test",
    "error_quantile",
    "error_sf",
    "estimator_agreement",
    "estimator_stability",
    "forgetting_table",
    "frechet_distance",
    "gain_per_hour",
    "ground_truth",
    "history_scores",
    "holm",
    "interquartile_mean",
    "interval",
    "labels_saved",
    "mean_ci",
    "mmd_rbf",
    "overfit_flags",
    "overfitting_table",
    "p_value",
    "paired_gains",
    "paired_runs",
    "pareto_front",
    "probability_of_improvement",
    "summarize",
    "tost_pvalue",
    "with_history",
]
