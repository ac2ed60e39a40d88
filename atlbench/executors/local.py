"""Run cells on this machine: in this process, or in a small pool of worker processes.

With ``jobs: 1`` cells run one after another in this process (GPU-friendly, no pickling). With
``--jobs N`` on a CPU, N worker processes each run cells with ``cores / N`` torch threads: the
small models of a CPU study spend much of a step on per-operation overhead, which more threads do
not shorten, so two processes of one thread train about 1.35x faster on two cores than one
process of two. Each process keeps its own feature and encoder caches (the on-disk feature cache
is shared safely); the driver alone writes the store, as with every executor.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from pathlib import Path
from typing import Any

from atlbench.executors.base import OnCell, OnEstimates, OnProgress
from atlbench.executors.remote import deliver, remote_cell, remote_estimates, study_payload
from atlbench.executors.remote import worker_env as make_worker_env
from atlbench.plan import Cell, EstimateTask
from atlbench.registry import register_executor
from atlbench.runner import Worker
from atlbench.study import Study
from atlbench.timing import resolve_device

MAX_AUTO_JOBS = 4  # each process holds its own model and caches: bound the memory


def auto_jobs(device: str) -> int:
    """One process per core on a CPU (at most ``MAX_AUTO_JOBS``); one on a GPU."""
    if resolve_device(device).type != "cpu":
        return 1
    return max(1, min(MAX_AUTO_JOBS, os.cpu_count() or 1))


def _init_worker(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


class LocalExecutor:
    """Estimator tasks first (they warm the feature cache), then cells in plan order."""

    def __init__(self, device: str = "auto", jobs: int | None = 1) -> None:
        self.device = resolve_device(device)
        self.jobs = auto_jobs(device) if jobs is None else max(1, jobs)

    def run(
        self,
        study: Study,
        cells: list[Cell],
        estimates: list[EstimateTask],
        on_cell: OnCell,
        on_estimates: OnEstimates,
        on_progress: OnProgress,
        checkpoint_root: Path | None = None,
    ) -> None:
        if self.jobs > 1 and self.device.type == "cpu" and len(cells) + len(estimates) > 1:
            self._run_pool(study, cells, estimates, on_cell, on_estimates, checkpoint_root)
            return
        worker = Worker(study, self.device)
        for task in estimates:
            on_estimates(task, worker.run_estimates(task))
        for cell in cells:
            record, preds = worker.run_cell(
                cell, lambda message, c=cell: on_progress(c, message), checkpoint_root
            )
            on_cell(cell, record, preds)

    def _run_pool(
        self,
        study: Study,
        cells: list[Cell],
        estimates: list[EstimateTask],
        on_cell: OnCell,
        on_estimates: OnEstimates,
        checkpoint_root: Path | None,
    ) -> None:
        """Submit everything in plan order; hand each result to the driver as it finishes."""
        payload, env, cwd = study_payload(study), make_worker_env(), os.getcwd()
        ckpt = str(checkpoint_root.resolve()) if checkpoint_root is not None else None
        threads = max(1, (os.cpu_count() or 1) // self.jobs)
        context = multiprocessing.get_context("spawn")  # no forked torch state in the workers
        with cf.ProcessPoolExecutor(self.jobs, context, _init_worker, (threads,)) as pool:
            futures: dict[cf.Future[Any], Cell | EstimateTask] = {}
            for task in estimates:
                futures[pool.submit(remote_estimates, payload, "cpu", task, env, cwd)] = task
            for cell in cells:
                futures[pool.submit(remote_cell, payload, "cpu", cell, ckpt, env, cwd)] = cell
            try:
                for future in cf.as_completed(futures):
                    unit = futures[future]
                    try:
                        result = future.result()
                    except Exception as err:  # the worker process died
                        result = err
                    deliver(unit, result, study.name, on_cell, on_estimates)
            except BaseException:  # --fail-fast, Ctrl-C: drop what has not started
                for future in futures:
                    future.cancel()
                raise


@register_executor("local")
def _local(config: Any) -> LocalExecutor:
    return LocalExecutor(config.device, config.jobs)
