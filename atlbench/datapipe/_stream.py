"""Batches of compact images, streamed by a ``DataLoader`` when the split is large and on disk.

Worker processes read the next batches' rows while the model computes, into pinned memory when
the batches go to a GPU. The batch order is the caller's (a batch sampler over the run's own
permutation), and augmentation stays with the caller's generator, so a streamed epoch computes
exactly what the in-process loop computes. Small or in-memory splits use the in-process loop:
starting workers would cost more than it hides.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from atlbench.datapipe._rows import ImageRows

STREAM_MIN_BYTES = 256 << 20
"""An on-disk split at least this large streams through worker processes (the
``ATLBENCH_STREAM_MIN_BYTES`` environment variable overrides it; 0 streams every on-disk split)."""


def stream_min_bytes() -> int:
    return int(os.environ.get("ATLBENCH_STREAM_MIN_BYTES", STREAM_MIN_BYTES))


def loader_workers() -> int:
    """Reader processes per loader: ``ATLBENCH_LOADER_WORKERS``, else half this process's
    compute threads (1-4; a sweep with ``--jobs`` gives each job its share of the cores)."""
    value = os.environ.get("ATLBENCH_LOADER_WORKERS")
    if value is not None:
        return max(0, int(value))
    return min(4, max(1, torch.get_num_threads() // 2))


def streams(images: ImageRows) -> bool:
    """Whether batches of ``images`` come from a DataLoader (large and on disk)."""
    return images.on_disk and images.nbytes >= stream_min_bytes()


class _BatchReader(torch.utils.data.Dataset):
    """``reader[positions]`` is one whole batch: its rows as a uint8 tensor."""

    def __init__(self, images: ImageRows) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: np.ndarray) -> torch.Tensor:
        return self.images.tensor(index)


class _Batches(torch.utils.data.Sampler):
    """The batches of the current pass; set before each pass (see :class:`BatchStream`)."""

    def __init__(self) -> None:
        self.chunks: list[np.ndarray] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)


class BatchStream:
    """A ``DataLoader`` over one split's rows whose workers live as long as the split: each
    pass (an epoch, an evaluation) only hands them its list of batches, so workers are started
    once, not once per epoch."""

    def __init__(self, images: ImageRows, pin: bool, workers: int) -> None:
        self.images = images
        self.busy = False  # a pass is under way: a nested one reads in-process
        self.batches = _Batches()
        self.loader = torch.utils.data.DataLoader(
            _BatchReader(images),
            batch_size=None,  # the sampler hands out whole batches
            sampler=self.batches,
            num_workers=workers,
            pin_memory=pin,
            prefetch_factor=2,
            persistent_workers=True,
        )

    def __call__(self, chunks: Sequence[np.ndarray]) -> Iterator[torch.Tensor]:
        if self.busy:  # the workers serve one pass at a time
            yield from (self.images.tensor(chunk) for chunk in chunks)
            return
        self.busy = True
        try:
            self.batches.chunks = list(chunks)
            yield from self.loader
        finally:
            self.busy = False


def image_batches(
    images: ImageRows,
    chunks: Sequence[np.ndarray],
    pin: bool = False,
    streams_by_pin: dict[bool, BatchStream] | None = None,
) -> Iterator[torch.Tensor]:
    """uint8 NHWC batches of ``images``, batch ``i`` holding rows ``chunks[i]``, in order.

    Large on-disk splits are read by worker processes (into pinned memory with ``pin``);
    ``streams_by_pin`` keeps their loader between passes. Anything else is read in-process.
    """
    workers = loader_workers() if streams(images) else 0
    if workers == 0:
        for chunk in chunks:
            yield images.tensor(chunk)
        return
    if streams_by_pin is None:
        streams_by_pin = {}
    if pin not in streams_by_pin:
        streams_by_pin[pin] = BatchStream(images, pin, workers)
    yield from streams_by_pin[pin](chunks)
