"""The allocator settings a training process gets: a fixed mmap threshold with transparent huge
pages by default, set in ``GLIBC_TUNABLES`` by restarting the command line once (glibc reads them
only at start), the user's to change or switch off (``ATLBENCH_MMAP_THRESHOLD``). Whatever runs in
a fresh process runs in one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from atlbench import _heap
from atlbench._heap import (
    LEAN_THRESHOLD,
    THRESHOLD_ENV,
    TUNABLES_ENV,
    lean_tunables,
    mmap_threshold,
)

PROBE = "from atlbench._heap import bound_heap; print(bound_heap())"
LEAN = f"glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold={LEAN_THRESHOLD}"
GLIBC = (2, 36)  # new enough for glibc.malloc.hugetlb (2.35)

# Restarts itself with the lean tunables, then reports whether a 5 MiB block is still mapped on
# its own after a 6 MiB one was freed: glibc's dynamic threshold would have risen to 6 MiB and
# served it from the heap; a fixed 4 MiB threshold maps it.
RESTART = """
import ctypes, os
print("start", flush=True)
from atlbench._heap import restart_lean
restart_lean()
class Info(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = Info
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
libc.free(libc.malloc(6 << 20))
mapped = libc.mallinfo2().hblks
block = libc.malloc(5 << 20)
print(os.environ.get("GLIBC_TUNABLES"))
print(libc.mallinfo2().hblks - mapped)
"""


def _fresh_env(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in (THRESHOLD_ENV, TUNABLES_ENV)}
    return {**env, **values}


def _bound_heap_in_fresh_process(value: str | None) -> str:
    env = _fresh_env(**({} if value is None else {THRESHOLD_ENV: value}))
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_threshold_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(THRESHOLD_ENV, raising=False)
    assert mmap_threshold() == LEAN_THRESHOLD  # the default
    monkeypatch.setenv(THRESHOLD_ENV, "65536")
    assert mmap_threshold() == 65536
    monkeypatch.setenv(THRESHOLD_ENV, "0")
    assert mmap_threshold() == 0  # the opt-out: glibc's dynamic threshold
    assert mmap_threshold({THRESHOLD_ENV: "8388608"}) == 8388608


def test_lean_tunables_add_only_what_the_user_left_unset() -> None:
    assert lean_tunables({}, GLIBC) == LEAN
    assert lean_tunables({THRESHOLD_ENV: "8388608"}, GLIBC) == (
        "glibc.malloc.hugetlb=1:glibc.malloc.mmap_threshold=8388608"
    )
    assert lean_tunables({TUNABLES_ENV: "glibc.malloc.arena_max=2"}, GLIBC) == (
        f"glibc.malloc.arena_max=2:{LEAN}"
    )
    assert lean_tunables({TUNABLES_ENV: "glibc.malloc.hugetlb=0"}, GLIBC) == (
        f"glibc.malloc.hugetlb=0:glibc.malloc.mmap_threshold={LEAN_THRESHOLD}"
    )
    assert lean_tunables({TUNABLES_ENV: LEAN}, GLIBC) is None  # nothing to add: no restart loop
    assert lean_tunables({THRESHOLD_ENV: "0"}, GLIBC) is None  # opted out
    assert lean_tunables({}, (2, 34)) is None  # no hugetlb tunable: the threshold alone costs CPU


def test_only_the_program_restarts(monkeypatch: pytest.MonkeyPatch) -> None:
    """``atlbench ...`` restarts; ``main(argv)`` called from Python (tests, notebooks) never."""
    from atlbench.cli import main

    calls: list[int] = []
    monkeypatch.setattr(_heap, "restart_lean", lambda: calls.append(1))
    with pytest.raises(SystemExit):
        main(["--bogus-option"])
    assert calls == []
    monkeypatch.setattr(sys, "argv", ["/somewhere/bin/atlbench", "--bogus-option"])
    with pytest.raises(SystemExit):
        main()
    assert calls == [1]


@pytest.mark.skipif(
    _heap._glibc_version() is None or _heap._glibc_version() < _heap.HUGETLB_SINCE,  # type: ignore[operator]
    reason="glibc >= 2.35",
)
def test_restart_sets_the_tunables_once_and_glibc_takes_them(tmp_path: Path) -> None:
    script = tmp_path / "probe.py"
    script.write_text(RESTART)

    def run(**values: str) -> list[str]:
        command = [sys.executable, str(script)]
        out = subprocess.run(command, env=_fresh_env(**values), capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.split()

    assert run() == ["start", "start", LEAN, "1"]  # restarted once; the 5 MiB block is mapped
    assert run(**{THRESHOLD_ENV: "0"}) == ["start", "None", "0"]  # no restart, glibc's own


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_bound_heap_takes_only_when_asked() -> None:
    assert _bound_heap_in_fresh_process(str(LEAN_THRESHOLD)) == "True"
    assert _bound_heap_in_fresh_process(None) == "False"  # a library caller's process: untouched
    assert _bound_heap_in_fresh_process("0") == "False"
