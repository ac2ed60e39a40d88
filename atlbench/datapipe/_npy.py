"""``.npy`` files written in pieces and published atomically, and opened memory-mapped.

A decoded-image cache or a feature matrix can be larger than memory, so it is never built in
RAM: rows go to a temp file in the destination's directory with ``pwrite`` (no mapping, so the
writer's resident memory stays flat), and :meth:`NpyWriter.commit` fsyncs and renames it into
place. A reader therefore finds either no file or a whole one; a crash mid-write leaves only a
temp file, which no reader opens and a later writer sweeps away once it is stale.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import time
from pathlib import Path
from types import TracebackType
from typing import Literal

import numpy as np

_CHUNK = 1 << 22
STALE_TEMP_S = 3600.0  # a writer touches its temp file with every row; an hour idle is a crash


class NpyWriter:
    """A C-ordered ``.npy`` of ``shape`` and ``dtype`` under construction at a temp path.

    Use as a context manager: leaving it by an exception removes the temp file, so nothing
    half-written is ever published; :meth:`commit` publishes it.
    """

    def __init__(self, path: Path, shape: tuple[int, ...], dtype: np.dtype | type) -> None:
        self.path = Path(path)
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale(self.path)
        self.tmp = self.path.with_name(
            f".{self.path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        )
        # O_EXCL on a fresh random name; mode 0o666 less the umask, like any output file
        self._fd = os.open(self.tmp, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o666)
        try:
            header = {
                "descr": np.lib.format.dtype_to_descr(self.dtype),
                "fortran_order": False,
                "shape": self.shape,
            }
            with os.fdopen(os.dup(self._fd), "wb") as handle:
                np.lib.format.write_array_header_1_0(handle, header)
                self.offset = handle.tell()
            self.row_bytes = int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize
            os.ftruncate(
                self._fd, self.offset + self.row_bytes * (self.shape[0] if self.shape else 0)
            )
        except BaseException:
            self.abort()
            raise

    def write(self, start: int, block: np.ndarray) -> None:
        """Rows ``start, start + 1, ...`` of the array."""
        block = np.ascontiguousarray(block, dtype=self.dtype)
        assert block.shape[1:] == self.shape[1:], (block.shape, self.shape)
        assert 0 <= start <= self.shape[0] - len(block)
        _pwrite_all(self._fd, block.data.cast("B"), self.offset + start * self.row_bytes)

    def write_rows(self, rows: np.ndarray, block: np.ndarray) -> None:
        """Row ``rows[i]`` of the array is ``block[i]`` (rows in any order)."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) and (np.diff(rows) == 1).all():  # one run: one write
            self.write(int(rows[0]), block)
            return
        block = np.ascontiguousarray(block, dtype=self.dtype)
        for row, values in zip(rows.tolist(), block, strict=True):
            self.write(row, values[None])

    def sha256(self) -> str:
        """sha256 of the whole file as written so far (read back in chunks, not mapped)."""
        digest = hashlib.sha256()
        size, offset = os.fstat(self._fd).st_size, 0
        while offset < size:
            chunk = os.pread(self._fd, min(_CHUNK, size - offset), offset)
            if not chunk:
                break
            digest.update(chunk)
            offset += len(chunk)
        return digest.hexdigest()

    def commit(self) -> None:
        """fsync and rename into place: from here on readers see the whole file."""
        os.fsync(self._fd)
        os.close(self._fd)
        self._fd = -1
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)

    def __enter__(self) -> NpyWriter:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        if kind is not None or self._fd >= 0:  # an error, or left without commit()
            self.abort()


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while len(data):
        done = os.pwrite(fd, data, offset)
        data, offset = data[done:], offset + done


def _sweep_stale(path: Path) -> None:
    """Remove temp files of ``path`` whose writer died (no write for :data:`STALE_TEMP_S`)."""
    now = time.time()
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > STALE_TEMP_S:
                tmp.unlink()


def open_npy(
    path: Path,
    shape: tuple[int, ...] | None = None,
    dtype: np.dtype | type | None = None,
    mode: Literal["r", "r+", "c"] = "r",
) -> np.memmap | None:
    """``np.load(path, mmap_mode=mode)`` when the file is whole and is what the caller expects
    (``shape``, ``dtype``), else None (missing, short or of another shape: rebuild it).
    ``mode="c"`` (copy-on-write) gives an array its reader may change without touching the file.
    """
    try:
        array = np.load(path, mmap_mode=mode, allow_pickle=False)
    except (OSError, ValueError):
        return None
    if not isinstance(array, np.memmap):
        return None
    if shape is not None and array.shape != tuple(shape):
        return None
    if dtype is not None and array.dtype != np.dtype(dtype):
        return None
    expected = array.offset + array.nbytes
    try:
        if os.path.getsize(path) != expected:
            return None
    except OSError:
        return None
    return array
