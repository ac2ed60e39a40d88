"""The result store: records survive reopening, statuses drive resume, one sweep per directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atlbench.errors import AtlbenchError
from atlbench.store import Store, SweepLock


def record(key: str, status: str = "done", acc: float = 0.5) -> dict:
    return {
        "key": key,
        "status": status,
        "test_acc": acc,
        "source": "s",
        "target": "t",
        "strategy": "linear_probe",
        "budget": "5/class",
        "seed": 0,
    }


def test_records_round_trip_and_replace(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.set_plan([{"key": "k1", "source": "s", "target": "t"}, {"key": "k2", "source": "s2"}])
        store.put_cell(record("k1"), [0, 1, 1])
        store.put_cell(record("k2", "failed"), None)
        store.put_cell(record("k2", "done", 0.75), [1])  # a retried cell replaces its record
    with Store(tmp_path) as store:
        assert store.statuses() == {"k1": "done", "k2": "done"}
        frame = store.records()
        assert frame.set_index("key").loc["k2", "test_acc"] == 0.75
        assert frame.set_index("key").loc["k2", "source"] == "s2"  # labels from the current plan
        assert store.predictions("k1") == [0, 1, 1]


def test_estimates_and_artifacts(tmp_path: Path) -> None:
    with Store(tmp_path) as store:
        store.put_estimates(
            [
                {
                    "key": "e",
                    "estimator": "logme",
                    "source": "s",
                    "target": "t",
                    "status": "done",
                    "score": 1.5,
                    "time_s": 0.1,
                },
                {
                    "key": "e",
                    "estimator": "leep",
                    "source": "s",
                    "target": "t",
                    "status": "failed",
                    "error": "ValueError: x",
                },
            ]
        )
        store.put_artifact("a1", "cka", {"matrix": [[1.0]]})
        assert store.estimate_keys() == {("e", "logme")}
        assert store.artifacts("cka") == [{"matrix": [[1.0]]}]
        est = store.estimates()
        assert est.set_index("estimator").loc["logme", "score"] == 1.5


def test_second_sweep_on_same_directory_is_refused(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from atlbench.store import SweepLock\n"
            f"with SweepLock(Path({str(tmp_path)!r})):\n"
            "    print('held', flush=True); time.sleep(30)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with (
            pytest.raises(AtlbenchError, match=r"another sweep .* is writing here"),
            SweepLock(tmp_path),
        ):
            pass
    finally:
        holder.kill()
        holder.wait()
    with SweepLock(tmp_path):  # released when the holder dies, even by SIGKILL
        pass
