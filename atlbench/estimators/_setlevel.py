"""Helpers for set-level estimators: scores normalised over the candidate set."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from atlbench.estimators._validate import ArrayLike


def candidate_terms(
    features_list: Sequence[ArrayLike],
    labels: ArrayLike,
    terms: Callable[..., dict[str, float]],
    **kwargs: Any,
) -> list[dict[str, float]]:
    """``terms(features, labels)`` for every candidate; all candidates must share the N samples."""
    if isinstance(features_list, np.ndarray) or not isinstance(features_list, Sequence):
        raise ValueError(
            "a set-level estimator takes a list of feature matrices, one per candidate model"
        )
    if len(features_list) == 0:
        raise ValueError("the candidate list is empty")
    sizes = {len(f) for f in features_list}
    if len(sizes) > 1:
        raise ValueError(
            "all candidates must be evaluated on the same N samples; got sample counts "
            f"{sorted(sizes)}"
        )
    return [terms(f, labels, **kwargs) for f in features_list]


def min_max(values: Sequence[float]) -> np.ndarray:
    """``(v - min) / (max - min)`` over the candidates; all zeros when they tie (or there is one):
    a term that does not separate the candidates contributes nothing."""
    v = np.asarray(values, dtype=np.float64)
    span = v.max() - v.min()
    if not span > 0:
        return np.zeros_like(v)
    return (v - v.min()) / span
