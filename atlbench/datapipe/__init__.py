"""Compact inputs until the batch: images stay uint8 until a batch is drawn.

- :func:`decoded_images`: a split's images decoded once into a uint8 ``.npy`` cache on disk,
  keyed by content and size, published atomically, memory-mapped on read;
- :class:`ImageRows`: index views over those rows (or an in-memory array); subsets never copy;
- :class:`ImageTransform`: an encoder's per-batch conversion, run on the training device;
- :func:`image_batches`: batches in the caller's order, streamed by a ``DataLoader`` with
  workers (and pinned memory for a GPU) when the split is large and on disk;
- :class:`NpyWriter` / :func:`open_npy`: large arrays (features) written in pieces, atomically,
  and read back memory-mapped.
"""

from atlbench.datapipe._cache import IMAGES_VERSION, decoded_images, image_cache_path
from atlbench.datapipe._npy import NpyWriter, open_npy
from atlbench.datapipe._rows import ImageRows, is_compact_images
from atlbench.datapipe._stream import (
    BatchStream,
    image_batches,
    loader_workers,
    stream_min_bytes,
    streams,
)
from atlbench.datapipe._transform import ImageTransform, normalise_images

__all__ = [
    "IMAGES_VERSION",
    "BatchStream",
    "ImageRows",
    "ImageTransform",
    "NpyWriter",
    "decoded_images",
    "image_batches",
    "image_cache_path",
    "is_compact_images",
    "loader_workers",
    "normalise_images",
    "open_npy",
    "stream_min_bytes",
    "streams",
]
