"""Domain gap: how far is each target from the data its source model was pre-trained on?

For every (source, target) pair of a sweep whose source knows its own task (zoo sources name a
built-in task in ``pretrain_on``; others may name one with ``eval_on``), the source task's *test*
split (held out from pre-training, so the source never fitted it) is compared with the target's
train split, with
RBF-kernel MMD (permutation p-value) and the Frechet distance (:mod:`atlbench.analysis._domain`).
The report sets the distance against the gain over scratch of the strategy that stands for
transfer (the suite's ``truth``, chosen in advance, never the best by test accuracy).

Two rulers:

* **reference** (comparable across sources): one fixed embedding for every source, stated in the
  output: images as 8 x 8 RGB pixel means in [0, 1] (192 numbers), text as a 512-bin hashed
  bag of words (L2-normalised), with one RBF bandwidth per target (the median heuristic on the
  target's own sample). Distances of different sources to one target use the same metric.
* **source** (per source): each pair in its own pre-trained feature space with the pooled median
  bandwidth. Numbers from different sources are different metrics; it says what the source sees.

Each pair is a task of the plan (:class:`~atlbench.plan.DomainGapTask`), run on the sweep's executor
after the cells; it returns one :class:`~atlbench.artifacts.DomainGapArtifact`, stored by the
driver under a key of what determines it (source weights, both data contents, method settings), so
a resumed sweep skips stored pairs.
"""

from __future__ import annotations

import numpy as np
import torch

from atlbench import artifacts
from atlbench._features import FeatureCache
from atlbench._source_task import source_task
from atlbench.analysis._domain import frechet_distance, median_bandwidth2, mmd_rbf
from atlbench.artifacts import DomainGapArtifact, GapMeasure
from atlbench.plan import DomainGapTask
from atlbench.study import Study
from atlbench.targets._base import Split

__all__ = ["REFERENCE", "compute_gap", "measure_gap", "reference_embedding"]

MAX_SAMPLES = artifacts.GAP_MAX_SAMPLES
PERMUTATIONS = artifacts.GAP_PERMUTATIONS
REFERENCE = {
    "image": "8x8 RGB pixel means in [0, 1]",
    "text": "512-bin hashed bag of words, L2-normalised",
}


def reference_embedding(split: Split, modality: str) -> np.ndarray:
    """The fixed, model-free embedding every source is measured in (see the module doc)."""
    if modality == "text":
        from sklearn.feature_extraction.text import HashingVectorizer

        vec = HashingVectorizer(n_features=512, alternate_sign=False, norm="l2")
        return np.asarray(vec.transform(list(split.inputs)).toarray())
    images = split.inputs
    out = []
    for image in images:
        x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float()[None] / 255.0
        out.append(torch.nn.functional.adaptive_avg_pool2d(x, 8).flatten().numpy())
    return np.stack(out).astype(np.float64)


def measure_gap(
    source_x: np.ndarray,
    target_x: np.ndarray,
    seed: int = 0,
    bandwidth2: float | None = None,
    embedding: str | None = None,
) -> GapMeasure:
    """MMD^2 (subsampled), its permutation p-value and the Frechet distance of two samples."""
    mmd2, p = mmd_rbf(
        source_x, target_x, n_permutations=PERMUTATIONS, seed=seed, max_samples=MAX_SAMPLES,
        bandwidth2=bandwidth2,
    )  # fmt: skip
    return GapMeasure(
        mmd=float(mmd2),
        mmd_p=float(p),
        frechet=frechet_distance(source_x, target_x),
        n_source=len(source_x),
        n_target=len(target_x),
        embedding=embedding,
    )


def _reference_sample(split: Split, modality: str, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.permutation(len(split))[:MAX_SAMPLES])
    return reference_embedding(split.subset(idx), modality)


def compute_gap(study: Study, task: DomainGapTask, cache: FeatureCache) -> DomainGapArtifact:
    """Both rulers of one (source, target) pair; raises when the pair cannot be measured."""
    source = study.source(task.source)
    pre = source_task(study, source)
    if pre is None:  # the plan keeps only sources with a known source task
        raise ValueError(f"source {source.id!r} names no pre-training or evaluation task")
    data = study.target(task.target).load()
    ref_src = _reference_sample(pre.test, data.modality, 0)
    ref_tgt = _reference_sample(data.train, data.modality, 1)
    reference = measure_gap(
        ref_src, ref_tgt, bandwidth2=median_bandwidth2(ref_tgt), embedding=REFERENCE[data.modality]
    )
    encoder = source.build(True)
    src = cache.get(source, pre, "test", encoder=encoder).features
    tgt = cache.get(source, data, "train", encoder=encoder).features
    return DomainGapArtifact(
        key=task.key,
        source=source.id,
        target=task.target,
        source_split="test (held out from pre-training)",
        reference=reference,
        source_space=measure_gap(src, tgt),
    )
