"""What every target task looks like: labelled train/val/test splits plus a content fingerprint."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Generic, TypeVar

import numpy as np
from pydantic import BaseModel

from atlbench._cache import content_hash
from atlbench.errors import AtlbenchError, DataError

# uint8 array (N, H, W, 3) or ImageRows over one (atlbench.datapipe: in memory or the decoded-image
# cache on disk), a list of uint8 HWC arrays, or a list of strings
Inputs = Any


@dataclass
class Split:
    """One split: inputs and contiguous integer labels in ``[0, num_classes)``."""

    inputs: Inputs
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: np.ndarray) -> Split:
        if isinstance(self.inputs, list | tuple):
            inputs = [self.inputs[i] for i in indices]
        else:  # an array, or compact image rows (a view: no pixels are copied)
            inputs = self.inputs[indices]
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

    def masked(self, labelled: np.ndarray, keep_val_labels: bool) -> TaskData:
        """A copy whose labels a strategy may not read are -1: train labels outside the budget,
        all test labels and (under budgeted validation) the validation split's labels.

        Strategies get this copy; the runner scores predictions against the real labels. A
        strategy that read a hidden label would train on class -1 and fail loudly.
        """
        train = np.full(len(self.train), -1, dtype=np.int64)
        train[labelled] = self.train.labels[labelled]
        val = self.val.labels if keep_val_labels else np.full(len(self.val), -1, dtype=np.int64)
        return replace(
            self,
            train=Split(self.train.inputs, train),
            val=Split(self.val.inputs, val),
            test=Split(self.test.inputs, np.full(len(self.test), -1, dtype=np.int64)),
        )


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


def assemble_splits(
    task_id: str,
    modality: str,
    class_names: list[str],
    given: dict[str, Split],
    seed: int,
    val_fraction: float,
    test_fraction: float,
    fingerprint: dict[str, Any],
) -> TaskData:
    """A :class:`TaskData` from the splits a dataset ships; missing ``val``/``test`` are carved
    out of ``train``, stratified. A given test split is never reused for validation (selection
    on the scored split would leak)."""
    splits = dict(given)
    if "val" not in splits or "test" not in splits:
        val_f = 0.0 if "val" in splits else val_fraction
        test_f = 0.0 if "test" in splits else test_fraction
        tr, va, te = stratified_split(splits["train"].labels, seed, val_f, test_f)
        full = splits["train"]
        splits["train"] = full.subset(tr)
        splits.setdefault("val", full.subset(va))
        splits.setdefault("test", full.subset(te))
    return TaskData(
        task_id,
        modality,
        class_names,
        splits["train"],
        splits["val"],
        splits["test"],
        fingerprint,
    )


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


# a target kind's params model (``BuiltinParams``, ``CSVParams``, ...)
TargetParamsT = TypeVar("TargetParamsT", bound=BaseModel)


class TargetKind(Generic[TargetParamsT]):
    """One kind of target (builtin, folder, csv, hf_dataset): its params and how to load them.

    Subclasses register with ``@register_target("name")`` in their own module and name their
    params model (``class CSVTarget(TargetKind[CSVParams])`` with ``Params = CSVParams``).
    ``content`` says what identifies the data without loading it (file digests, generator
    versions): it enters every cell key, so editing a dataset re-runs exactly the cells that
    used it.
    """

    name: ClassVar[str]
    Params: ClassVar[type[TargetParamsT]]

    @classmethod
    def modality(cls, params: TargetParamsT) -> str:
        raise NotImplementedError

    @classmethod
    def content(cls, params: TargetParamsT) -> dict[str, Any]:
        return {"params": params.model_dump()}

    @classmethod
    def load(cls, target_id: str, params: TargetParamsT, split_seed: int | None = None) -> TaskData:
        """Load the splits; ``split_seed`` (``resample_splits: true``) replaces the params'
        seed for every split atlbench draws itself."""
        raise NotImplementedError


_LOADED: dict[str, TaskData] = {}


@dataclass(frozen=True, eq=False)
class Target(Generic[TargetParamsT]):
    """A resolved target: validated params, modality and content fingerprint; loads on demand."""

    id: str
    kind: str
    params: TargetParamsT
    modality: str
    fingerprint: dict[str, Any]
    loader: Callable[[str, TargetParamsT, int | None], TaskData] = field(repr=False)

    def content(self, split_seed: int | None = None) -> dict[str, Any]:
        """What identifies the loaded splits (cache and cell keys)."""
        if split_seed is None:
            return self.fingerprint
        return self.fingerprint | {"split_seed": split_seed}

    def load(self, split_seed: int | None = None) -> TaskData:
        """The task's splits (memoised per process by content); every loader failure is a
        one-line :class:`DataError` naming the target."""
        fingerprint = self.content(split_seed)
        key = content_hash(fingerprint) + "/" + self.id
        if key not in _LOADED:
            try:
                task = self.loader(self.id, self.params, split_seed)
            except AtlbenchError as err:
                raise DataError(f"target {self.id!r}: {err}") from None
            except (ValueError, OSError, KeyError, TypeError, RuntimeError) as err:
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise DataError(f"target {self.id!r}: {type(err).__name__}: {first}") from None
            _LOADED[key] = replace(task, fingerprint=fingerprint)
        return _LOADED[key]
