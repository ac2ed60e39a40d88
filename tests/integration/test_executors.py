"""Ray, SLURM (submitit) and the local pool reproduce the local executor's records cell for
cell, and its artifacts (CKA comparisons, domain gaps, label mappings) task for task.

Every run here computes with one thread per process, as every CPU task does
(:mod:`atlbench._threads`): the local reference runs in this process with the machine's default
thread count, which the worker lowers to one while a task runs; the local pool's processes and
Ray's and submitit's jobs do the same. So fine-tuning does the same float operations in the same
order everywhere and we can demand exact equality for every strategy. Frozen-feature strategies
would match even without that: they read the same cached features (one shared ``ATLBENCH_CACHE``,
as a cluster would share it).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from atlbench.errors import AtlbenchError
from atlbench.record import Status
from atlbench.store import Store
from atlbench.study import parse_study
from atlbench.sweep import SweepOptions, make_executor, run_sweep

SUITE: dict[str, Any] = {
    "name": "exec",
    "seeds": [0],
    "device": "cpu",
    "sources": [
        {
            "id": "zoo-digits",
            "zoo": {
                "arch": "test_resnet",
                "epochs": 1,
                "pretrain_on": {"task": "digits", "classes": [0, 1, 2]},
            },
        },
    ],
    "targets": [{"id": "d56", "builtin": {"task": "digits", "classes": [5, 6]}}],
    "strategies": ["linear_probe", "finetune", "scratch"],
    "budgets": [{"per_class": 6}],
    "estimators": ["logme"],
    "cka": True,  # CKA tasks need the fine-tuned and scratch cells' checkpoints
    "training": {"max_epochs": 2, "patience": 2, "trials": 2, "min_epoch_samples": 64},
}
ARTIFACTS = ("cka", "domain_gap", "label_mapping")
COMPARED = (
    "status",
    "n_train",
    "n_test",
    "test_acc",
    "test_macro_f1",
    "val_acc",
    "hparams",
    "trials",
)


def snapshot(results_dir: Path) -> dict[str, Any]:
    """Per cell: the compared metrics and predictions; per estimator pair: the scores; per
    artifact: its payload, by kind and key."""
    with Store(results_dir) as store:
        records = store.records()
        cells = {
            row["key"]: {k: row[k] for k in COMPARED} | {"preds": store.predictions(row["key"])}
            for row in records.to_dict("records")
        }
        estimates = {
            (r.key, r.estimator, r.source_key): (r.status, r.score)
            for r in store.estimates().itertuples()
        }
        artifacts = {kind: {a["key"]: a for a in store.artifacts(kind)} for kind in ARTIFACTS}
    return {"cells": cells, "estimates": estimates, "artifacts": artifacts}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("executors")
    (root / "exec.yaml").write_text(yaml.safe_dump(SUITE))
    return root


@pytest.fixture(scope="module")
def local_reference(workdir: Path) -> dict[str, Any]:
    threads = torch.get_num_threads()
    summary = run_sweep(
        workdir / "exec.yaml",
        SweepOptions(results_root=workdir / "local", reports_root=workdir / "rep", quiet=True),
    )
    assert torch.get_num_threads() == threads  # lowered only while a task ran
    assert not summary.failed
    snap = snapshot(summary.results_dir)
    assert len(snap["cells"]) == 4  # probe, its random-init twin, finetune, scratch
    assert all(c["status"] == "done" for c in snap["cells"].values())
    # fine-tuned vs its source and vs scratch; the source knows its task and has a head
    assert {k: len(v) for k, v in snap["artifacts"].items()} == {
        "cka": 2,
        "domain_gap": 1,
        "label_mapping": 1,
    }
    assert not summary.artifacts.skipped
    return snap


def test_ray_executor_matches_local(workdir: Path, local_reference: dict[str, Any]) -> None:
    ray = pytest.importorskip("ray")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        log_to_driver=False,
        configure_logging=False,
    )
    try:
        summary = run_sweep(
            workdir / "exec.yaml",
            SweepOptions(
                results_root=workdir / "ray",
                reports_root=workdir / "rep",
                quiet=True,
                executor="ray",
            ),
        )
        assert ray.is_initialized(), "an instance the caller started must be left running"
    finally:
        ray.shutdown()
    assert summary.ran == 4 and not summary.failed
    assert len(summary.artifacts.computed) == 4 and not summary.artifacts.skipped
    assert snapshot(summary.results_dir) == local_reference


def test_local_pool_matches_local(workdir: Path, local_reference: dict[str, Any]) -> None:
    """``--jobs 2``: two worker processes, whatever the core count."""
    summary = run_sweep(
        workdir / "exec.yaml",
        SweepOptions(
            results_root=workdir / "pool", reports_root=workdir / "rep", quiet=True, jobs=2
        ),
    )
    assert summary.ran == 4 and not summary.failed
    assert len(summary.artifacts.computed) == 4 and not summary.artifacts.skipped
    assert snapshot(summary.results_dir) == local_reference


def test_slurm_executor_matches_local(
    workdir: Path, local_reference: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("submitit")
    monkeypatch.setenv("ATLBENCH_SUBMITIT_LOCAL", "1")
    monkeypatch.setenv("ATLBENCH_SLURM_POLL_S", "0.2")
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    summary = run_sweep(
        workdir / "exec.yaml",
        SweepOptions(
            results_root=workdir / "slurm",
            reports_root=workdir / "rep",
            quiet=True,
            executor="slurm",
        ),
    )
    assert summary.ran == 4 and not summary.failed
    assert snapshot(summary.results_dir) == local_reference
    # every job's pickles and logs sit in the results dir's slurm folder
    assert list((summary.results_dir / "slurm").glob("*_submitted.pkl"))


def test_slurm_lost_job_becomes_a_failed_record(
    workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job the scheduler kills (here: a time limit far too short) is a failed record."""
    submitit = pytest.importorskip("submitit")
    # submitit waits 15 s for a slow shared file system to show a result that will never come
    monkeypatch.setattr(submitit.core.core.Job, "_results_timeout_s", 0)
    from atlbench.executors.slurm import SlurmExecutor
    from atlbench.plan import build_plan

    study = parse_study(SUITE)
    cell = build_plan(study).cells[0]
    local = submitit.LocalExecutor(folder=tmp_path / "jobs")
    local.update_parameters(timeout_min=1 / 60)  # killed after one second
    got: list[Any] = []
    SlurmExecutor("cpu", executor=local, poll_s=0.2).run(
        study, [cell], lambda task, result: got.append((task, result)), lambda c, m: None
    )
    assert len(got) == 1
    task, (record, preds) = got[0]
    assert task is cell and record.key == cell.key and record.status == Status.FAILED
    assert preds is None and record.error
    json.dumps(record.to_json())  # storable as is


def test_unknown_executor_and_misplaced_address(workdir: Path) -> None:
    study = parse_study(SUITE)
    with pytest.raises(AtlbenchError, match="unknown executor 'dask'"):
        make_executor(SweepOptions(executor="dask"), study)
    with pytest.raises(AtlbenchError, match="--address applies to --executor ray"):
        make_executor(SweepOptions(executor="local", address="auto"), study)


def test_missing_ray_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` raise ImportError
    from atlbench.executors.ray import import_ray

    with pytest.raises(AtlbenchError, match=r"pip install -e '\.\[ray\]'"):
        import_ray()


def test_slurm_without_a_cluster_says_so(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    import shutil

    if shutil.which("srun"):
        pytest.skip("this machine is a SLURM node")
    from atlbench.executors.slurm import SlurmExecutor

    monkeypatch.delenv("ATLBENCH_SUBMITIT_LOCAL", raising=False)
    with pytest.raises(AtlbenchError, match="ATLBENCH_SUBMITIT_LOCAL=1"):
        SlurmExecutor("cpu", folder=tmp_path).make_submitit_executor()


DRIVER = """
import sys, time
from atlbench.executors.local import parallel_calls
parallel_calls([(time.sleep, (600,))], 1)
"""


def test_pool_workers_exit_when_the_driver_is_killed(tmp_path: Path) -> None:
    """SIGKILL on the driver (no cleanup runs) must not leave a worker training for minutes."""
    import subprocess
    import time

    import psutil

    driver = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        workers: list[psutil.Process] = []
        while not workers and time.monotonic() < deadline:
            time.sleep(0.2)
            workers = [p for p in psutil.Process(driver.pid).children(recursive=True)
                       if "spawn" in " ".join(p.cmdline())]  # fmt: skip
        assert workers, "the pool never started"
        time.sleep(3)  # let the worker reach the sleeping task
    finally:
        driver.kill()
        driver.wait()

    def running(proc: psutil.Process) -> bool:  # an exited orphan may stay a zombie here
        try:
            return proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + 30
    while any(running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.2)
    alive = [p for p in workers if running(p)]
    for proc in alive:
        proc.kill()
    assert not alive, f"{len(alive)} worker(s) outlived the killed driver"
