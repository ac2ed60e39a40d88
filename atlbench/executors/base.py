"""The executor contract: run cells somewhere, hand each finished record back to the driver."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from atlbench.plan import Cell, EstimateTask
from atlbench.suite import Suite

OnCell = Callable[[Cell, dict[str, Any], list[int] | None], None]
OnEstimates = Callable[[EstimateTask, list[dict[str, Any]]], None]
OnProgress = Callable[[Cell, str], None]


class StopSweep(Exception):
    """Raised by the driver's callback to stop early (``--fail-fast``)."""


class Executor(Protocol):
    def run(
        self,
        suite: Suite,
        cells: list[Cell],
        estimates: list[EstimateTask],
        on_cell: OnCell,
        on_estimates: OnEstimates,
        on_progress: OnProgress,
        checkpoint_root: Path | None,
    ) -> None: ...
