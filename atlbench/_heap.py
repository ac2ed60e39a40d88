"""Keep a long sweep's resident memory near what its live objects need (glibc's allocator).

A cell frees hundreds of megabytes (trial weights, optimizer state, activations), but glibc keeps
freed blocks in per-thread arenas and returns them to the OS only from the top of each heap, so
a worker's resident size ratchets up cell after cell. Two arenas and a trim after each cell took
a text worker's size between cells from 1.46 GiB to 1.17 GiB (the text quickstart's cells in one
process); a trim takes about 3 ms. On other C libraries these calls are no-ops.

Within one training step the same ratchet costs more: glibc raises its mmap threshold to the
largest block freed so far (up to 32 MiB), so a 224 px batch's activations, mostly 4-26 MiB each,
end up in the heap, where a step's mix of frees and allocations leaves holes that the next step
cannot fill (a ``resnet18`` sweep at batch 32 peaked at 2.22 GiB). A fixed threshold of 4 MiB
serves every block above it from its own mapping, returned whole on free; alone it costs CPU, as
every step faults its activations in again 4 KiB at a time, but with glibc's transparent huge
pages (``glibc.malloc.hugetlb=1``, glibc 2.35 on) a fault brings in 2 MiB.
``tests/benchmarks/test_bench_heap.py`` measures the settings side by side.

glibc reads both only at process start (``GLIBC_TUNABLES``), so the command line restarts itself
once with them (:func:`restart_lean`); spawned workers inherit the environment. The user's own
``GLIBC_TUNABLES`` entries win, ``ATLBENCH_MMAP_THRESHOLD`` (bytes) picks another threshold, and
``ATLBENCH_MMAP_THRESHOLD=0`` keeps glibc's defaults. A library caller's process is not
restarted: there :func:`bound_heap` sets the threshold only if the variable is set.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path

M_ARENA_MAX = -8  # mallopt parameter numbers, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
LEAN_THRESHOLD = 4 << 20  # the value measured in the benchmark: blocks from 4 MiB get a mapping
THRESHOLD_ENV = "ATLBENCH_MMAP_THRESHOLD"  # bytes; unset: LEAN_THRESHOLD; 0: glibc's own
TUNABLES_ENV = "GLIBC_TUNABLES"
HUGETLB = "glibc.malloc.hugetlb"  # 1: madvise(MADV_HUGEPAGE) on what malloc maps (glibc >= 2.35)
MMAP_THRESHOLD = "glibc.malloc.mmap_threshold"
HUGETLB_SINCE = (2, 35)


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


def mmap_threshold(environ: Mapping[str, str] | None = None) -> int:
    """The fixed mmap threshold in bytes (``ATLBENCH_MMAP_THRESHOLD``; unset: 4 MiB; 0: glibc's
    dynamic one)."""
    raw = (os.environ if environ is None else environ).get(THRESHOLD_ENV, "").strip()
    return int(raw) if raw else LEAN_THRESHOLD


def _glibc_version() -> tuple[int, int] | None:
    try:
        name, version = os.confstr("CS_GNU_LIBC_VERSION").split()  # type: ignore[union-attr]
        major, minor = version.split(".")[:2]
        return (int(major), int(minor)) if name == "glibc" else None
    except (AttributeError, OSError, ValueError):
        return None


def lean_tunables(environ: Mapping[str, str], glibc: tuple[int, int] | None = None) -> str | None:
    """The ``GLIBC_TUNABLES`` a training process should start with, or None when there is nothing
    to add: not glibc >= 2.35 (``glibc`` overrides the detected version, for tests), opted out
    with ``ATLBENCH_MMAP_THRESHOLD=0``, or both settings already named (the user's values win)."""
    glibc = _glibc_version() if glibc is None else glibc
    threshold = mmap_threshold(environ)
    if glibc is None or glibc < HUGETLB_SINCE or threshold <= 0:
        return None
    current = environ.get(TUNABLES_ENV, "")
    named = {item.split("=", 1)[0] for item in current.split(":") if item}
    wanted = {HUGETLB: "1", MMAP_THRESHOLD: str(threshold)}
    added = [f"{name}={value}" for name, value in wanted.items() if name not in named]
    return ":".join([current, *added] if current else added) if added else None


def restart_lean(argv: Sequence[str] | None = None) -> None:
    """Replace this process, once, by the same command with :func:`lean_tunables` in its
    environment; returns only when there is nothing to add. Only for a program started from the
    command line: ``argv`` is its full command (``sys.orig_argv``: interpreter, flags, script)."""
    value = lean_tunables(os.environ)
    command = list(sys.orig_argv if argv is None else argv)
    if value is None or len(command) < 2 or not Path(command[0]).exists():
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *command[1:]], {**os.environ, TUNABLES_ENV: value})


def bound_heap() -> bool:
    """Fix glibc's mmap threshold if ``ATLBENCH_MMAP_THRESHOLD`` asks for one (a process that
    :func:`restart_lean` started has it already); whether the call took. Placement only: the
    numbers a cell computes do not change (torch aligns every block the same way; the benchmark
    checks the weights)."""
    libc = _libc()
    if libc is None or not os.environ.get(THRESHOLD_ENV, "").strip():
        return False
    threshold = mmap_threshold()
    return bool(threshold > 0 and libc.mallopt(M_MMAP_THRESHOLD, threshold))
