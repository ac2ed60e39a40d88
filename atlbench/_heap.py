"""Keep a long sweep's resident memory near what its live objects need (glibc's allocator).

A cell frees hundreds of megabytes (trial weights, optimizer state, activations), but glibc keeps
freed blocks in per-thread arenas and returns them to the OS only from the top of each heap, so
a worker's resident size ratchets up cell after cell. Two arenas and a trim after each cell took
a text worker's size between cells from 1.46 GiB to 1.17 GiB (the text quickstart's cells in one
process); a trim takes about 3 ms. On other C libraries these calls are no-ops.

Within one training step the same ratchet costs more: glibc raises its mmap threshold to the
largest block freed so far (up to 32 MiB), so a 224 px batch's activations, mostly 4-26 MiB each,
end up in the heap, where a step's mix of frees and allocations leaves holes that the next step
cannot fill. A fixed threshold (:func:`bound_heap`, opt-in with ``ATLBENCH_MMAP_THRESHOLD``, in
bytes) serves every block above it from its own mapping, returned whole on free. It is a trade,
so it is off by default: a ``resnet18`` training step at batch 32 on the CPU peaked at 1.61 GiB
instead of 1.95 GiB with 4 MiB, but every step then faults in its activations afresh, 1.3 s more
kernel time on 2.9 s of CPU time (``tests/benchmarks/test_bench_heap.py`` measures both).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from functools import lru_cache

M_ARENA_MAX = -8  # mallopt parameter numbers, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
LEAN_THRESHOLD = 4 << 20  # the value measured in the benchmark: blocks from 4 MiB get a mapping
THRESHOLD_ENV = "ATLBENCH_MMAP_THRESHOLD"  # bytes; unset or 0: glibc's dynamic threshold


@lru_cache(maxsize=1)  # looked up once per process, not once per cell
def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None


def limit_arenas(n: int = 2) -> bool:
    """Cap glibc's malloc arenas for threads started from now on; whether the call took."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, n))


def trim() -> bool:
    """Give freed heap memory back to the OS; whether any was released."""
    libc = _libc()
    return bool(libc is not None and libc.malloc_trim(0))


def mmap_threshold() -> int:
    """The fixed mmap threshold in bytes (``ATLBENCH_MMAP_THRESHOLD``; 0: glibc's own)."""
    raw = os.environ.get(THRESHOLD_ENV, "").strip()
    return int(raw) if raw else 0


def bound_heap() -> bool:
    """Fix glibc's mmap threshold if the user asked for it (see the module docstring); whether
    the call took. Placement only: the numbers a cell computes do not change (torch aligns every
    block the same way; the benchmark checks the weights)."""
    libc = _libc()
    threshold = mmap_threshold()
    return bool(libc is not None and threshold > 0 and libc.mallopt(M_MMAP_THRESHOLD, threshold))
