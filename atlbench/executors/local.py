"""Run cells one after another in this process (the default; GPU-friendly, no pickling)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atlbench.executors.base import OnCell, OnEstimates, OnProgress
from atlbench.plan import Cell, EstimateTask
from atlbench.registry import register_executor
from atlbench.runner import Worker
from atlbench.study import Study
from atlbench.timing import resolve_device


class LocalExecutor:
    """Estimator pairs first (they warm the feature cache), then cells in plan order."""

    def __init__(self, device: str = "auto") -> None:
        self.device = resolve_device(device)

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
        worker = Worker(study, self.device)
        for task in estimates:
            on_estimates(task, worker.run_estimates(task))
        for cell in cells:
            record, preds = worker.run_cell(
                cell, lambda message, c=cell: on_progress(c, message), checkpoint_root
            )
            on_cell(cell, record, preds)


@register_executor("local")
def _local(config: Any) -> LocalExecutor:
    return LocalExecutor(config.device)
