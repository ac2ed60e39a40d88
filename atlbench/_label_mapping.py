"""Label semantics: which source classes does each target class land on?

For a source with its own classifier head, the mean source-class probabilities of the examples of
each target class estimate P(z | y), the conditional behind LEEP (Nguyen et al. 2020, eq. 2:
their empirical joint P(y, z), normalised per target class) and NCE (Tran et al. 2019). Read as a
table it says, in plain terms, whether the source's label space lines up with the target's:

* a target class maps *confidently* when one source class takes at least half of its mass;
* target classes *share* a source class when two or more map (by their top source class) onto
  the same one: the head cannot tell them apart without learning.

A target whose labels are a permutation of the source's classes maps every class confidently
onto a distinct source class (the permutation); merged classes share. The sweep computes it once
per (source, target) on the target's training split, from cached probabilities, as a task of the
plan (:class:`~atlbench.plan.LabelMappingTask`) on its executor.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from atlbench._features import FeatureCache
from atlbench.artifacts import LabelMappingArtifact, TaskSkipped
from atlbench.plan import LabelMappingTask
from atlbench.study import Study

__all__ = ["CONFIDENT", "compute_mapping", "label_mapping"]

CONFIDENT = 0.5


def label_mapping(
    probs: np.ndarray, labels: np.ndarray, confident: float = CONFIDENT
) -> dict[str, Any]:
    """``P(z | y)`` and its summary: top source class per target class, how many map confidently
    and how many share their top source class with another target class."""
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError("probs must be (N, Z) with one row per label")
    if not np.isfinite(probs).all():
        raise ValueError("probs contain NaN or inf")
    classes = np.unique(labels)
    cond = np.stack([probs[labels == c].mean(0) for c in classes])
    cond /= cond.sum(1, keepdims=True)
    top = cond.argmax(1)
    top_p = cond.max(1)
    counts = np.bincount(top, minlength=probs.shape[1])
    shared = counts[top] > 1
    return {
        "classes": classes.tolist(),
        "matrix": cond.tolist(),
        "top": top.tolist(),
        "top_p": top_p.tolist(),
        "n_target_classes": len(classes),
        "n_confident": int((top_p >= confident).sum()),
        "n_shared": int(shared.sum()),
        "confident_threshold": confident,
    }


def compute_mapping(
    study: Study, task: LabelMappingTask, cache: FeatureCache
) -> LabelMappingArtifact | TaskSkipped:
    """The mapping of one (source, target) pair; a source without a head maps nothing."""
    data = study.target(task.target).load()
    fs = cache.get(study.source(task.source), data, "train")
    if fs.probs is None:
        return TaskSkipped(f"{task.label}: the source has no classifier head")
    found = label_mapping(fs.probs, data.train.labels)
    names = data.class_names
    return LabelMappingArtifact(
        key=task.key,
        source=task.source,
        target=task.target,
        class_names=[names[c] for c in found["classes"]],
        **found,
    )
