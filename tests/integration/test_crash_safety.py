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

import numpy as np
import pytest
import yaml

from atlbench._features import load_mapped
from atlbench.plan import build_plan
from atlbench.registry import STRATEGIES
from atlbench.store import Store
from atlbench.study import parse_study
from atlbench.sweep import SweepOptions, run_sweep

REPO = Path(__file__).resolve().parents[2]
SUITE: dict[str, Any] = {
    "name": "crash",
    "seeds": [0, 1],
    "device": "cpu",
    "sources": [
        {
            "id": "zoo-digits",
            "zoo": {
                "arch": "test_resnet",
                "epochs": 2,
                "pretrain_on": {"task": "digits", "classes": [0, 1, 2]},
            },
        },
    ],
    "targets": [{"id": "d56", "builtin": {"task": "digits", "classes": [5, 6]}}],
    "strategies": ["linear_probe", "knn", "finetune", "scratch"],
    "budgets": [{"per_class": 4}],
    "estimators": ["logme"],
    "training": {"max_epochs": 2, "patience": 2, "trials": 2, "min_epoch_samples": 64},
}


def cli_env(cache: Path) -> dict[str, str]:
    env = dict(os.environ, ATLBENCH_CACHE=str(cache), HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def sweep_cmd(results: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "atlbench.cli",
        "sweep",
        "crash.yaml",
        "--quiet",
        "--results-dir",
        results,
        "--reports-dir",
        "reports",
        "--jobs",  # the reference runs in-process: same threads, the same floats
        "1",
    ]


def final_metrics(results_dir: Path) -> dict[str, tuple[Any, ...]]:
    with Store(results_dir) as store:
        return {
            r["key"]: (r["status"], r["test_acc"], r["val_acc"], store.predictions(r["key"]))
            for r in store.records().to_dict("records")
        }


def committed(db: Path) -> int:
    """Cells the driver has committed so far (a reader never blocks the WAL writer)."""
    if not db.exists():
        return 0
    try:
        conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM cells").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return 0


def wait_for(condition: Any, proc: subprocess.Popen, limit: float = 180.0) -> bool:
    """Poll until ``condition()`` holds; False if ``proc`` exits first."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        if condition():
            return True
        time.sleep(0.02)
    return False


def reference(root: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """An uninterrupted run, in-process, on its own cache."""
    monkeypatch.setenv("ATLBENCH_CACHE", str(root / "cache-ref"))
    summary = run_sweep(
        root / "crash.yaml",
        SweepOptions(results_root=root / "ref", reports_root=root / "reports", quiet=True),
    )
    assert not summary.failed
    return final_metrics(summary.results_dir)


@pytest.mark.parametrize("kills_wanted", [6])
def test_sigkill_at_random_moments_loses_and_duplicates_nothing(
    kills_wanted: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Six kills at random moments (~35 s on 2 idle cores), then a run to completion."""
    (tmp_path / "crash.yaml").write_text(yaml.safe_dump(SUITE))
    expected = reference(tmp_path, monkeypatch)
    cache = tmp_path / "cache-crash"
    env = cli_env(cache)
    rng = random.Random(20240607)
    db = tmp_path / "crashed" / "crash" / Store.FILENAME
    kills = attempts = 0
    while kills < kills_wanted and attempts < 2 * kills_wanted:
        attempts += 1
        proc = subprocess.Popen(
            sweep_cmd("crashed"),
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        # Kill moments are drawn in units of progress, not wall time (a loaded CI machine runs
        # slower): wait for 0 or 1 more committed cells, then a random fraction of a second.
        # So kills land in zoo pre-training, feature writes, training and store commits alike.
        target = committed(db) + rng.randint(0, 1)
        if wait_for(lambda target=target: committed(db) >= target, proc):
            time.sleep(rng.uniform(0.0, 1.0))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        _, err = proc.communicate(timeout=120)
        assert proc.returncode in (0, -signal.SIGKILL), err.decode()[-2000:]
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
        estimates = conn.execute("SELECT estimator, status FROM estimates_v2").fetchall()
    finally:
        conn.close()
    plan_keys = {c.key for c in build_plan(parse_study(SUITE)).cells}
    assert {key for key, _, _ in rows} == plan_keys
    assert all(count == 1 and status == "done" for _, count, status in rows)
    assert ("logme", "done") in estimates
    assert final_metrics(tmp_path / "crashed" / "crash") == expected

    # every cache entry the killed runs left behind is either whole and verified, or a temp file
    for path in (cache / "features").glob("*.npy"):
        assert load_mapped(path) is not None, f"{path.name} is torn but not flagged"
    assert (tmp_path / "reports" / "crash.html").exists()


def _tear(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_torn_cache_entries_are_recomputed_not_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Truncated features and zoo weights (a full disk, a copy cut short) are rebuilt."""
    import torch

    from atlbench._features import FeatureCache, feature_paths
    from atlbench.sources.zoo import pretrain, zoo_paths

    monkeypatch.setenv("ATLBENCH_CACHE", str(tmp_path / "cache"))
    study = parse_study(
        SUITE
        | {
            "sources": [
                {
                    "id": "z",
                    "zoo": {
                        "arch": "test_resnet",
                        "epochs": 1,
                        "pretrain_on": {"task": "digits", "classes": [0, 1]},
                    },
                }
            ]
        }
    )
    source = study.source("z")
    params = source.params
    task = study.target("d56").load()
    device = torch.device("cpu")
    first = FeatureCache(device).get(source, task, "train")  # trains the zoo model, then extracts
    # the entry is memory-mapped: keep a copy, since _tear below cuts the file in place (a writer
    # only ever replaces a file, so a live mapping never sees that; this test does it by hand)
    first_features = np.array(first.features)
    weights, _ = zoo_paths(params)
    features, _ = feature_paths(source, task, "train")
    assert weights.is_relative_to(tmp_path / "cache") and features.exists()
    digests = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (weights, features)}
    for path in digests:
        _tear(path)
    assert load_mapped(features) is None

    meta = pretrain(params)  # a torn weights file is re-trained, not loaded
    assert hashlib.sha256(weights.read_bytes()).hexdigest() == digests[weights]
    assert meta["num_classes"] == 2
    import atlbench._features as features_module

    calls: list[int] = []
    real_extract = features_module.extract

    def counting_extract(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real_extract(*args, **kwargs)

    monkeypatch.setattr(features_module, "extract", counting_extract)
    again = FeatureCache(device).get(source, task, "train")  # a torn entry is re-extracted
    assert calls == [1], "the torn entry was trusted"
    FeatureCache(device).get(source, task, "train")  # the rebuilt entry is a hit again
    assert calls == [1]
    np.testing.assert_array_equal(again.features, first_features)
    assert hashlib.sha256(features.read_bytes()).hexdigest() == digests[features]


def test_zoo_weights_with_a_flipped_byte_are_retrained(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A still-parseable weights file whose bytes changed fails its checksum and is rebuilt."""
    from atlbench.sources.zoo import ZooParams, pretrain, zoo_paths

    monkeypatch.setenv("ATLBENCH_CACHE", str(tmp_path / "cache"))
    params = ZooParams(
        arch="test_resnet", epochs=1, pretrain_on={"task": "digits", "classes": [0, 1]}
    )  # type: ignore[arg-type]
    pretrain(params)
    weights, _ = zoo_paths(params)
    original = weights.read_bytes()
    flipped = bytearray(original)
    flipped[-10] ^= 0xFF  # inside the last tensor's data: the header still parses
    weights.write_bytes(bytes(flipped))
    pretrain(params)
    assert weights.read_bytes() == original


# -- failure isolation --------------------------------------------------------------------------


@pytest.fixture
def boom_strategy() -> Any:
    """A strategy registered for the test that fails on seed 1 only, removed afterwards."""
    from atlbench.registry import register_strategy
    from atlbench.strategies.frozen import KNN

    class Boom(KNN):
        broken = True

        def run(self, ctx: Any) -> Any:
            if Boom.broken and ctx.seed == 1:
                raise RuntimeError("deliberate failure for seed 1")
            return super().run(ctx)

    register_strategy("boom_test")(Boom)
    yield Boom
    STRATEGIES.remove("boom_test")


def isolation_suite(tmp_path: Path, strategies: list[str]) -> Path:
    suite = SUITE | {"strategies": strategies, "estimators": []}
    (tmp_path / "iso.yaml").write_text(yaml.safe_dump(suite))
    return tmp_path / "iso.yaml"


def test_failed_cell_is_recorded_and_the_sweep_goes_on(
    boom_strategy: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from atlbench.cli import main

    monkeypatch.chdir(tmp_path)
    path = isolation_suite(tmp_path, ["boom_test", "knn"])
    with pytest.raises(SystemExit) as exit_info:  # the CLI's own exit code for failed cells
        # the strategy is registered in this process only: run the cells here
        main(["sweep", str(path), "--quiet", "--results-dir", "r", "--reports-dir", "rep",
              "--jobs", "1"])  # fmt: skip
    assert exit_info.value.code == 1
    with Store(tmp_path / "r" / "crash") as store:
        records = store.records()
        failed = records[records.status == "failed"]
        # boom and knn x 2 seeds, each with its random-init twin; boom fails on seed 1 twice
        assert len(records) == 8 and len(failed) == 2
        assert set(failed["role"]) == {"transfer", "random_init"}
        for row in failed.to_dict("records"):
            assert row["strategy"] == "boom_test" and row["seed"] == 1
            assert row["error"] == "RuntimeError: deliberate failure for seed 1"
            assert "Traceback" in row["traceback"] and "deliberate failure" in row["traceback"]
    assert (tmp_path / "rep" / "crash.html").exists()  # outputs written despite the failure

    options = SweepOptions(results_root=tmp_path / "r", reports_root=tmp_path / "rep", quiet=True)
    again = run_sweep(path, options)  # a failed cell is not re-run unless asked
    assert again.ran == 0 and again.skipped_failed == 2
    boom_strategy.broken = False
    options.retry_failed = True
    retried = run_sweep(path, options)
    assert retried.ran == 2 and not retried.failed
    with Store(tmp_path / "r" / "crash") as store:
        assert set(store.statuses().values()) == {"done"}


def test_fail_fast_stops_at_the_first_failure(boom_strategy: Any, tmp_path: Path) -> None:
    path = isolation_suite(tmp_path, ["boom_test", "knn"])
    options = SweepOptions(
        results_root=tmp_path / "r", reports_root=tmp_path / "rep", quiet=True, fail_fast=True
    )
    summary = run_sweep(path, options)
    assert len(summary.failed) == 1
    with Store(tmp_path / "r" / "crash") as store:
        statuses = store.statuses()
    # plan order is strategy, seed, role: boom seed 0 and its twin ran, boom seed 1 failed, and
    # nothing after it started
    assert sorted(statuses.values()) == ["done", "done", "failed"]
