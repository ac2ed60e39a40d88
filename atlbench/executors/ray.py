"""Run the plan's tasks as Ray tasks, on this machine or on a cluster: ``--executor ray``.

Cells, estimator tasks, CKA comparisons, domain gaps and label mappings are all Ray tasks of one
remote function (:func:`atlbench.executors._remote.remote_task`).

* **Where.** Without ``--address`` a private Ray instance is started on this machine, bound to
  127.0.0.1 with no dashboard, and shut down at the end. ``--address auto`` (or ``HOST:PORT``) joins
  a cluster started with ``ray start``. If Ray is already initialised in this process (a notebook,
  a test), that instance is used and left running.
* **Resources.** Each task of the plan is one Ray task asking for 1 CPU, plus 1 GPU when the
  driver's device resolves to CUDA. The suite schema has no executor settings on purpose: a suite
  means the same study wherever it runs. Ray sets ``OMP_NUM_THREADS=1`` in CPU tasks, so a machine
  with N cores runs N cells at once.
* **Shared cache.** Workers use the driver's ``ATLBENCH_CACHE`` (passed to every task through
  ``runtime_env`` ``env_vars``, with the driver's working directory and ``PYTHONPATH``); on a
  multi-node cluster it must be a path every node sees (NFS or similar), as must any folder, CSV
  or checkpoint path in the suite, and every node needs atlbench and its dependencies installed.
  Concurrent writers of one cache entry are safe: entries are written atomically and checksummed.
* **One writer.** Tasks return their results (a cell's ``(record, predictions)``, an artifact);
  the driver consumes them with ``ray.wait`` as they complete and commits each at once, so a
  driver crash loses at most the tasks in flight. A task whose worker process dies is retried
  once, then recorded as failed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atlbench._timing import resolve_device
from atlbench.errors import AtlbenchError
from atlbench.executors._base import ExecutorConfig, OnProgress, OnResult
from atlbench.executors._remote import deliver, remote_task, study_payload
from atlbench.executors._remote import worker_env as make_worker_env
from atlbench.plan import Task
from atlbench.registry import register_executor
from atlbench.study import Study

INSTALL_HINT = "install the ray extra: pip install -e '.[ray]'"


def import_ray() -> Any:
    """Ray is an optional extra: a missing install is a user error with the fix, not a traceback."""
    try:
        import ray
    except ImportError:
        raise AtlbenchError(f"--executor ray needs Ray; {INSTALL_HINT}") from None
    return ray


class RayExecutor:
    """The plan's tasks as Ray tasks; results streamed back to the driver as they finish."""

    def __init__(
        self,
        device: str = "auto",
        address: str | None = None,
        init_kwargs: dict[str, Any] | None = None,
        max_retries: int = 1,
    ) -> None:
        self.device = resolve_device(device)
        self.address = address
        self.init_kwargs = init_kwargs or {}
        self.max_retries = max_retries

    def _connect(self, ray: Any) -> bool:
        """Initialise Ray unless it already is; True when this call started it (and owns it)."""
        if ray.is_initialized():
            return False
        kwargs: dict[str, Any] = {
            "include_dashboard": False,
            "log_to_driver": False,
            "configure_logging": False,
        }
        if self.address is None:
            kwargs["_node_ip_address"] = "127.0.0.1"  # a private instance: loopback only
        try:
            ray.init(address=self.address, **(kwargs | self.init_kwargs))
        except (ConnectionError, RuntimeError, ValueError) as err:
            where = self.address or "a new local instance"
            first = (str(err).strip().splitlines() or [type(err).__name__])[0]
            raise AtlbenchError(f"could not start or reach Ray ({where}): {first}") from None
        return True

    def run(
        self,
        study: Study,
        tasks: Sequence[Task],
        on_result: OnResult,
        on_progress: OnProgress,
        checkpoint_root: Path | None = None,
    ) -> None:
        ray = import_ray()
        if not tasks:
            return
        started_here = self._connect(ray)
        try:
            self._run(ray, study, tasks, on_result, checkpoint_root)
        finally:
            if started_here:
                ray.shutdown()

    def _run(
        self,
        ray: Any,
        study: Study,
        tasks: Sequence[Task],
        on_result: OnResult,
        checkpoint_root: Path | None,
    ) -> None:
        cuda = self.device.type == "cuda"
        device = "cuda" if cuda else "cpu"  # a GPU task sees its own GPU as cuda:0
        env = make_worker_env()
        options = {
            "num_cpus": 1,
            "num_gpus": 1 if cuda else 0,
            "max_retries": self.max_retries,
            "runtime_env": {"env_vars": env},
        }
        cwd = os.getcwd()
        ckpt = str(checkpoint_root.resolve()) if checkpoint_root is not None else None
        remote = ray.remote(remote_task).options(**options)
        suite_ref = ray.put(study_payload(study))
        # submitted in the driver's order: estimator tasks first warm the shared feature cache
        units = {remote.remote(suite_ref, device, task, ckpt, env, cwd): task for task in tasks}
        pending = list(units)
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                for ref in ready:
                    task = units.pop(ref)
                    try:
                        result = ray.get(ref)
                    except Exception as err:  # the worker died, or Ray lost the task
                        result = err
                    deliver(task, result, study.name, on_result)
        finally:
            for ref in pending:  # --fail-fast, Ctrl-C or a driver error: stop what is left
                ray.cancel(ref, force=False)


@register_executor("ray")
def _ray(config: ExecutorConfig) -> RayExecutor:
    return RayExecutor(config.device, address=config.address)
