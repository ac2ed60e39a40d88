"""One compute thread per process for CPU work, so a result does not depend on ``--jobs`` or on
the number of cores.

PyTorch splits a CPU reduction (a convolution's weight gradient over the batch, a long sum) into
per-thread partial sums, so the rounding of the result depends on how many threads the process
has, and training grows that rounding into differences of the size of a seed-to-seed difference:
a ``--jobs 1`` re-run of the quickstart (one process of two threads instead of two of one)
changed 16 of its 72 verdicts (issue #23). With one thread in every process that trains or
extracts features, a CPU sweep computes the same floats with any ``--jobs`` and on any number of
cores of the same CPU; the parallelism comes from worker processes, which for these small models
is also the faster choice (:mod:`atlbench.executors.local`). A GPU run is left alone: its
kernels are not bitwise reproducible across thread counts anyway, and its CPU threads only feed
it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

CPU_THREADS = 1
"""Threads of torch and of the BLAS/OpenMP pools while CPU work runs."""


@contextmanager
def cpu_threads(device: torch.device) -> Iterator[None]:
    """Run the block with :data:`CPU_THREADS` threads if ``device`` is a CPU; restore after."""
    if device.type != "cpu":
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(CPU_THREADS)
    try:
        with threadpool_limits(CPU_THREADS):
            yield
    finally:
        torch.set_num_threads(before)
