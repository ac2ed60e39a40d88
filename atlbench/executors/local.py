"""Run the plan's tasks on this machine: in this process, or in a small pool of worker processes.

With ``jobs: 1`` tasks run one after another in this process (GPU-friendly, no pickling). With
``--jobs N`` on a CPU, N worker processes each run tasks with one torch thread: the small models
of a CPU study spend much of a step on per-operation overhead, which more threads do not
shorten, so two processes of one thread train about 1.35x faster on two cores than one process
of two. One thread is also what makes a CPU result independent of ``--jobs`` and of the core
count (:mod:`atlbench._threads`). Each process keeps its own feature and encoder caches (the
on-disk feature cache is shared safely); the driver alone writes the store, as with every
executor.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atlbench._runner import TaskResult, Worker
from atlbench._threads import CPU_THREADS
from atlbench._timing import resolve_device
from atlbench.executors._base import ExecutorConfig, OnProgress, OnResult
from atlbench.executors._remote import deliver, remote_call, remote_task, study_payload
from atlbench.executors._remote import worker_env as make_worker_env
from atlbench.plan import Cell, Task
from atlbench.registry import register_executor
from atlbench.study import Study

MAX_AUTO_JOBS = 4  # each process holds its own model and caches: bound the memory


def auto_jobs(device: str) -> int:
    """One process per core on a CPU (at most ``MAX_AUTO_JOBS``); one on a GPU."""
    if resolve_device(device).type != "cpu":
        return 1
    return max(1, min(MAX_AUTO_JOBS, os.cpu_count() or 1))


def _init_worker(threads: int, driver: int) -> None:
    """Bound every thread pool of the process: torch's, and the BLAS/OpenMP pools behind numpy,
    scipy and scikit-learn (unbounded, two processes' BLAS threads spin against each other: a
    linear probe ran 4x slower)."""
    # the driver's pid comes from the driver: one killed before this ran is noticed at once
    threading.Thread(target=_exit_with_parent, args=(driver,), daemon=True).start()
    for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[name] = str(threads)
    import torch
    from threadpoolctl import threadpool_limits

    from atlbench._heap import limit_arenas

    limit_arenas()
    torch.set_num_threads(threads)
    threadpool_limits(threads)


def _exit_with_parent(parent: int) -> None:
    """A killed driver must not leave its workers training: they poll for a new parent."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _pool(jobs: int) -> cf.ProcessPoolExecutor:
    """``jobs`` fresh processes (spawned: no forked torch state), one thread each."""
    context = multiprocessing.get_context("spawn")
    return cf.ProcessPoolExecutor(jobs, context, _init_worker, (CPU_THREADS, os.getpid()))


def parallel_calls(calls: list[tuple[Any, tuple[Any, ...]]], jobs: int) -> list[Any]:
    """Run picklable ``(fn, args)`` calls in ``jobs`` processes; each result or its exception."""
    env, cwd = make_worker_env(), os.getcwd()
    with _pool(jobs) as pool:
        futures = [pool.submit(remote_call, fn, args, env, cwd) for fn, args in calls]
        out: list[Any] = []
        for future in futures:
            try:
                out.append(future.result())
            except Exception as err:
                out.append(err)
        return out


class LocalExecutor:
    """Tasks in the order given (the driver puts estimator tasks first: they warm the feature
    cache); with a pool, started in that order and handed back as they finish."""

    def __init__(self, device: str = "auto", jobs: int | None = 1) -> None:
        self.device = resolve_device(device)
        self.jobs = auto_jobs(device) if jobs is None else max(1, jobs)

    def run(
        self,
        study: Study,
        tasks: Sequence[Task],
        on_result: OnResult,
        on_progress: OnProgress,
        checkpoint_root: Path | None = None,
    ) -> None:
        if self.jobs > 1 and self.device.type == "cpu" and len(tasks) > 1:
            self._run_pool(study, tasks, on_result, checkpoint_root)
            return
        worker = Worker(study, self.device)
        for task in tasks:
            progress = (lambda m, c=task: on_progress(c, m)) if isinstance(task, Cell) else _quiet
            on_result(task, worker.run_task(task, progress, checkpoint_root))

    def _run_pool(
        self,
        study: Study,
        tasks: Sequence[Task],
        on_result: OnResult,
        checkpoint_root: Path | None,
    ) -> None:
        """Submit everything in order; hand each result to the driver as it finishes."""
        payload, env, cwd = study_payload(study), make_worker_env(), os.getcwd()
        ckpt = str(checkpoint_root.resolve()) if checkpoint_root is not None else None
        with _pool(self.jobs) as pool:
            futures = {
                pool.submit(remote_task, payload, "cpu", task, ckpt, env, cwd): task
                for task in tasks
            }
            try:
                for future in cf.as_completed(futures):
                    result: TaskResult | BaseException
                    try:
                        result = future.result()
                    except Exception as err:  # the worker process died
                        result = err
                    deliver(futures[future], result, study.name, on_result)
            except BaseException:  # --fail-fast, Ctrl-C: drop what has not started
                for future in futures:
                    future.cancel()
                raise


def _quiet(message: str) -> None:
    """Progress of a task that is not a cell: the driver shows its result, not its steps."""


@register_executor("local")
def _local(config: ExecutorConfig) -> LocalExecutor:
    return LocalExecutor(config.device, config.jobs)
