"""The allocator settings a worker applies: they take on glibc, and the threshold is the user's
to change or switch off (``ATLBENCH_LEAN_THRESHOLD``), in a fresh process each time."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from atlbench._heap import LEAN_THRESHOLD, THRESHOLD_ENV, mmap_threshold

PROBE = "from atlbench._heap import bound_heap; print(bound_heap())"


def _bound_heap_in_fresh_process(value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if k != THRESHOLD_ENV}
    if value is not None:
        env[THRESHOLD_ENV] = value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_threshold_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THRESHOLD_ENV, raising=False)
    assert mmap_threshold() == 0  # off unless asked: it costs kernel time
    monkeypatch.setenv(THRESHOLD_ENV, str(LEAN_THRESHOLD))
    assert mmap_threshold() == LEAN_THRESHOLD
    monkeypatch.setenv(THRESHOLD_ENV, "65536")
    assert mmap_threshold() == 65536
    monkeypatch.setenv(THRESHOLD_ENV, "0")
    assert mmap_threshold() == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_bound_heap_takes_only_when_asked() -> None:
    assert _bound_heap_in_fresh_process(str(LEAN_THRESHOLD)) == "True"
    assert _bound_heap_in_fresh_process(None) == "False"
    assert _bound_heap_in_fresh_process("0") == "False"
