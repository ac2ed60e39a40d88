"""Domain gap: how far is each target from the data its source model was pre-trained on?

For every (source, target) pair of a sweep whose source knows its pre-training data (zoo sources
name a built-in task in ``pretrain_on``), both datasets go through the *pre-trained* source encoder
and the two feature clouds are compared with RBF-kernel MMD (permutation p-value) and the Frechet
distance (:mod:`atlbench.analysis.domain`). The report sets this distance against the measured gain
over scratch, which is the classic question "does transfer help less the further away the target
is?".

Each pair is one store artifact of kind ``"domain_gap"`` keyed by a content hash of what determines
it (source weights, target content, method settings), so a resumed sweep skips stored pairs. Work
runs in the driver after the cells: features come from the shared :class:`FeatureCache`, so the
target side is usually already cached by the estimators; only the pre-training side costs one
forward pass per source.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from atlbench.analysis.domain import frechet_distance, mmd_rbf
from atlbench.cache import content_hash
from atlbench.features import FeatureCache
from atlbench.sources import Source
from atlbench.targets import load_target, target_fingerprint
from atlbench.targets.base import TaskData

log = logging.getLogger(__name__)

KIND = "domain_gap"
GAP_VERSION = 1  # bump when the method or its settings change (new artifact keys)
MAX_SAMPLES = 500  # per side for MMD: the pooled Gram is (2 * 500)^2, cheap on a CPU
PERMUTATIONS = 200


@dataclass
class DomainGapResult:
    """What :func:`compute_domain_gaps` did, for logs and tests."""

    computed: list[str] = field(default_factory=list)  # artifact keys written now
    existing: int = 0  # pairs already stored (resume)
    skipped: list[str] = field(default_factory=list)  # pairs that failed, with the reason


def pretrain_task(source: Source) -> TaskData | None:
    """The built-in task a zoo source was pre-trained on (same recipe as the zoo uses), or None."""
    if source.pretrain_task is None or source.kind != "zoo":
        return None
    from atlbench.sources.zoo import ZooParams, pretrain_data

    return pretrain_data(ZooParams.model_validate(source.spec))


def gap_key(source: Source, target_entry: Any) -> str:
    return content_hash(
        {
            "source": source.fingerprint,
            "target": target_fingerprint(target_entry),
            "max_samples": MAX_SAMPLES,
            "permutations": PERMUTATIONS,
            "v": GAP_VERSION,
        }
    )


def measure_gap(
    source_features: np.ndarray, target_features: np.ndarray, seed: int = 0
) -> dict[str, float]:
    """MMD^2 (subsampled), its permutation p-value and the Frechet distance of two feature sets."""
    mmd2, p = mmd_rbf(
        source_features,
        target_features,
        n_permutations=PERMUTATIONS,
        seed=seed,
        max_samples=MAX_SAMPLES,
    )
    return {
        "mmd": float(mmd2),
        "mmd_p": float(p),
        "frechet": frechet_distance(source_features, target_features),
        "n_source": len(source_features),
        "n_target": len(target_features),
    }


def gap_pairs(plan: Any) -> list[tuple[Source, str]]:
    """(source, target id) of every pre-trained cell whose source has known pre-training data."""
    seen: set[tuple[str, str]] = set()
    pairs = []
    for cell in plan.cells:
        source = plan.sources.get(cell.source_id)
        if cell.source != cell.source_id or source is None or source.pretrain_task is None:
            continue  # scratch cells carry "<arch> (random init)" as their source
        if (cell.source_id, cell.target) not in seen:
            seen.add((cell.source_id, cell.target))
            pairs.append((source, cell.target))
    return pairs


def compute_domain_gaps(
    store: Any,
    suite: Any,
    plan: Any,
    device: str | torch.device = "cpu",
    progress: Callable[[str], None] | None = None,
) -> DomainGapResult:
    """Compute and store the domain gap of every pair not stored yet; never fails the sweep.

    A stored pair whose ids were renamed in the suite (same content, same key) is re-labelled
    so the report shows the current names.
    """
    from atlbench.timing import resolve_device

    result = DomainGapResult()
    pairs = gap_pairs(plan)
    targets = {t.id: t for t in suite.targets}
    # the report shows only the pairs of the current plan, not gaps of older suite versions
    store.set_meta("domain_gap_keys", [gap_key(s, targets[t]) for s, t in pairs])
    if not pairs:
        return result
    stored = {p.get("key"): p for p in store.artifacts(KIND)}
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    cache = FeatureCache(dev)
    for source, target_id in pairs:
        entry = targets[target_id]
        key = gap_key(source, entry)
        old = stored.get(key)
        if old is not None:
            result.existing += 1
            if (old.get("source"), old.get("target")) != (source.id, target_id):
                store.put_artifact(key, KIND, old | {"source": source.id, "target": target_id})
            continue
        try:
            pre = pretrain_task(source)
            assert pre is not None  # gap_pairs keeps only sources with a pre-training task
            encoder = source.build(True)
            src = cache.get(source, pre, "train", encoder=encoder).features
            tgt = cache.get(source, load_target(entry), "train", encoder=encoder).features
            payload = {"key": key, "source": source.id, "target": target_id}
            payload |= measure_gap(src, tgt)
        except Exception as err:  # a view on the results must not cost the sweep its report
            log.warning("domain gap %s -> %s skipped: %s", source.id, target_id, err)
            result.skipped.append(f"{source.id} -> {target_id}: {err}")
            continue
        store.put_artifact(key, KIND, payload)
        result.computed.append(key)
        if progress is not None:
            progress(
                f"domain gap {source.id} -> {target_id}: MMD^2 {payload['mmd']:.4g} "
                f"(p {payload['mmd_p']:.3g}), Frechet {payload['frechet']:.4g}"
            )
    return result
