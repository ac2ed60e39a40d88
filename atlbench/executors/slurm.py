"""Run the plan's tasks as one SLURM job array through submitit: ``--executor slurm``.

The driver (on a login node) submits the tasks it is given (cells and estimator tasks, then in a
second array the CKA comparisons, domain gaps and label mappings) as one job array with
``executor.map_array``, polls the jobs, and writes each result as its job finishes: it stays the
only writer of the store. Job logs and submitit's pickles go to ``<results dir>/slurm``.

Cluster settings come from environment variables, not the suite (a suite means the same study on
any machine):

=================================  ===========================================  ===============
variable                           meaning                                      default
=================================  ===========================================  ===============
``ATLBENCH_SLURM_PARTITION``       ``--partition``                              cluster default
``ATLBENCH_SLURM_ACCOUNT``         ``--account``                                none
``ATLBENCH_SLURM_QOS``             ``--qos``                                    none
``ATLBENCH_SLURM_TIME_MIN``        time limit per job, minutes                  60
``ATLBENCH_SLURM_CPUS``            CPUs per job                                 4
``ATLBENCH_SLURM_GPUS``            GPUs per job                                 1 if ``--device
                                                                                cuda*``, else 0
``ATLBENCH_SLURM_MEM_GB``          memory per job                               16
``ATLBENCH_SLURM_ARRAY_PARALLEL``  jobs of the array running at once            32
``ATLBENCH_SLURM_POLL_S``          seconds between status polls                 5
``ATLBENCH_SUBMITIT_LOCAL=1``      run the jobs as local processes instead      off
                                   (submitit's ``LocalExecutor``; for testing)
=================================  ===========================================  ===============

The device is resolved on the compute node (``auto`` picks its GPU when it has one). As with Ray,
``ATLBENCH_CACHE`` and every path in the suite must be visible from the compute nodes.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atlbench.errors import AtlbenchError
from atlbench.executors._base import ExecutorConfig, OnProgress, OnResult
from atlbench.executors._remote import deliver, remote_task, study_payload
from atlbench.executors._remote import worker_env as make_worker_env
from atlbench.plan import Task
from atlbench.registry import register_executor
from atlbench.study import Study

INSTALL_HINT = "install the slurm extra: pip install -e '.[slurm]'"


def import_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise AtlbenchError(f"--executor slurm needs submitit; {INSTALL_HINT}") from None
    return submitit


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name, "")
    try:
        return int(raw) if raw else default
    except ValueError:
        raise AtlbenchError(f"{name}={raw!r}: expected a whole number") from None


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "")
    try:
        return float(raw) if raw else default
    except ValueError:
        raise AtlbenchError(f"{name}={raw!r}: expected a number") from None


class SlurmExecutor:
    """Tasks as one submitit job array; pass ``executor`` to run on anything submitit drives."""

    def __init__(
        self,
        device: str = "auto",
        folder: Path | None = None,
        executor: Any = None,
        poll_s: float | None = None,
    ) -> None:
        self.device = device
        self.folder = Path(folder) if folder is not None else Path("slurm-jobs")
        self._executor = executor
        self.poll_s = poll_s

    def _job_device(self) -> str:
        return "cuda" if self.device.startswith("cuda") else self.device

    def make_submitit_executor(self) -> Any:
        """The injected executor, a local one (ATLBENCH_SUBMITIT_LOCAL=1), or SLURM's."""
        if self._executor is not None:
            return self._executor
        submitit = import_submitit()
        self.folder.mkdir(parents=True, exist_ok=True)
        timeout = _env_int("ATLBENCH_SLURM_TIME_MIN", 60)
        gpus = _env_int("ATLBENCH_SLURM_GPUS", 1 if self.device.startswith("cuda") else 0)
        if os.environ.get("ATLBENCH_SUBMITIT_LOCAL", "") in ("1", "true", "yes"):
            local = submitit.LocalExecutor(folder=str(self.folder))
            local.update_parameters(timeout_min=timeout, gpus_per_node=gpus)
            return local
        try:
            executor = submitit.AutoExecutor(folder=str(self.folder), cluster="slurm")
        except RuntimeError as err:
            raise AtlbenchError(
                f"--executor slurm: {err} (run on a SLURM login node, or set "
                "ATLBENCH_SUBMITIT_LOCAL=1 to run the jobs as local processes)"
            ) from None
        params: dict[str, Any] = {
            "name": "atlbench",
            "timeout_min": timeout,
            "cpus_per_task": _env_int("ATLBENCH_SLURM_CPUS", 4),
            "gpus_per_node": gpus,
            "mem_gb": _env_int("ATLBENCH_SLURM_MEM_GB", 16),
            "slurm_array_parallelism": _env_int("ATLBENCH_SLURM_ARRAY_PARALLEL", 32),
        }
        for var, key in (
            ("ATLBENCH_SLURM_PARTITION", "slurm_partition"),
            ("ATLBENCH_SLURM_ACCOUNT", "slurm_account"),
            ("ATLBENCH_SLURM_QOS", "slurm_qos"),
        ):
            if os.environ.get(var):
                params[key] = os.environ[var]
        executor.update_parameters(**params)
        return executor

    def run(
        self,
        study: Study,
        tasks: Sequence[Task],
        on_result: OnResult,
        on_progress: OnProgress,
        checkpoint_root: Path | None = None,
    ) -> None:
        if not tasks:
            return
        executor = self.make_submitit_executor()
        env = make_worker_env()
        ckpt = str(checkpoint_root.resolve()) if checkpoint_root is not None else None
        n = len(tasks)
        # each array job runs remote_task (pickled by submitit) on one task
        jobs = executor.map_array(
            remote_task,
            [study_payload(study)] * n,
            [self._job_device()] * n,
            list(tasks),
            [ckpt] * n,
            [env] * n,
            [os.getcwd()] * n,
        )
        pending = dict(zip(jobs, tasks, strict=True))
        poll = self.poll_s if self.poll_s is not None else _env_float("ATLBENCH_SLURM_POLL_S", 5.0)
        try:
            while pending:
                finished = [job for job in pending if job.done()]
                if not finished:
                    time.sleep(poll)
                    continue
                for job in finished:
                    self._deliver(job, pending.pop(job), study.name, on_result)
        finally:
            for job in pending:  # --fail-fast, Ctrl-C or a driver error: cancel what is left
                with contextlib.suppress(Exception):  # it may already have finished
                    job.cancel(check=False)

    @staticmethod
    def _deliver(job: Any, task: Task, suite_name: str, on_result: OnResult) -> None:
        try:
            result = job.result()
        except Exception as err:  # job killed, timed out, node lost, or unpicklable result
            result = err
        deliver(task, result, suite_name, on_result)


@register_executor("slurm")
def _slurm(config: ExecutorConfig) -> SlurmExecutor:
    folder = config.results_dir / "slurm" if config.results_dir is not None else None
    return SlurmExecutor(config.device, folder=folder)
