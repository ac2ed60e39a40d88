"""Transferability estimators: plain functions on (features | source probs, labels) -> float.

Higher always means "transfers better". Each estimator registers itself in its own module with
``@register_estimator(name, input=...)``; ``ESTIMATORS`` (from :mod:`atlbench.registry`) maps the
names to :class:`~atlbench.registry.EstimatorSpec`, so callers pick an estimator by name and feed
it features or source-model probabilities (``spec.input``). Set-level estimators
(``spec.set_level``: NCTI, ETran) normalise their terms over the candidate models and take a list
of feature matrices, one per candidate.
"""

from __future__ import annotations

from atlbench.estimators.etran import etran, etran_terms
from atlbench.estimators.gbc import gbc, gbc_details, gbc_spherical
from atlbench.estimators.hscore import hscore, shrinkage_hscore
from atlbench.estimators.knn import knn_accuracy
from atlbench.estimators.leep import leep, nce, nleep
from atlbench.estimators.logme import (
    LogMEResult,
    logme,
    logme_details,
    logme_regression,
    logme_regression_details,
)
from atlbench.estimators.ncti import ncti, ncti_terms
from atlbench.estimators.ped import ped, ped_features, ped_logme, ped_sfda
from atlbench.estimators.sfda import sfda, sfda_log_probs, sfda_prob
from atlbench.estimators.transrate import transrate
from atlbench.registry import ESTIMATORS, EstimatorSpec, register_estimator

__all__ = [
    "ESTIMATORS",
    "EstimatorSpec",
    "LogMEResult",
    "etran",
    "etran_terms",
    "gbc",
    "gbc_details",
    "gbc_spherical",
    "hscore",
    "knn_accuracy",
    "leep",
    "logme",
    "logme_details",
    "logme_regression",
    "logme_regression_details",
    "nce",
    "ncti",
    "ncti_terms",
    "nleep",
    "ped",
    "ped_features",
    "ped_logme",
    "ped_sfda",
    "register_estimator",
    "sfda",
    "sfda_log_probs",
    "sfda_prob",
    "shrinkage_hscore",
    "transrate",
]
