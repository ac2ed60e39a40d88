"""The executor contract: run cells somewhere, hand each finished record back to the driver."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from atlbench.errors import AtlbenchError
from atlbench.plan import Cell, EstimateTask
from atlbench.registry import EXECUTORS
from atlbench.study import Study

OnCell = Callable[[Cell, dict[str, Any], list[int] | None], None]
OnEstimates = Callable[[EstimateTask, list[dict[str, Any]]], None]
OnProgress = Callable[[Cell, str], None]


class StopSweep(Exception):
    """Raised by the driver's callback to stop early (``--fail-fast``)."""


class Executor(Protocol):
    def run(
        self,
        study: Study,
        cells: list[Cell],
        estimates: list[EstimateTask],
        on_cell: OnCell,
        on_estimates: OnEstimates,
        on_progress: OnProgress,
        checkpoint_root: Path | None,
    ) -> None: ...


@dataclass(frozen=True)
class ExecutorConfig:
    """What the driver knows when it picks an executor (the suite schema stays executor-free)."""

    device: str = "auto"
    address: str | None = None
    results_dir: Path | None = None
    jobs: int | None = 1  # worker processes of the local executor; None: one per core (max 4)


def create_executor(name: str, config: ExecutorConfig) -> Any:
    """Build the executor registered as ``name``; unknown names are a one-line user error."""
    if name not in EXECUTORS:
        raise AtlbenchError(EXECUTORS.unknown_message(name))
    if config.address is not None and name != "ray":
        raise AtlbenchError(f"--address applies to --executor ray only (got --executor {name})")
    return EXECUTORS.get(name)(config)
