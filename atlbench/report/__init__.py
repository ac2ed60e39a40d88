"""Outputs of a results directory: leaderboard CSVs under ``results/<suite>/`` and the HTML report.

``write_outputs`` is the only entry point the sweep and ``atlbench report`` need; it reads the store
and recomputes nothing that a cell produced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from atlbench.cache import atomic_write_text, safe_name

CSV_FILES = ("leaderboard", "estimators", "negative_transfer", "timing")


def write_csvs(views: Any, results_dir: Path) -> dict[str, Path]:
    """The four stable CSVs (columns documented in README and ``atlbench.report.views``)."""
    tables = {
        "leaderboard": views.leaderboard,
        "estimators": views.estimators_csv,
        "negative_transfer": views.negative_transfer,
        "timing": views.timing,
    }
    paths = {}
    for name, frame in tables.items():
        path = Path(results_dir) / f"{name}.csv"
        atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))
        paths[name] = path
    timing = views.timing_summary
    if len(timing):
        path = Path(results_dir) / "timing_summary.csv"
        atomic_write_text(path, timing.to_csv(index=False, float_format="%.6g"))
        paths["timing_summary"] = path
    cka = views.cka_table()
    if len(cka):
        path = Path(results_dir) / "cka.csv"
        atomic_write_text(path, cka.to_csv(index=False, float_format="%.6g"))
        paths["cka"] = path
    for name in ("forgetting", "label_mapping"):
        frame = getattr(views, name)
        if len(frame):
            path = Path(results_dir) / f"{name}.csv"
            atomic_write_text(path, frame.to_csv(index=False, float_format="%.6g"))
            paths[name] = path
    gap = views.domain_gap
    if len(gap):
        path = Path(results_dir) / "domain_gap.csv"
        atomic_write_text(path, gap.to_csv(index=False, float_format="%.6g"))
        paths["domain_gap"] = path
    return paths


def write_outputs(store: Any, results_dir: Path, reports_root: Path, suite_name: str) -> Path:
    """CSVs beside the store and ``reports/<suite>.html``; returns the report path."""
    from atlbench.report.html import write_report
    from atlbench.report.views import Views

    views = Views.from_store(store)
    write_csvs(views, results_dir)
    description = (views.meta.get("suite") or {}).get("description", "")
    path = Path(reports_root) / f"{safe_name(suite_name)}.html"
    return write_report(views, path, suite_name, description, results_dir)
