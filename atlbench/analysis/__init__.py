"""Statistics over sweep records: CIs, paired gains, estimator agreement, efficiency, drift."""

from atlbench.analysis.correlation import estimator_agreement, ground_truth
from atlbench.analysis.domain import DriftResult, drift_test, frechet_distance, mmd_rbf
from atlbench.analysis.efficiency import device_kind, gain_per_hour, labels_saved, pareto_front
from atlbench.analysis.stats import (
    done_rows,
    holm,
    mean_ci,
    paired_gains,
    paired_runs,
    probability_of_improvement,
    summarize,
)

__all__ = [
    "DriftResult",
    "device_kind",
    "done_rows",
    "drift_test",
    "estimator_agreement",
    "frechet_distance",
    "gain_per_hour",
    "ground_truth",
    "holm",
    "labels_saved",
    "mean_ci",
    "mmd_rbf",
    "paired_gains",
    "paired_runs",
    "pareto_front",
    "probability_of_improvement",
    "summarize",
]
