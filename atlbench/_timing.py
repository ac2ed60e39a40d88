"""One honest clock: CUDA events on GPU (queued work is timed, not launched), else perf_counter.

Also peak memory (``torch.cuda.max_memory_allocated`` on GPU, sampled process RSS on CPU).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import torch


class DeviceClock:
    """Accumulating named timers; on CUDA each section is bracketed by recorded events.

    Event pairs are resolved lazily (one synchronise at :meth:`seconds`), so timing adds no
    per-step host-device stalls.
    """

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._pending: dict[str, list[tuple[torch.cuda.Event, torch.cuda.Event]]] = {}
        self._totals: dict[str, float] = {}

    @contextmanager
    def section(self, name: str) -> Iterator[None]:
        if self.cuda:
            # Record on *this* device's current stream: a bare ``Event.record()`` uses the current
            # device, which is not ours when a cell runs on cuda:1 while cuda:0 is current.
            stream = torch.cuda.current_stream(self.device)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            try:
                yield
            finally:
                end.record(torch.cuda.current_stream(self.device))
                self._pending.setdefault(name, []).append((start, end))
        else:
            t0 = time.perf_counter()
            try:
                yield
            finally:
                self._totals[name] = self._totals.get(name, 0.0) + time.perf_counter() - t0

    def seconds(self, name: str) -> float:
        """Total seconds spent in ``name`` so far (synchronises CUDA once if needed)."""
        pending = self._pending.pop(name, [])
        if pending:
            # ``elapsed_time`` needs both events completed; one device sync resolves them all.
            torch.cuda.synchronize(self.device)
            extra = sum(s.elapsed_time(e) for s, e in pending) / 1000.0
            self._totals[name] = self._totals.get(name, 0.0) + extra
        return self._totals.get(name, 0.0)


class PeakMemory:
    """Peak memory of a cell: CUDA allocator peak, or the highest sampled RSS on CPU."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self._peak_rss = 0
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        self.sample()

    def sample(self) -> None:
        if self.device.type != "cuda":
            import psutil

            self._peak_rss = max(self._peak_rss, psutil.Process().memory_info().rss)

    def peak_mb(self) -> float:
        if self.device.type == "cuda":
            return torch.cuda.max_memory_allocated(self.device) / 2**20
        self.sample()
        return self._peak_rss / 2**20


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU."""
    from atlbench.errors import AtlbenchError

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise AtlbenchError(f"unknown device {name!r}; use 'auto', 'cpu' or 'cuda[:N]'") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise AtlbenchError(
            f"device {name!r} requested but CUDA is not available; use 'auto' or 'cpu'"
        )
    return device


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return "cpu"
