"""Peak memory and step cost of a CPU training step under glibc's default allocator settings, a
fixed 4 MiB mmap threshold alone, and the default a sweep runs with: that threshold with glibc's
transparent huge pages (:func:`atlbench._heap.lean_tunables`; issue 26, item 4).

Each setting runs in its own fresh process (peak resident size only grows within a process):
``resnet18`` (timm, random init) takes a few AdamW steps at batch 32 on 224 px inputs. Reported
per setting: the process's peak RSS, and the median step's user and kernel CPU seconds (CPU time,
not wall time, so that a busy machine moves the figures less). The settings alternate over
rounds. Asserted: every setting ends with bit-identical weights (placement never changes numbers).

Run::

    HF_HUB_OFFLINE=1 python -m pytest tests/benchmarks/test_bench_heap.py -s -p no:cacheprovider
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import Any

import pytest

from atlbench._heap import HUGETLB, LEAN_THRESHOLD, MMAP_THRESHOLD, THRESHOLD_ENV, TUNABLES_ENV

STEP = textwrap.dedent(
    """
    import hashlib, json, resource, sys
    import torch, timm
    torch.manual_seed(0)
    torch.set_num_threads(2)
    model = timm.create_model("resnet18", num_classes=10)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(32, 3, 224, 224)
    y = torch.randint(0, 10, (32,))
    user, kernel = [], []
    for _ in range(int(sys.argv[1])):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        user.append(r1.ru_utime - r0.ru_utime)
        kernel.append(r1.ru_stime - r0.ru_stime)
    digest = hashlib.sha256()
    for p in model.parameters():
        digest.update(p.detach().numpy().tobytes())
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({"peak": peak, "user": user, "kernel": kernel,
                      "weights": digest.hexdigest()}))
    """
)


@dataclass(frozen=True)
class Run:
    peak_bytes: int
    user_s: list[float]
    kernel_s: list[float]
    weights: str


def _run(tunables: str, steps: int) -> Run:
    env = {k: v for k, v in os.environ.items() if k not in (THRESHOLD_ENV, TUNABLES_ENV)}
    env[TUNABLES_ENV] = tunables  # read by glibc at the start of the process
    out = subprocess.run(
        [sys.executable, "-c", STEP, str(steps)], env=env, capture_output=True, text=True,
        check=True,
    )  # fmt: skip
    raw = json.loads(out.stdout.strip().splitlines()[-1])
    return Run(int(raw["peak"]), raw["user"], raw["kernel"], raw["weights"])


@pytest.mark.benchmark(group="heap")
def test_fixed_mmap_threshold(benchmark: Any) -> None:
    pytest.importorskip("timm")
    rounds = int(os.environ.get("ATLBENCH_BENCH_ROUNDS", "2"))
    threshold = f"{MMAP_THRESHOLD}={LEAN_THRESHOLD}"
    settings = {
        "glibc defaults (ATLBENCH_MMAP_THRESHOLD=0)": "",
        f"fixed {LEAN_THRESHOLD >> 20} MiB threshold alone": threshold,
        "threshold and huge pages (the default)": f"{HUGETLB}=1:{threshold}",
    }
    runs: dict[str, list[Run]] = {name: [] for name in settings}

    def measure() -> None:
        for _ in range(rounds):
            for name, tunables in settings.items():
                runs[name].append(_run(tunables, steps=5))

    benchmark.pedantic(measure, rounds=1, iterations=1)
    digests = {run.weights for results in runs.values() for run in results}
    assert len(digests) == 1, "the allocator settings changed the trained weights"
    for name, results in runs.items():  # the first step of a process (warm-up) is left out
        peak = max(r.peak_bytes for r in results) / 2**30
        user = statistics.median(s for r in results for s in r.user_s[1:])
        kernel = statistics.median(s for r in results for s in r.kernel_s[1:])
        benchmark.extra_info[name] = {"peak_gib": peak, "user_s": user, "kernel_s": kernel}
        print(f"\n{name}: peak RSS {peak:.2f} GiB, step: user {user:.2f} s, kernel {kernel:.2f} s")
