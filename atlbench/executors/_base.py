"""The executor contract: run the plan's tasks somewhere, hand each result back to the driver.

A task is anything :meth:`atlbench._runner.Worker.run_task` runs: a cell, an estimator task, a
CKA comparison, a domain gap or a label mapping. An executor runs the tasks it is given in any
order, in any process, and calls ``on_result(task, result)`` in the driver's process once per task,
as each finishes; a task whose process died gets the failure result of its type
(:func:`atlbench.executors._remote.failure_result`). The driver alone writes the store.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from atlbench._runner import TaskResult
from atlbench.errors import AtlbenchError
from atlbench.plan import Cell, Task
from atlbench.registry import EXECUTORS
from atlbench.study import Study

OnResult = Callable[[Task, TaskResult], None]
OnProgress = Callable[[Cell, str], None]


class StopSweep(Exception):
    """Raised by the driver's callback to stop early (``--fail-fast``)."""


class Executor(Protocol):
    def run(
        self,
        study: Study,
        tasks: Sequence[Task],
        on_result: OnResult,
        on_progress: OnProgress,
        checkpoint_root: Path | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class ExecutorConfig:
    """What the driver knows when it picks an executor (the suite schema stays executor-free)."""

    device: str = "auto"
    address: str | None = None
    results_dir: Path | None = None
    jobs: int | None = 1  # worker processes of the local executor; None: one per core (max 4)


def create_executor(name: str, config: ExecutorConfig) -> Executor:
    """Build the executor registered as ``name``; unknown names are a one-line user error."""
    if name not in EXECUTORS:
        raise AtlbenchError(EXECUTORS.unknown_message(name))
    if config.address is not None and name != "ray":
        raise AtlbenchError(f"--address applies to --executor ray only (got --executor {name})")
    executor: Executor = EXECUTORS.get(name)(config)
    return executor
