"""The sweep driver: validate, plan, pre-flight, run pending cells, write records, export views.

The driver is the only writer of the store. Each finished cell is committed as it arrives, so an
interrupted sweep loses at most the cells in flight and resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlbench.budgets import check_budgets
from atlbench.cache import safe_name
from atlbench.executors.base import StopSweep
from atlbench.layer_study import keeps_checkpoints, run_layer_study
from atlbench.plan import Cell, EstimateTask, Plan, build_plan
from atlbench.runner import cell_identity
from atlbench.store import Store, SweepLock
from atlbench.suite import Suite, load_suite
from atlbench.targets import load_target


@dataclass
class SweepOptions:
    results_root: Path = Path("results")
    reports_root: Path = Path("reports")
    dry_run: bool = False
    retry_failed: bool = False
    fail_fast: bool = False
    device: str | None = None
    executor: str = "local"
    address: str | None = None
    quiet: bool = False


@dataclass
class SweepSummary:
    suite: Suite
    plan: Plan
    results_dir: Path
    done_before: int
    ran: int = 0
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    skipped_failed: int = 0
    seconds: float = 0.0
    report_path: Path | None = None


def results_dir_for(suite: Suite, root: Path) -> Path:
    return Path(root) / safe_name(suite.name)


def preflight(suite: Suite, plan: Plan) -> None:
    """Load every target once and check budgets: bad data fails before any work, exit 2."""
    from atlbench.hub import hub_reachable

    for target in suite.targets:
        task = load_target(target)
        check_budgets(task.train.labels, suite.budgets, f"target {target.id!r}")
    if not hub_reachable():
        for source in plan.sources.values():
            if source.kind in ("timm", "hf") and _needs_hub(source):
                source.build(True)  # raises the one-line offline error at once


def _needs_hub(source: Any) -> bool:
    if source.kind == "timm":
        return bool(source.spec.get("pretrained"))
    from atlbench.sources.hf import resolve_model_path

    return not resolve_model_path(source.spec["model"])[1]


def make_executor(options: SweepOptions, suite: Suite) -> Any:
    """The executor named by ``--executor`` (registry in :mod:`atlbench.executors`)."""
    from atlbench.executors import ExecutorConfig, create_executor

    config = ExecutorConfig(
        device=options.device or suite.device,
        address=options.address,
        results_dir=results_dir_for(suite, options.results_root),
    )
    return create_executor(options.executor, config)


def run_sweep(suite_path: str | Path, options: SweepOptions, ui: Any = None) -> SweepSummary:
    """Run (or with ``dry_run`` only describe) a suite; returns what happened."""
    from atlbench.ui import SweepUI

    started = time.perf_counter()
    suite = load_suite(suite_path)
    plan = build_plan(suite)
    results_dir = results_dir_for(suite, options.results_root)
    ui = ui or SweepUI(quiet=options.quiet)
    if options.dry_run:
        statuses = _peek_statuses(results_dir)
        summary = SweepSummary(
            suite, plan, results_dir, sum(1 for c in plan.cells if statuses.get(c.key) == "done")
        )
        ui.print_plan(summary, statuses)
        return summary
    # everything that can reject the input runs before anything is written
    executor = make_executor(options, suite)
    preflight(suite, plan)
    with SweepLock(results_dir), Store(results_dir) as store:
        statuses = store.statuses()
        summary = SweepSummary(
            suite,
            plan,
            results_dir,
            sum(1 for c in plan.cells if statuses.get(c.key) == "done"),
        )
        store.set_plan([cell_identity(c) for c in plan.cells])
        store.set_meta("suite", suite.model_dump(mode="json"))
        store.set_meta("estimate_labels", {t.key: [t.source, t.target] for t in plan.estimates})
        store.set_meta("skipped_pairs", plan.skipped)
        pending, skipped_failed = _pending(plan, statuses, options.retry_failed)
        summary.skipped_failed = skipped_failed
        done_estimates = store.estimate_keys()
        estimates = [
            t for t in plan.estimates if any((t.key, e) not in done_estimates for e in t.estimators)
        ]

        def on_cell(cell: Cell, record: dict[str, Any], preds: list[int] | None) -> None:
            store.put_cell(record, preds)
            summary.ran += 1
            ui.cell_done(cell, record)
            if record["status"] != "done":
                summary.failed.append((cell, record.get("error", "")))
                if options.fail_fast:
                    raise StopSweep(record.get("error", ""))

        def on_estimates(task: EstimateTask, rows: list[dict[str, Any]]) -> None:
            store.put_estimates(rows)
            ui.estimates_done(task, rows)

        # --fail-fast raises StopSweep: stop there, keep what finished
        with ui.running(summary, len(pending), len(estimates)), contextlib.suppress(StopSweep):
            executor.run(
                keeps_checkpoints(suite),  # cka implies keep_checkpoints; keys unchanged
                pending,
                estimates,
                on_cell,
                on_estimates,
                ui.cell_progress,
                results_dir / "checkpoints",
            )
        run_layer_study(
            store,
            suite,
            plan,
            results_dir,
            options.device or suite.device,
            progress=None if options.quiet else print,
        )  # CKA of fine-tuned cells (suite.cka), in the driver; stored ones are skipped
        from atlbench.domain_gap import compute_domain_gaps

        compute_domain_gaps(
            store,
            suite,
            plan,
            options.device or suite.device,
            progress=None if options.quiet else print,
        )  # source pre-training data vs target, in the driver; stored pairs are skipped
        from atlbench.report import write_outputs

        summary.report_path = write_outputs(store, results_dir, options.reports_root, suite.name)
    summary.seconds = time.perf_counter() - started
    ui.print_summary(summary)
    return summary


def _pending(plan: Plan, statuses: dict[str, str], retry_failed: bool) -> tuple[list[Cell], int]:
    pending, skipped = [], 0
    for cell in plan.cells:
        status = statuses.get(cell.key)
        if status == "done":
            continue
        if status == "failed" and not retry_failed:
            skipped += 1
            continue
        pending.append(cell)
    return pending, skipped


def _peek_statuses(results_dir: Path) -> dict[str, str]:
    """Read statuses without creating anything (a dry run writes nothing)."""
    import sqlite3

    path = results_dir / Store.FILENAME
    if not path.exists():
        return {}
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return dict(conn.execute("SELECT key, status FROM cells").fetchall())
    except sqlite3.DatabaseError:
        return {}
    finally:
        conn.close()
