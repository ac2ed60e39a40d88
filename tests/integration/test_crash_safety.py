"""A sweep SIGKILLed at random moments resumes to exactly the records of an uninterrupted run.

The interrupted sweep runs on its own, initially empty cache, so the kills land in zoo
pre-training, feature extraction, cache writes, cell training, store commits and report writing;
its final records are compared with a reference run on a different cache. That is the honest
comparison: it checks that whatever mixture of fresh and cached work the resumed runs did, the
result is the one a clean run computes. (Fresh and cached paths can only agree exactly because
every cache entry is a bit-exact copy of what was computed and training re-seeds after building
its encoder; a difference here would be a real bug.)
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from atlbench.cache import load_array
from atlbench.plan import build_plan
from atlbench.store import Store
from atlbench.suite import parse_suite
from atlbench.sweep import SweepOptions, run_sweep

REPO = Path(__file__).resolve().parents[2]
SUITE: dict[str, Any] = {
    "name": "crash",
    "seeds": [0, 1],
    "device": "cpu",
    "sources": [
        {"id": "zoo-digits", "zoo": {"arch": "test_resnet", "epochs": 2,
                                     "pretrain_on": {"task": "digits", "classes": [0, 1, 2]}}},
    ],
    "targets": [{"id": "d56", "builtin": {"task": "digits", "classes": [5, 6]}}],
    "strategies": ["linear_probe", "knn", "finetune", "scratch"],
    "budgets": [{"per_class": 4}],
    "estimators": ["logme"],
    "training": {"max_epochs": 2, "patience": 2, "lr_grid": [0.01]},
}


def cli_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, ATLBENCH_CACHE=str(cache), HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def sweep_cmd(results: str) -> list[str]:
    return [
        sys.executable, "-m", "atlbench.cli", "sweep", "crash.yaml", "--quiet",
        "--results-dir", results, "--reports-dir", "reports",
    ]


def final_metrics(results_dir: Path) -> dict[str, tuple[Any, ...]]:
    with Store(results_dir) as store:
        return {
            r["key"]: (r["status"], r["test_acc"], r["val_acc"], store.predictions(r["key"]))
            for r in store.records().to_dict("records")
        }


def wait_for_lock(lock: Path, proc: subprocess.Popen, limit: float = 60.0) -> bool:
    """True once ``proc`` has written its pid into the results directory's sweep lock."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if lock.read_text() == f"pid {proc.pid}":
                return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def reference(root: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[dict[str, Any], float]:
    """An uninterrupted run, in-process, on its own cache; returns metrics and its duration."""
    monkeypatch.setenv("ATLBENCH_CACHE", str(root / "cache-ref"))
    started = time.perf_counter()
    summary = run_sweep(
        root / "crash.yaml",
        SweepOptions(results_root=root / "ref", reports_root=root / "reports", quiet=True),
    )
    assert not summary.failed
    seconds = time.perf_counter() - started
    print(f"reference sweep: {seconds:.1f} s")
    return final_metrics(summary.results_dir), seconds


@pytest.mark.parametrize("kills_wanted", [2, pytest.param(6, marks=pytest.mark.slow)])
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    kills_wanted: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two kills by default (about 30 s); six with ``-m slow``."""
    (tmp_path / "crash.yaml").write_text(yaml.safe_dump(SUITE))
    expected, seconds = reference(tmp_path, monkeypatch)
    cache = tmp_path / "cache-crash"
    env = cli_env(cache)
    rng = random.Random(20240607)
    lock = tmp_path / "crashed" / "crash" / ".sweep.lock"
    kills = attempts = 0
    while kills < kills_wanted and attempts < 3 * kills_wanted:
        attempts += 1
        proc = subprocess.Popen(
            sweep_cmd("crashed"), cwd=tmp_path, env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        # start the clock once the driver holds the lock (past the torch import), so the
        # kills land in the sweep's own work rather than in interpreter start-up
        if wait_for_lock(lock, proc):
            time.sleep(rng.uniform(0.0, 0.7 * seconds))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        _, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
        print(f"attempt {attempts}: exit {proc.returncode}")
    assert kills >= kills_wanted, "the sweep finished too quickly to be interrupted"

    final = subprocess.run(
        sweep_cmd("crashed"), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )
    assert final.returncode == 0, final.stderr[-2000:]

    db = tmp_path / "crashed" / "crash" / Store.FILENAME
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        rows = conn.execute("SELECT key, COUNT(*), MIN(status) FROM cells GROUP BY key").fetchall()
        estimates = conn.execute("SELECT estimator, status FROM estimates").fetchall()
    finally:
        conn.close()
    plan_keys = {c.key for c in build_plan(parse_suite(SUITE)).cells}
    assert {key for key, _, _ in rows} == plan_keys
    assert all(count == 1 and status == "done" for _, count, status in rows)
    assert ("logme", "done") in estimates
    assert final_metrics(tmp_path / "crashed" / "crash") == expected

    # every cache entry the killed runs left behind is either whole and verified, or a temp file
    for path in (cache / "features").glob("*.npy"):
        assert load_array(path) is not None, f"{path.name} is torn but not flagged"
    assert (tmp_path / "reports" / "crash.html").exists()


def _tear(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_torn_cache_entries_are_recomputed_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Truncated features and zoo weights (a full disk, a copy cut short) are rebuilt."""
    from atlbench.sources.zoo import ZooParams, zoo_paths

    (tmp_path / "crash.yaml").write_text(yaml.safe_dump(SUITE))
    expected, _ = reference(tmp_path, monkeypatch)  # leaves a full cache in cache-ref
    cache = tmp_path / "cache-ref"
    weights, _ = zoo_paths(ZooParams.model_validate(SUITE["sources"][0]["zoo"]))
    assert weights.is_relative_to(cache)
    features = sorted((cache / "features").glob("*.features.npy"))
    assert features
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in [weights, *features]}
    for path in digests:
        _tear(path)
    assert all(load_array(p) is None for p in features)

    summary = run_sweep(
        tmp_path / "crash.yaml",
        SweepOptions(results_root=tmp_path / "again", reports_root=tmp_path, quiet=True),
    )
    assert not summary.failed and summary.ran == len(expected)
    assert final_metrics(summary.results_dir) == expected
    # rebuilt, byte for byte what the first computation wrote (same seed, same recipe)
    for path, digest in digests.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, path.name
