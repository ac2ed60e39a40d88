"""What the plan's non-cell tasks return: one typed artifact per kind, and their content keys.

A worker returns one of these (or :class:`TaskSkipped`); the driver writes it with
``store.put_artifact(artifact.key, artifact.KIND, artifact.payload())``. The payloads keep the
JSON shape the stores already hold, and the keys hash exactly what they hashed before this module
existed, so artifacts a committed store holds are found and never recomputed.

The key functions take fingerprints, not resolved objects, so this module stays a leaf: the planner
(:mod:`atlbench.plan`) and the modules that compute the artifacts both import it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from atlbench._cache import content_hash

__all__ = [
    "CKA",
    "CKA_VERSION",
    "DOMAIN_GAP",
    "GAP_MAX_SAMPLES",
    "GAP_PERMUTATIONS",
    "GAP_VERSION",
    "LABEL_MAPPING",
    "MAPPING_VERSION",
    "Artifact",
    "CkaArtifact",
    "DomainGapArtifact",
    "GapMeasure",
    "LabelMappingArtifact",
    "TaskSkipped",
    "cka_key",
    "gap_key",
    "mapping_key",
]

CKA, DOMAIN_GAP, LABEL_MAPPING = "cka", "domain_gap", "label_mapping"

CKA_VERSION = 1  # bump when the CKA estimator or data selection changes (new artifact keys)
GAP_VERSION = 2  # 2: held-out source data, a reference ruler beside the per-source one
GAP_MAX_SAMPLES = 500  # per side for MMD: the pooled Gram is (2 * 500)^2, cheap on a CPU
GAP_PERMUTATIONS = 200
MAPPING_VERSION = 1


def cka_key(key_a: str, key_b: str, kind: str) -> str:
    """Content hash of the two compared models' identities and the comparison kind."""
    return content_hash({"a": key_a, "b": key_b, "kind": kind, "version": CKA_VERSION}, 20)


def gap_key(source_fingerprint: Any, target_fingerprint: Any) -> str:
    """What determines a domain gap: the source weights, the target data, the method settings."""
    return content_hash(
        {
            "source": source_fingerprint,
            "target": target_fingerprint,
            "max_samples": GAP_MAX_SAMPLES,
            "permutations": GAP_PERMUTATIONS,
            "v": GAP_VERSION,
        }
    )


def mapping_key(source_fingerprint: Any, target_fingerprint: Any) -> str:
    """What determines a label mapping: the source (and its head) and the target data."""
    return content_hash(
        {"source": source_fingerprint, "target": target_fingerprint, "v": MAPPING_VERSION}
    )


@dataclass(frozen=True)
class CkaArtifact:
    """Layer x layer linear CKA of one fine-tuned cell against its pre-trained or scratch twin."""

    KIND: ClassVar[str] = CKA

    key: str
    source: str
    target: str
    strategy: str
    budget: str
    seed: int
    kind: str  # "pre_vs_finetuned" or "finetuned_vs_scratch"
    rows: list[str]
    cols: list[str]
    matrix: list[list[float]]
    arch: str
    cell_a: str | None  # the fine-tuned cell when it is model a (against scratch)
    cell_b: str
    split: str
    n_examples: int
    n_split: int
    estimator: str
    version: int

    def payload(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str:
        return (
            f"CKA {self.kind}: {self.source} -> {self.target} / {self.strategy} / {self.budget}"
            f" / seed {self.seed}"
        )


@dataclass(frozen=True)
class GapMeasure:
    """One ruler's distance between source and target samples."""

    mmd: float  # unbiased MMD^2 with an RBF kernel
    mmd_p: float  # its permutation p-value
    frechet: float
    n_source: int
    n_target: int
    embedding: str | None = None  # the reference ruler names its embedding

    def payload(self) -> dict[str, Any]:
        out = asdict(self)
        if self.embedding is None:  # the per-source ruler: the report fills in its own words
            del out["embedding"]
        return out


@dataclass(frozen=True)
class DomainGapArtifact:
    """How far a target is from its source's pre-training data, on two rulers."""

    KIND: ClassVar[str] = DOMAIN_GAP

    key: str
    source: str
    target: str
    source_split: str
    reference: GapMeasure
    source_space: GapMeasure

    def payload(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "source": self.source,
            "target": self.target,
            "source_split": self.source_split,
            "reference": self.reference.payload(),
            "source_space": self.source_space.payload(),
        }

    def summary_line(self) -> str:
        ref = self.reference
        return (
            f"domain gap {self.source} -> {self.target}: MMD^2 {ref.mmd:.4g} on the reference "
            f"ruler (p {ref.mmd_p:.3g}), {self.source_space.mmd:.4g} in the source's own features"
        )


@dataclass(frozen=True)
class LabelMappingArtifact:
    """``P(z | y)`` of a source head over a target's classes, and its summary."""

    KIND: ClassVar[str] = LABEL_MAPPING

    key: str
    source: str
    target: str
    classes: list[int]
    class_names: list[str]
    matrix: list[list[float]]
    top: list[int]
    top_p: list[float]
    n_target_classes: int
    n_confident: int
    n_shared: int
    confident_threshold: float

    def payload(self) -> dict[str, Any]:
        return asdict(self)

    def summary_line(self) -> str | None:
        return None  # the report tells it; one line per pair would only repeat the table


@dataclass(frozen=True)
class TaskSkipped:
    """A task that produced nothing, and why. Nothing is stored: a re-run tries again.

    ``error`` marks a failure (logged as a warning) as opposed to an expected absence, such as
    a source without a classifier head or a cell that kept no checkpoint.
    """

    reason: str
    error: bool = False


Artifact = CkaArtifact | DomainGapArtifact | LabelMappingArtifact
