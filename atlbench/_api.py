"""The notebook entry point: run or load a study, get the tables and figures back.

``run_suite`` does what ``atlbench sweep`` does (finished cells are reused, so a second call only
loads) and returns the :class:`~atlbench.report.Views` of the results: the same DataFrames
as the CSVs (``views.leaderboard``, ``views.negative_transfer``, ``views.estimators_csv``,
``views.forgetting``, ...) and ``views.figures()``, matplotlib ``Figure`` objects that a notebook
displays inline. Bad input raises :class:`~atlbench.errors.AtlbenchError` with the same one-line
message the CLI prints.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from atlbench.report._views import Views
from atlbench.store import Store
from atlbench.sweep import SweepOptions, run_sweep

__all__ = ["load_results", "run_suite"]


def run_suite(
    suite: str | Path | Mapping[str, Any],
    results_dir: str | Path = "results",
    reports_dir: str | Path = "reports",
    device: str | None = None,
    executor: str = "local",
    retry_failed: bool = False,
    quiet: bool = True,
) -> Views:
    """Run the pending cells of ``suite`` (a YAML path or a mapping), write the CSVs and the
    report as the CLI does, and return the results' :class:`Views`."""
    options = SweepOptions(
        results_root=Path(results_dir), reports_root=Path(reports_dir), device=device,
        executor=executor, retry_failed=retry_failed, quiet=quiet,
    )  # fmt: skip
    summary = run_sweep(suite, options)
    return load_results(summary.results_dir)


def load_results(results_dir: str | Path) -> Views:
    """The :class:`Views` of an existing results directory (read-only; nothing is computed)."""
    with Store(results_dir) as store:
        return Views.from_store(store)
