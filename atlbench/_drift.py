"""``atlbench drift``: has new data moved away from a reference, as a given model sees it?

Both datasets are targets of a suite (any kind: image folder, CSV, built-in with a ``shift``), so
the data are validated once, by the same loaders a sweep uses. Each side is one split of a target
(default ``train``); comparing a target's ``train`` split with its own ``test`` split is a sanity
check that should usually find nothing. Features come from the pre-trained source encoder through
the shared :class:`~atlbench._features.FeatureCache`, so a second run costs only the test itself.

The decision is the MMD permutation test of :func:`atlbench.analysis._domain.drift_test`. A
calibrated test at ``alpha = 0.05`` flags drift in about 5% of comparisons between samples of the
very same distribution: a single "drift detected" at a p-value near alpha is weak evidence.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from atlbench.analysis._domain import DEFAULT_MAX_SAMPLES, DriftResult, drift_test
from atlbench.errors import AtlbenchError

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DriftReport:
    """A drift test with what it compared: the CLI prints it, ``--json`` dumps it."""

    source: str
    reference: str
    reference_split: str
    new: str
    new_split: str
    alpha: float
    n_permutations: int
    result: DriftResult

    @property
    def short_verdict(self) -> str:
        if self.result.drifted:
            return f"drift detected (p={self.result.p_value:.3g})"
        return f"no evidence of drift (p={self.result.p_value:.3g})"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.update(out.pop("result"))
        out["short_verdict"] = self.short_verdict
        return out

    def lines(self) -> list[str]:
        r = self.result
        return [
            f"source     {self.source}",
            f"reference  {self.reference} [{self.reference_split}] ({r.n_reference} examples)",
            f"new        {self.new} [{self.new_split}] ({r.n_new} examples)",
            f"MMD^2      {r.mmd2:.6g}  (RBF kernel, permutation p = {r.p_value:.4g}, "
            f"{self.n_permutations} permutations)",
            f"Frechet    {r.frechet:.6g}",
            f"verdict    {self.short_verdict} at alpha {self.alpha:g}",
        ]


def detect_drift(
    suite_path: str | Path,
    source_id: str,
    reference: str,
    new: str,
    reference_split: str = "train",
    new_split: str = "train",
    n_permutations: int = 500,
    alpha: float = 0.05,
    seed: int = 0,
    max_samples: int | None = DEFAULT_MAX_SAMPLES,
    device: str | None = None,
) -> DriftReport:
    """Two-sample test between two target splits in ``source_id``'s pre-trained feature space.

    Raises :class:`AtlbenchError` (exit code 2 on the CLI) for unknown ids, a split compared with
    itself, a source that cannot read a target's modality, or ``alpha`` outside (0, 1).
    """
    import torch

    from atlbench._features import FeatureCache
    from atlbench._timing import resolve_device
    from atlbench.study import load_study

    if not 0.0 < alpha < 1.0:
        raise AtlbenchError(f"--alpha must lie strictly between 0 and 1, got {alpha}")
    if n_permutations < 1:
        raise AtlbenchError("--permutations must be at least 1")
    for split in (reference_split, new_split):
        if split not in SPLITS:
            raise AtlbenchError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    if (reference, reference_split) == (new, new_split):
        raise AtlbenchError(
            f"reference and new are both {reference!r} [{reference_split}]: pick another target "
            "or another split (e.g. --new-split test)"
        )
    study = load_study(suite_path)
    study.pick("source", [source_id])
    study.pick("target", [reference, new])
    source = study.source(source_id)
    for name in (reference, new):
        modality = study.target(name).modality
        if modality != source.modality:
            raise AtlbenchError(
                f"source {source_id!r} reads {source.modality} data but target {name!r} is "
                f"{modality}"
            )
    dev = resolve_device(device or study.suite.device)
    cache = FeatureCache(dev if isinstance(dev, torch.device) else torch.device(dev))
    encoder = None
    feats = []
    for name, split in ((reference, reference_split), (new, new_split)):
        task = study.target(name).load()
        if encoder is None:
            encoder = source.build(True)
        feats.append(cache.get(source, task, split, encoder=encoder).features)
    result = drift_test(
        feats[0],
        feats[1],
        n_permutations=n_permutations,
        seed=seed,
        alpha=alpha,
        max_samples=max_samples,
    )
    return DriftReport(
        source_id, reference, reference_split, new, new_split, alpha, n_permutations, result
    )


def render(report: DriftReport, as_json: bool = False) -> str:
    """The CLI's output: aligned lines ending in the verdict, or one JSON object."""
    if as_json:
        return json.dumps(report.to_dict(), indent=2)
    return "\n".join([*report.lines(), "", report.result.verdict])
