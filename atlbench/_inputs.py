"""Model-ready inputs, prepared once per (preprocessing, target, split) and sliced by index.

Images are not prepared here: they stay compact uint8 rows (:mod:`atlbench.datapipe`) and the
encoder's per-batch transform converts each batch on the device. Text is tokenised once: every
trial of every cell used to tokenise the same examples again, and tokens depend only on the
tokenizer and maximum length, the target's content and the split, so they are prepared once per
process and each stage takes the rows it needs. Frozen-prefix activations
(:mod:`atlbench._frozen_prefix`) are cached the same way.

The cache is an LRU bounded in bytes: a sweep runs target by target, so the entries asked for
again are the recent ones.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import torch

from atlbench.datapipe import ImageRows, ImageTransform, is_compact_images
from atlbench.sources._base import Encoder
from atlbench.targets._base import TaskData
from atlbench.train import PreparedSplit, concat_batches

CHUNK = 512


class TensorCache:
    """An LRU of prepared tensors (or dicts of tensors) bounded by their total bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self.hits = self.misses = 0

    def get(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if key in self._items:
            self._items.move_to_end(key)
            self.hits += 1
            return self._items[key]
        self.misses += 1
        value = make()
        self._items[key] = value
        while len(self._items) > 1 and self.nbytes() > self.max_bytes:
            self._items.popitem(last=False)
        return value

    def nbytes(self) -> int:
        return sum(_nbytes(v) for v in self._items.values())

    def clear(self) -> None:
        self._items.clear()


def _nbytes(value: Any) -> int:
    if isinstance(value, torch.Tensor):
        return value.element_size() * value.nelement()
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    return 0


PREPARED = TensorCache(1 << 30)  # 1 GiB of tokenised text (or images of an encoder without a
# per-batch transform) per process


def take(data: Any, idx: torch.Tensor) -> Any:
    """Rows ``idx`` of a prepared tensor or dict of tensors, or a view of compact image rows."""
    if isinstance(data, ImageRows | torch.Tensor):
        return data[idx]
    return {k: v[idx] for k, v in data.items()}


def transform_for(encoder: Encoder, data: Any) -> ImageTransform | None:
    """The per-batch step that finishes ``data`` (compact image rows), else None."""
    return encoder.image_transform() if isinstance(data, ImageRows) else None


def prepare_all(encoder: Encoder, task: TaskData, split: str) -> Any:
    """The whole split, prepared by ``encoder`` (memoised by preprocessing and content).

    Images for an encoder with a per-batch :meth:`~atlbench.sources._base.Encoder.image_transform`
    are not prepared at all: they stay the split's compact uint8 rows (:class:`ImageRows`)."""
    inputs = task.split(split).inputs
    if is_compact_images(inputs) and encoder.image_transform() is not None:
        return ImageRows.of(inputs)

    def make() -> Any:
        return concat_batches(
            [encoder.prepare(inputs[i : i + CHUNK]) for i in range(0, len(inputs), CHUNK)]
        )

    identity = encoder.preprocessing()
    if identity is None or not task.fingerprint:  # nothing says what the data depend on
        return make()
    key = ("prepared", identity, repr(task.fingerprint), split, len(task.split(split)))
    return PREPARED.get(key, make)


def prepared(
    encoder: Encoder, task: TaskData, split: str, idx: np.ndarray | None, labels: np.ndarray
) -> PreparedSplit:
    """Rows ``idx`` (all when None) of a split, model-ready, with their ``labels``."""
    data = prepare_all(encoder, task, split)
    if idx is not None:
        data = take(data, torch.as_tensor(np.asarray(idx, dtype=np.int64)))
    return PreparedSplit.from_tensors(data, labels, transform_for(encoder, data))
