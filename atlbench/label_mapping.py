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
per (source, target) on the target's training split, in the driver, from cached probabilities.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from atlbench.cache import content_hash
from atlbench.features import FeatureCache
from atlbench.plan import Plan
from atlbench.study import Study

log = logging.getLogger(__name__)
KIND = "label_mapping"
VERSION = 1
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


@dataclass
class LabelMappingResult:
    computed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def mapping_key(study: Study, source_id: str, target_id: str) -> str:
    source, target = study.source(source_id), study.target(target_id)
    return content_hash({"source": source.fingerprint, "target": target.fingerprint, "v": VERSION})


def compute_label_mappings(
    store: Any, study: Study, plan: Plan, device: str | torch.device = "cpu"
) -> LabelMappingResult:
    """Every (source with a head, target) pair of the plan's transfer cells, once; a failure
    is logged and skipped (a view on the results never costs the sweep its report)."""
    from atlbench.timing import resolve_device

    result = LabelMappingResult()
    pairs = list(dict.fromkeys((c.source_id, c.target) for c in plan.cells if c.pretrained))
    store.set_meta(f"{KIND}_keys", [mapping_key(study, s, t) for s, t in pairs])
    stored = {p.get("key") for p in store.artifacts(KIND)}
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    cache = FeatureCache(dev)
    for source_id, target_id in pairs:
        key = mapping_key(study, source_id, target_id)
        if key in stored:
            continue
        try:
            task = study.target(target_id).load()
            fs = cache.get(study.source(source_id), task, "train")
            if fs.probs is None:
                continue  # no source head: nothing to map
            payload = label_mapping(fs.probs, task.train.labels)
        except Exception as err:
            log.warning("label mapping %s -> %s skipped: %s", source_id, target_id, err)
            result.skipped.append(f"{source_id} -> {target_id}: {err}")
            continue
        names = task.class_names
        payload |= {"key": key, "source": source_id, "target": target_id,
                    "class_names": [names[c] for c in payload["classes"]]}  # fmt: skip
        store.put_artifact(key, KIND, payload)
        result.computed.append(key)
    return result
