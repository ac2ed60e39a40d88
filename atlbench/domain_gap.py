"""Domain gap: how far is each target from the data its source model was pre-trained on?

For every (source, target) pair of a sweep whose source knows its own task (zoo sources name a
built-in task in ``pretrain_on``; others may name one with ``eval_on``), the source task's *test*
split (held out from pre-training, so the source never fitted it) is compared with the target's
train split, with
RBF-kernel MMD (permutation p-value) and the Frechet distance (:mod:`atlbench.analysis.domain`).
The report sets the distance against the gain over scratch of the strategy that stands for
transfer (the suite's ``truth``, chosen in advance, never the best by test accuracy).

Two rulers:

* **reference** (comparable across sources): one fixed embedding for every source, stated in the
  output: images as 8 x 8 RGB pixel means in [0, 1] (192 numbers), text as a 512-bin hashed
  bag of words (L2-normalised), with one RBF bandwidth per target (the median heuristic on the
  target's own sample). Distances of different sources to one target use the same metric.
* **source** (per source): each pair in its own pre-trained feature space with the pooled median
  bandwidth. Numbers from different sources are different metrics; it says what the source sees.

Each pair is one store artifact of kind ``"domain_gap"`` keyed by what determines it (source
weights, both data contents, method settings), so a resumed sweep skips stored pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from atlbench.analysis.domain import frechet_distance, median_bandwidth2, mmd_rbf
from atlbench.cache import content_hash
from atlbench.features import FeatureCache
from atlbench.plan import Plan
from atlbench.source_task import source_task
from atlbench.sources.base import Source
from atlbench.study import Study
from atlbench.targets.base import Split

log = logging.getLogger(__name__)

KIND = "domain_gap"
GAP_VERSION = 2  # 2: held-out source data, a reference ruler beside the per-source one
MAX_SAMPLES = 500  # per side for MMD: the pooled Gram is (2 * 500)^2, cheap on a CPU
PERMUTATIONS = 200
REFERENCE = {
    "image": "8x8 RGB pixel means in [0, 1]",
    "text": "512-bin hashed bag of words, L2-normalised",
}


@dataclass
class DomainGapResult:
    """What :func:`compute_domain_gaps` did, for logs and tests."""

    computed: list[str] = field(default_factory=list)  # artifact keys written now
    existing: int = 0  # pairs already stored (resume)
    skipped: list[str] = field(default_factory=list)  # pairs that failed, with the reason


def reference_embedding(split: Split, modality: str) -> np.ndarray:
    """The fixed, model-free embedding every source is measured in (see the module doc)."""
    if modality == "text":
        from sklearn.feature_extraction.text import HashingVectorizer

        vec = HashingVectorizer(n_features=512, alternate_sign=False, norm="l2")
        return vec.transform(list(split.inputs)).toarray()
    images = split.inputs
    out = []
    for image in images:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None] / 255.0
        out.append(torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten().numpy())
    return np.stack(out).astype(np.float64)


def gap_key(study: Study, source: Source, target_id: str) -> str:
    return content_hash(
        {
            "source": source.fingerprint,
            "target": study.target(target_id).fingerprint,
            "max_samples": MAX_SAMPLES,
            "permutations": PERMUTATIONS,
            "v": GAP_VERSION,
        }
    )


def measure_gap(
    source_x: np.ndarray, target_x: np.ndarray, seed: int = 0, bandwidth2: float | None = None
) -> dict[str, float]:
    """MMD^2 (subsampled), its permutation p-value and the Frechet distance of two samples."""
    mmd2, p = mmd_rbf(
        source_x, target_x, n_permutations=PERMUTATIONS, seed=seed, max_samples=MAX_SAMPLES,
        bandwidth2=bandwidth2,
    )  # fmt: skip
    return {
        "mmd": float(mmd2),
        "mmd_p": float(p),
        "frechet": frechet_distance(source_x, target_x),
        "n_source": len(source_x),
        "n_target": len(target_x),
    }


def gap_pairs(study: Study, plan: Plan) -> list[tuple[Source, str]]:
    """(source, target id) of every transfer cell whose source has a known pre-training task."""
    seen: set[tuple[str, str]] = set()
    pairs = []
    for cell in plan.cells:
        source = study.source(cell.source_id)
        if not cell.pretrained or (source.pretrain_task is None and source.eval_on is None):
            continue
        if (cell.source_id, cell.target) not in seen:
            seen.add((cell.source_id, cell.target))
            pairs.append((source, cell.target))
    return pairs


def _reference_sample(split: Split, modality: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.permutation(len(split))[:MAX_SAMPLES])
    return reference_embedding(split.subset(idx), modality)


def _pair_payload(
    study: Study, cache: FeatureCache, source: Source, target_id: str
) -> dict[str, Any]:
    pre = source_task(study, source)
    assert pre is not None  # gap_pairs keeps only sources with a known source task
    task = study.target(target_id).load()
    ref_src = _reference_sample(pre.test, task.modality, 0)
    ref_tgt = _reference_sample(task.train, task.modality, 1)
    reference = measure_gap(ref_src, ref_tgt, bandwidth2=median_bandwidth2(ref_tgt))
    encoder = source.build(True)
    src = cache.get(source, pre, "test", encoder=encoder).features
    tgt = cache.get(source, task, "train", encoder=encoder).features
    own = measure_gap(src, tgt)
    return {
        "source": source.id,
        "target": target_id,
        "source_split": "test (held out from pre-training)",
        "reference": reference | {"embedding": REFERENCE[task.modality]},
        "source_space": own,
    }


def compute_domain_gaps(
    store: Any,
    study: Study,
    plan: Plan,
    device: str | torch.device = "cpu",
    progress: Callable[[str], None] | None = None,
) -> DomainGapResult:
    """Compute and store the domain gap of every pair not stored yet; never fails the sweep.

    A stored pair whose ids were renamed in the suite (same content, same key) is re-labelled
    so the report shows the current names.
    """
    from atlbench.timing import resolve_device

    result = DomainGapResult()
    pairs = gap_pairs(study, plan)
    # the report shows only the pairs of the current plan, not gaps of older suite versions
    store.set_meta("domain_gap_keys", [gap_key(study, s, t) for s, t in pairs])
    if not pairs:
        return result
    stored = {p.get("key"): p for p in store.artifacts(KIND)}
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    cache = FeatureCache(dev)
    for source, target_id in pairs:
        key = gap_key(study, source, target_id)
        old = stored.get(key)
        if old is not None:
            result.existing += 1
            if (old.get("source"), old.get("target")) != (source.id, target_id):
                store.put_artifact(key, KIND, old | {"source": source.id, "target": target_id})
            continue
        try:
            payload = {"key": key} | _pair_payload(study, cache, source, target_id)
        except Exception as err:  # a view on the results must not cost the sweep its report
            log.warning("domain gap %s -> %s skipped: %s", source.id, target_id, err)
            result.skipped.append(f"{source.id} -> {target_id}: {err}")
            continue
        store.put_artifact(key, KIND, payload)
        result.computed.append(key)
        if progress is not None:
            ref = payload["reference"]
            progress(
                f"domain gap {source.id} -> {target_id}: MMD^2 {ref['mmd']:.4g} on the reference "
                f"ruler (p {ref['mmd_p']:.3g}), {payload['source_space']['mmd']:.4g} in the "
                "source's own features"
            )
    return result
