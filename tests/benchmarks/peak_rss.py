"""Peak resident memory of a command and every process it starts, sampled every 0.2 s.

    python tests/benchmarks/peak_rss.py atlbench sweep /tmp/mem.yaml --jobs 1 --quiet

Prints the largest resident set any single process reached (the figure to plan a machine per
process with) and the largest sum over the process tree at one moment (DataLoader workers
included; shared library pages are counted once per process there, so it over-states).
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time

import psutil


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    started = time.perf_counter()
    proc = subprocess.Popen(argv)
    root = psutil.Process(proc.pid)
    largest = total = 0
    while proc.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            sizes = []
            for p in tree:
                with contextlib.suppress(psutil.Error):
                    sizes.append(p.memory_info().rss)
            largest, total = max(largest, max(sizes, default=0)), max(total, sum(sizes))
        except psutil.Error:
            pass
        time.sleep(0.2)
    wall = time.perf_counter() - started
    print(
        f"peak-rss: largest process {largest / 2**30:.2f} GiB, process tree "
        f"{total / 2**30:.2f} GiB, wall {wall:.0f} s, exit {proc.returncode}",
        flush=True,
    )
    return proc.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
