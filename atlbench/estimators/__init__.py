"""Transferability estimators: plain functions on (features | source probs, labels) -> float.

Higher always means "transfers better". ``ESTIMATORS`` maps registry names to ``EstimatorSpec`` so
callers pick an estimator by name and feed it features or source-model probabilities
(``spec.input``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from atlbench.estimators.gbc import gbc
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
from atlbench.estimators.transrate import transrate


@dataclass(frozen=True)
class EstimatorSpec:
    """One registered estimator: ``fn(features_or_probs, labels) -> float``."""

    name: str
    fn: Callable[[Any, Any], float]
    input: Literal["features", "probs"]
    doc: str


def _spec(name: str, fn: Callable[..., float], kind: Literal["features", "probs"]) -> EstimatorSpec:
    doc = (fn.__doc__ or "").strip().splitlines()[0]
    return EstimatorSpec(name=name, fn=fn, input=kind, doc=doc)


ESTIMATORS: dict[str, EstimatorSpec] = {
    s.name: s
    for s in (
        _spec("logme", logme, "features"),
        _spec("leep", leep, "probs"),
        _spec("nleep", nleep, "features"),
        _spec("nce", nce, "probs"),
        _spec("hscore", hscore, "features"),
        _spec("shrinkage_hscore", shrinkage_hscore, "features"),
        _spec("transrate", transrate, "features"),
        _spec("gbc", gbc, "features"),
        _spec("knn", knn_accuracy, "features"),
    )
}

__all__ = [
    "ESTIMATORS",
    "EstimatorSpec",
    "LogMEResult",
    "gbc",
    "hscore",
    "knn_accuracy",
    "leep",
    "logme",
    "logme_details",
    "logme_regression",
    "logme_regression_details",
    "nce",
    "nleep",
    "shrinkage_hscore",
    "transrate",
]
