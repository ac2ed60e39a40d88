"""The sweep driver: validate, plan, pre-flight, run pending cells, write records, export views.

The driver is the only writer of the store. Each finished cell is committed as it arrives, so an
interrupted sweep loses at most the cells in flight and resumes where it stopped.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlbench.budgets import check_budgets
from atlbench.cache import content_hash, safe_name
from atlbench.errors import AtlbenchError, SourceError
from atlbench.executors.base import StopSweep
from atlbench.hub import hub_reachable
from atlbench.layer_study import run_layer_study
from atlbench.plan import Cell, EstimateTask, Plan, build_plan
from atlbench.runner import cell_identity
from atlbench.store import Store, SweepLock
from atlbench.study import Study, load_study, parse_study


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
    log_json: Path | None = None
    jobs: int | None = 1  # local worker processes; None: one per core on a CPU (at most 4)


@dataclass
class SweepSummary:
    study: Study
    plan: Plan
    results_dir: Path
    done_before: int
    ran: int = 0
    failed: list[tuple[Cell, str]] = field(default_factory=list)
    skipped_failed: int = 0
    seconds: float = 0.0
    report_path: Path | None = None


def results_dir_for(study: Study, root: Path) -> Path:
    return Path(root) / safe_name(study.name)


def preflight(
    study: Study, plan: Plan, progress: Callable[[str], None] | None = None, jobs: int = 1
) -> None:
    """Everything that can reject the input, before any work, as one-line errors (exit 2).

    Every target is loaded (for every split seed when splits are resampled) and its budgets
    checked; then every source the plan uses is opened: hub weights without a reachable hub, a
    corrupt checkpoint or a model that does not fit its architecture fail here, not in cells.
    With ``jobs > 1``, slow openers (the zoo's pre-training) first run side by side.
    """
    suite = study.suite
    seeds = suite.seeds if suite.resample_splits else (None,)
    for target in study.targets.values():
        for seed in seeds:
            task = target.load(seed)
            check_budgets(task.train.labels, suite.budgets, f"target {target.id!r}", study.budgeted)
    used = dict.fromkeys(c.source_id for c in plan.cells)
    online = hub_reachable()
    for source_id in used:
        source = study.source(source_id)
        if source.needs_hub and not online:
            _open(source, progress)  # fails at once with the one-line offline error, or a cache
    _open_in_parallel([study.source(s) for s in used], jobs, progress)
    for source_id in used:
        source = study.source(source_id)
        if not source.needs_hub or online:
            _open(source, progress)


def _open_in_parallel(
    sources: list[Any], jobs: int, progress: Callable[[str], None] | None
) -> None:
    """Run the uncached openers in ``jobs`` processes; the sequential pass then finds them cached.

    A failure here is left to the sequential pass, which reports it as a one-line error.
    """
    todo = [s for s in sources if s.opener is not None and not (s.opened and s.opened())]
    if jobs < 2 or len(todo) < 2:
        return
    from atlbench.executors.local import parallel_calls

    jobs = min(jobs, len(todo))
    if progress is not None:
        progress(f"preparing {len(todo)} sources in {jobs} processes (once: cached)")
    started = time.perf_counter()
    results = parallel_calls([(s.opener, (None,)) for s in todo], jobs)
    for source, result in zip(todo, results, strict=True):
        if progress is not None and isinstance(result, dict) and "val_acc" in result:
            progress(
                f"  {source.id}: validation accuracy {result['val_acc']:.3f} after "
                f"{result.get('epochs', '?')} epochs"
            )
    if progress is not None:
        progress(f"  sources ready in {time.perf_counter() - started:.0f} s")


def _open(source: Any, progress: Callable[[str], None] | None) -> None:
    try:
        source.open(progress)
    except AtlbenchError:
        raise
    except Exception as err:  # a loader's own error type: still bad input, still one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SourceError(f"source {source.id!r} cannot be built: {first}") from None


def make_executor(options: SweepOptions, study: Study) -> Any:
    """The executor named by ``--executor`` (registered in :mod:`atlbench.executors`)."""
    from atlbench.executors import ExecutorConfig, create_executor

    config = ExecutorConfig(
        device=options.device or study.suite.device,
        address=options.address,
        results_dir=results_dir_for(study, options.results_root),
        jobs=options.jobs,
    )
    return create_executor(options.executor, config)


def run_sweep(
    suite: str | Path | Mapping[str, Any] | Study, options: SweepOptions, ui: Any = None
) -> SweepSummary:
    """Run (or with ``dry_run`` only describe) a suite: a YAML path, a mapping or a study."""
    from atlbench.ui import SweepUI

    started = time.perf_counter()
    if isinstance(suite, Study):
        study = suite
    elif isinstance(suite, Mapping):
        study = parse_study(dict(suite), "<suite>")
    else:
        study = load_study(suite)
    plan = build_plan(study)
    results_dir = results_dir_for(study, options.results_root)
    ui = ui or SweepUI(quiet=options.quiet, log_json=options.log_json)
    if options.dry_run:
        statuses = _peek_statuses(results_dir)
        done = sum(1 for c in plan.cells if statuses.get(c.key) == "done")
        summary = SweepSummary(study, plan, results_dir, done)
        ui.print_plan(summary, statuses)
        return summary
    # everything that can reject the input runs before anything is written
    executor = make_executor(options, study)
    preflight(study, plan, None if options.quiet else ui.say, getattr(executor, "jobs", 1))
    with SweepLock(results_dir), Store.create(results_dir) as store:
        summary = _run_pending(store, study, plan, executor, options, ui, results_dir)
        device = options.device or study.suite.device
        progress = None if options.quiet else print
        # CKA of fine-tuned cells and domain gaps run in the driver; stored ones are skipped
        run_layer_study(store, study, plan, results_dir, device, progress=progress)
        from atlbench.domain_gap import compute_domain_gaps

        compute_domain_gaps(store, study, plan, device, progress=progress)
        from atlbench.label_mapping import compute_label_mappings

        compute_label_mappings(store, study, plan, device)
        from atlbench.report import write_outputs

        summary.report_path = write_outputs(store, results_dir, options.reports_root, study.name)
    summary.seconds = time.perf_counter() - started
    ui.print_summary(summary)
    return summary


def _run_pending(
    store: Store, study: Study, plan: Plan, executor: Any, options: SweepOptions, ui: Any,
    results_dir: Path,
) -> SweepSummary:  # fmt: skip
    statuses = store.statuses()
    done = sum(1 for c in plan.cells if statuses.get(c.key) == "done")
    summary = SweepSummary(study, plan, results_dir, done)
    store.set_plan([cell_identity(c) for c in plan.cells])
    store.set_meta("suite", study.suite.model_dump(mode="json"))
    labels = {
        t.key: {"target": t.target, "budget": t.budget.label if t.budget else "all", "seed": t.seed}
        for t in plan.estimates
    }
    store.set_meta("estimate_labels", labels)
    store.set_meta(
        "source_keys", {content_hash(s.fingerprint): s.id for s in study.sources.values()}
    )
    store.set_meta("skipped_pairs", plan.skipped)
    pending, summary.skipped_failed = _pending(plan, statuses, options.retry_failed)
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
    with ui.running(summary, pending, len(estimates)), contextlib.suppress(StopSweep):
        executor.run(
            study, pending, estimates, on_cell, on_estimates, ui.cell_progress,
            results_dir / "checkpoints",
        )  # fmt: skip
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

    if not (results_dir / Store.FILENAME).exists():
        return {}
    try:
        with Store(results_dir) as store:
            return store.statuses()
    except (AtlbenchError, sqlite3.DatabaseError):
        return {}
