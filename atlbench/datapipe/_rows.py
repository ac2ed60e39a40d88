"""Compact images: uint8 rows of an in-memory array or of a decoded ``.npy`` on disk.

Splits, label budgets and hold-outs are index views (:class:`ImageRows`): taking a subset never
copies pixels. Rows are read when a batch is drawn. On disk the file is the memory-mapped
``.npy`` of :mod:`atlbench.datapipe._cache`; batches are read with ``pread`` rather than through
the mapping, so pixels already used sit in the page cache, not in the process's resident memory
(a mapping that had touched every row of a 20,000-image split would count 3 GiB there).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from atlbench.errors import DataError


class NpyRows:
    """One ``.npy`` of uint8 rows on disk, read by ``pread``; one descriptor per process."""

    def __init__(self, path: Path, shape: tuple[int, ...], offset: int) -> None:
        self.path, self.shape, self.offset = Path(path), tuple(shape), int(offset)
        self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64))
        self._fd, self._pid = -1, -1

    def _descriptor(self) -> int:
        if self._pid != os.getpid():  # a fresh process (a DataLoader worker): its own descriptor
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def read(self, positions: np.ndarray) -> np.ndarray:
        """Rows ``positions`` (any order); consecutive runs are read with one call."""
        out = np.empty((len(positions), *self.shape[1:]), dtype=np.uint8)
        if not len(positions):
            return out
        fd = self._descriptor()
        # split where the next position is not the previous plus one: one pread per run
        breaks = np.flatnonzero(np.diff(positions) != 1) + 1
        starts = np.concatenate([[0], breaks]).tolist()
        stops = [*breaks.tolist(), len(positions)]
        for a, b in zip(starts, stops, strict=True):
            buffer = out[a:b].data.cast("B")
            offset = self.offset + int(positions[a]) * self.row_bytes
            while len(buffer):
                got = os.preadv(fd, [buffer], offset)
                if got <= 0:
                    raise DataError(f"{self.path}: decoded-image cache is shorter than its header")
                buffer, offset = buffer[got:], offset + got
        return out

    def memmap(self) -> np.memmap:
        return np.load(self.path, mmap_mode="r", allow_pickle=False)

    def __getstate__(self) -> dict[str, Any]:
        return self.__dict__ | {"_fd": -1, "_pid": -1}

    def __del__(self) -> None:
        if self._fd >= 0 and self._pid == os.getpid():
            os.close(self._fd)


class ImageRows:
    """uint8 images ``(N, H, W, C)``: ``rows`` of a base array (in memory, or a file on disk).

    It behaves like the array where splits use one: ``len``, ``shape``, ``dtype``, indexing
    (an integer gives an image; a slice or index array gives another view, without copying) and
    ``np.asarray`` (reads every row: only for small splits). :meth:`read` is how batches are
    drawn.
    """

    ndim = 4
    dtype = np.dtype(np.uint8)

    def __init__(self, base: np.ndarray | NpyRows, rows: np.ndarray | None = None) -> None:
        self.base = base
        self.rows = rows  # None: every row of the base, in order

    @classmethod
    def of(cls, images: Any) -> ImageRows:
        """A view of every row of ``images`` (an :class:`ImageRows` or a uint8 NHWC array)."""
        if isinstance(images, ImageRows):
            return images
        assert is_compact_images(images), "not a uint8 (N, H, W, C) array"
        return cls(images)

    @property
    def on_disk(self) -> bool:
        return isinstance(self.base, NpyRows)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self), *self.base.shape[1:])

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        return int(self.base.shape[0]) if self.rows is None else len(self.rows)

    def positions(self, index: Any = None) -> np.ndarray:
        """Base-row numbers of ``index`` (positions in this view; all when None)."""
        if index is None:
            return np.arange(len(self)) if self.rows is None else self.rows
        index = _as_index(index, len(self))
        return index if self.rows is None else self.rows[index]

    def read(self, index: Any = None) -> np.ndarray:
        """Rows ``index`` of this view as one contiguous uint8 array."""
        positions = self.positions(index)
        if isinstance(self.base, NpyRows):
            return self.base.read(positions)
        return self.base[positions]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, int | np.integer):
            return self.read(np.array([int(key)]))[0]
        return ImageRows(self.base, self.positions(key))

    def __iter__(self) -> Any:
        for start in range(0, len(self), 256):
            yield from self.read(np.arange(start, min(len(self), start + 256)))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = self.read()
        return out if dtype is None else out.astype(dtype)

    def tensor(self, index: Any = None) -> torch.Tensor:
        """Rows ``index`` as a uint8 NHWC tensor (what a batch carries until the device)."""
        return torch.from_numpy(self.read(index))


def _as_index(index: Any, n: int) -> np.ndarray:
    if isinstance(index, torch.Tensor):
        index = index.numpy()
    if isinstance(index, slice):
        return np.arange(n)[index]
    out = np.asarray(index)
    if out.dtype == bool:
        return np.flatnonzero(out)
    out = out.astype(np.int64, copy=False).reshape(-1)
    return np.where(out < 0, out + n, out)


def is_compact_images(inputs: Any) -> bool:
    """A uint8 ``(N, H, W, C)`` array or :class:`ImageRows`: what a per-batch transform takes."""
    if isinstance(inputs, ImageRows):
        return True
    return isinstance(inputs, np.ndarray) and inputs.ndim == 4 and inputs.dtype == np.uint8
