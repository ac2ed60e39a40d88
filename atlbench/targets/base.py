"""What every target task looks like: labelled train/val/test splits plus a content fingerprint."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atlbench.errors import DataError

Inputs = Any  # uint8 array (N, H, W, 3), a list of uint8 HWC arrays, or a list of strings


@dataclass
class Split:
    """One split: inputs and contiguous integer labels in ``[0, num_classes)``."""

    inputs: Inputs
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> Split:
        if isinstance(self.inputs, np.ndarray):
            inputs = self.inputs[indices]
        else:
            inputs = [self.inputs[i] for i in indices]
        return Split(inputs, self.labels[indices])


@dataclass
class TaskData:
    """A loaded target task. ``fingerprint`` identifies its content for cache and cell keys."""

    id: str
    modality: str
    class_names: list[str]
    train: Split
    val: Split
    test: Split
    fingerprint: dict[str, Any] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def stratified_split(
    labels: np.ndarray, seed: int, val_fraction: float, test_fraction: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic per-class split into train/val/test indices (each class in every split)."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        rng.shuffle(idx)
        n = len(idx)
        # a fraction of 0 means "this split is given elsewhere"; otherwise every class gets one
        n_test = max(1, round(n * test_fraction)) if test_fraction > 0 else 0
        n_val = max(1, round(n * val_fraction)) if val_fraction > 0 else 0
        if n - n_test - n_val < 1:
            raise DataError(
                f"class {int(cls)} has only {n} examples: too few for train/val/test splits "
                "(need at least 3)"
            )
        test.append(idx[:n_test])
        val.append(idx[n_test : n_test + n_val])
        train.append(idx[n_test + n_val :])
    return (
        np.sort(np.concatenate(train)),
        np.sort(np.concatenate(val)),
        np.sort(np.concatenate(test)),
    )


def encode_labels(raw: Any, origin: str) -> tuple[np.ndarray, list[str]]:
    """Map raw labels (ints or strings) to contiguous ids; reject NaN, empty and single-class."""
    values = list(raw)
    if not values:
        raise DataError(f"{origin}: no examples")
    if any(v is None or (isinstance(v, float) and not np.isfinite(v)) for v in values):
        raise DataError(f"{origin}: labels contain missing/NaN values")
    if all(isinstance(v, int | np.integer) for v in values):
        classes = sorted({int(v) for v in values})
        names = [str(c) for c in classes]
        lookup = {c: i for i, c in enumerate(classes)}
        labels = np.array([lookup[int(v)] for v in values], dtype=np.int64)
    else:
        names = sorted({str(v) for v in values})
        lookup_s = {c: i for i, c in enumerate(names)}
        labels = np.array([lookup_s[str(v)] for v in values], dtype=np.int64)
    if len(names) < 2:
        raise DataError(
            f"{origin}: only one class ({names[0]!r}); classification needs two or more"
        )
    return labels, names


def check_labels(labels: np.ndarray, num_classes: int, origin: str) -> np.ndarray:
    """Labels given as integer ids must lie in ``[0, num_classes)``."""
    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise DataError(f"{origin}: labels must be integers, got {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(
            f"{origin}: label {int(labels.max() if labels.max() >= num_classes else labels.min())} "
            f"is out of range for {num_classes} classes"
        )
    return labels.astype(np.int64)


def from_single_pool(
    task_id: str,
    modality: str,
    inputs: Inputs,
    labels: np.ndarray,
    class_names: list[str],
    seed: int,
    val_fraction: float,
    test_fraction: float,
    fingerprint: dict[str, Any],
) -> TaskData:
    """Split one labelled pool deterministically into a :class:`TaskData`."""
    pool = Split(inputs, labels)
    tr, va, te = stratified_split(labels, seed, val_fraction, test_fraction)
    return TaskData(
        task_id,
        modality,
        class_names,
        pool.subset(tr),
        pool.subset(va),
        pool.subset(te),
        fingerprint,
    )
