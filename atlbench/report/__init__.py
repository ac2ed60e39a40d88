"""Outputs of a results directory: leaderboard CSVs under ``results/<suite>/`` and the HTML report.

``write_outputs`` is the only entry point the sweep and ``atlbench report`` need; it reads the store
and recomputes nothing that a cell produced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atlbench._cache import atomic_write_text, safe_name

__all__ = ["Views", "write_csvs", "write_outputs"]


def __getattr__(name: str) -> Any:
    """``Views`` on first use: importing the package stays free of pandas and matplotlib."""
    if name == "Views":
        from atlbench.report._views import Views

        return Views
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def write_csvs(views: Any, results_dir: Path) -> dict[str, Path]:
    """Every registered section's CSV (``<csv>.csv``), name -> path. A section with
    ``csv_always`` writes its file even without rows (leaderboard, estimators,
    negative_transfer, timing: their columns are documented in the README); the others only
    when they have rows."""
    from atlbench.report.sections import ordered

    paths = {}
    for section in ordered():
        if section.csv is None:
            continue
        frame = section().csv_frame(views)
        if frame is None or (not len(frame) and not section.csv_always):
            continue
        path = Path(results_dir) / f"{section.csv}.csv"
        atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))
        paths[section.csv] = path
    return paths


def write_outputs(store: Any, results_dir: Path, reports_root: Path, suite_name: str) -> Path:
    """CSVs beside the store and ``reports/<suite>.html``; returns the report path."""
    from atlbench.report._html import write_report
    from atlbench.report._views import Views

    views = Views.from_store(store)
    write_csvs(views, results_dir)
    description = (views.meta.get("suite") or {}).get("description", "")
    path = Path(reports_root) / f"{safe_name(suite_name)}.html"
    return write_report(views, path, suite_name, description, results_dir)
