"""The decoded-image cache: a split's images decoded once, to one uint8 ``.npy`` on disk.

Keyed by what determines the pixels: the target's content (file digests, a dataset's
fingerprint), which part of it, the image size and :data:`IMAGES_VERSION` (the decoder). Images
are decoded one file at a time straight into the file under construction (never all in memory)
and the file is published atomically (:class:`~atlbench.datapipe._npy.NpyWriter`): a reader sees
the whole file or none, and an interrupted build is redone by the next load. Editing the data
changes the key, so stale entries are simply never read again.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from atlbench._cache import cache_dir, content_hash
from atlbench.datapipe._npy import NpyWriter, open_npy
from atlbench.datapipe._rows import ImageRows, NpyRows

IMAGES_VERSION = 1  # bump when decoding changes (resampling filter, colour conversion)


def image_cache_path(key: Mapping[str, Any], n: int, size: int) -> Path:
    """Where the decoded images of ``key`` at ``size`` px live."""
    ident = {"key": dict(key), "n": n, "size": size, "v": IMAGES_VERSION}
    return cache_dir() / "images" / f"{content_hash(ident, 24)}.npy"


def open_decoded(path: Path, shape: tuple[int, ...]) -> ImageRows | None:
    """The published cache file at ``path`` as :class:`ImageRows`, if whole and of ``shape``."""
    mapped = open_npy(path, shape, np.uint8)
    if mapped is None:
        return None
    offset = int(mapped.offset)
    del mapped  # the header is checked; batches are read with pread (see _rows)
    return ImageRows(NpyRows(path, shape, offset))


def decoded_images(
    key: Mapping[str, Any],
    n: int,
    size: int,
    decode: Callable[[int], np.ndarray],
) -> ImageRows:
    """Images ``decode(0..n-1)`` (each uint8 ``size x size x 3``), from the cache or decoded now.

    ``decode`` raises :class:`~atlbench.errors.DataError` for an unreadable file; the partial
    build is then discarded.
    """
    shape = (n, size, size, 3)
    if n == 0:
        return ImageRows(np.zeros(shape, dtype=np.uint8))
    path = image_cache_path(key, n, size)
    found = open_decoded(path, shape)
    if found is not None:
        return found
    with NpyWriter(path, shape, np.uint8) as writer:
        for i in range(n):
            writer.write(i, decode(i)[None])
        writer.commit()
    built = open_decoded(path, shape)
    assert built is not None, f"{path}: just written, but not readable"
    return built
