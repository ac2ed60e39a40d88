"""The sweep driver: validate, plan, pre-flight, dispatch pending tasks, write results and views.

The driver plans, dispatches and writes; workers compute. Every unit of work is a task of the
plan run by the executor: cells and estimator tasks first, then, in a second round, the CKA
comparisons, domain gaps and label mappings (a CKA task reads the checkpoints of finished cells).
The driver is the only writer of the store. Each finished cell is committed as it arrives, so an
interrupted sweep loses at most the tasks in flight and resumes where it stopped; a task whose
result is stored (by content key) is never run again.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlbench._adaptive import AdaptiveRun, run_seed_rounds
from atlbench._cache import content_hash, safe_name
from atlbench._hub import hub_reachable
from atlbench._layer_study import attach_checkpoints
from atlbench._runner import TaskResult, cell_identity
from atlbench.artifacts import TaskSkipped
from atlbench.budgets import check_budgets
from atlbench.errors import AtlbenchError, SourceError
from atlbench.executors._base import Executor, StopSweep
from atlbench.plan import (
    ArtifactTask,
    Cell,
    CkaTask,
    DomainGapTask,
    EstimateTask,
    LabelMappingTask,
    Plan,
    Task,
    build_plan,
)
from atlbench.record import Status
from atlbench.store import Store, SweepLock
from atlbench.study import Study, load_study, parse_study

__all__ = [
    "SweepOptions",
    "SweepSummary",
    "make_executor",
    "preflight",
    "results_dir_for",
    "run_artifact_tasks",
    "run_sweep",
]

log = logging.getLogger(__name__)


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
class ArtifactRun:
    """What the artifact round did: computed now, found stored, skipped (with the reason)."""

    computed: list[str] = field(default_factory=list)  # artifact keys written now
    existing: int = 0
    skipped: list[str] = field(default_factory=list)


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
    artifacts: ArtifactRun = field(default_factory=ArtifactRun)
    stopped: bool = False  # --fail-fast stopped the sweep at a failed cell
    seed_rounds: AdaptiveRun | None = None  # with a seed schedule: what the rounds added


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
    seeds = suite.all_seeds if suite.resample_splits else (None,)
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


def make_executor(options: SweepOptions, study: Study) -> Executor:
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
    from atlbench._ui import SweepUI

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
        say = None if options.quiet else ui.say
        if study.suite.schedule is not None and not summary.stopped:
            on_result = _cell_writer(store, summary, ui, options)

            def run_cells(cells: list[Cell]) -> None:
                checkpoints = results_dir / "checkpoints"
                with ui.running(summary, cells, 0, False), contextlib.suppress(StopSweep):
                    executor.run(study, cells, on_result, ui.cell_progress, checkpoints)
                if summary.stopped:
                    raise StopSweep("fail-fast")

            with contextlib.suppress(StopSweep):
                summary.seed_rounds = run_seed_rounds(
                    store, study, plan.cells, run_cells, started, say
                )
        summary.artifacts = run_artifact_tasks(
            store, study, plan.artifacts, executor, results_dir, say
        )
        from atlbench.report import write_outputs

        summary.report_path = write_outputs(store, results_dir, options.reports_root, study.name)
    summary.seconds = time.perf_counter() - started
    ui.print_summary(summary)
    return summary


def _run_pending(
    store: Store, study: Study, plan: Plan, executor: Executor, options: SweepOptions, ui: Any,
    results_dir: Path,
) -> SweepSummary:  # fmt: skip
    """The first round: every pending estimator task and cell."""
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
    # the report shows the gaps and mappings of the current plan, not those of older suites
    for kind, task_type in (("domain_gap", DomainGapTask), ("label_mapping", LabelMappingTask)):
        store.set_meta(f"{kind}_keys", [t.key for t in plan.artifacts if isinstance(t, task_type)])
    pending, summary.skipped_failed = _pending(plan, statuses, options.retry_failed)
    done_estimates = store.estimate_keys()
    estimates = [
        t for t in plan.estimates if any((t.key, e) not in done_estimates for e in t.estimators)
    ]

    write_cell = _cell_writer(store, summary, ui, options)

    def on_result(task: Task, result: TaskResult) -> None:
        if isinstance(task, Cell):
            write_cell(task, result)
        else:
            assert isinstance(task, EstimateTask) and isinstance(result, list)
            store.put_estimates(result)
            ui.estimates_done(task, result)

    # estimator tasks first: they warm the feature cache for the frozen strategies.
    # --fail-fast raises StopSweep: stop there, keep what finished
    tasks: list[Task] = [*estimates, *pending]
    with ui.running(summary, pending, len(estimates)), contextlib.suppress(StopSweep):
        executor.run(study, tasks, on_result, ui.cell_progress, results_dir / "checkpoints")
    return summary


def _cell_writer(
    store: Store, summary: SweepSummary, ui: Any, options: SweepOptions
) -> Callable[[Task, TaskResult], None]:
    """Commit a finished cell as it arrives (``--fail-fast`` stops the sweep at a failure)."""

    def on_result(task: Task, result: TaskResult) -> None:
        assert isinstance(task, Cell) and isinstance(result, tuple)
        record, preds = result  # every executor hands a CellRecord, a crashed worker's too
        store.put_cell(record, preds)
        summary.ran += 1
        ui.cell_done(task, record)
        if record.status != Status.DONE:
            summary.failed.append((task, record.error or ""))
            if options.fail_fast:
                summary.stopped = True
                raise StopSweep(record.error or "")

    return on_result


def run_artifact_tasks(
    store: Store,
    study: Study,
    tasks: Sequence[ArtifactTask],
    executor: Executor,
    results_dir: Path,
    say: Callable[[str], None] | None = None,
) -> ArtifactRun:
    """The second round: run the artifact tasks whose result is not stored yet.

    A task that needs cells runs only once they are done (a CKA task gets their checkpoints).
    Results are written in the order of ``tasks`` whatever order they finish in, so the store,
    and the report read from it, are the same with any executor. A task that fails or produces
    nothing is skipped with its reason: it is a view on the results and must not cost the sweep
    its report.
    """
    run = ArtifactRun()
    stored = {k: {a.get("key"): a for a in store.artifacts(k)} for k in {t.ARTIFACT for t in tasks}}
    statuses = store.statuses()
    records: dict[str, dict[str, Any]] | None = None
    todo: dict[str, ArtifactTask] = {}
    for task in tasks:
        old = stored[task.ARTIFACT].get(task.key)
        if old is not None:
            run.existing += 1
            _relabel(store, task, old)
            continue
        unfinished = [k for k in task.needs if statuses.get(k) != "done"]
        if unfinished:
            state = statuses.get(unfinished[0]) or "not run"
            run.skipped.append(f"{task.label}: cell {unfinished[0]} {state}")
            continue
        if isinstance(task, CkaTask):
            if records is None:
                rows = store.records().to_dict("records")
                records = {str(r["key"]): {str(k): v for k, v in r.items()} for r in rows}
            attached = attach_checkpoints(task, records, results_dir)
            if isinstance(attached, TaskSkipped):
                run.skipped.append(attached.reason)
                continue
            task = attached
        todo.setdefault(task.key, task)  # two ids of the same content: one task
    order = _InOrder(list(todo))

    def on_result(task: Task, result: TaskResult) -> None:
        for artifact in order.ready(task.key, result):
            if isinstance(artifact, TaskSkipped):
                if artifact.error:
                    log.warning("skipped: %s", artifact.reason)
                run.skipped.append(artifact.reason)
                continue
            assert not isinstance(artifact, (tuple, list))  # an artifact task's result
            store.put_artifact(artifact.key, artifact.KIND, artifact.payload())
            run.computed.append(artifact.key)
            line = artifact.summary_line()
            if say is not None and line is not None:
                say(line)

    executor.run(study, list(todo.values()), on_result, _no_progress, results_dir / "checkpoints")
    return run


def _relabel(store: Store, task: ArtifactTask, old: dict[str, Any]) -> None:
    """A stored domain gap whose ids were renamed in the suite (same content, same key) takes the
    current names, so the report shows them."""
    if not isinstance(task, DomainGapTask):
        return
    current = {"source": task.source, "target": task.target}
    if any(old.get(k) != v for k, v in current.items()):
        store.put_artifact(task.key, task.ARTIFACT, old | current)


class _InOrder:
    """Hands results on in the order of their keys, whatever order they arrive in."""

    def __init__(self, keys: list[str]) -> None:
        self._keys, self._next = keys, 0
        self._held: dict[str, TaskResult] = {}

    def ready(self, key: str, result: TaskResult) -> list[TaskResult]:
        self._held[key] = result
        out = []
        while self._next < len(self._keys) and self._keys[self._next] in self._held:
            out.append(self._held.pop(self._keys[self._next]))
            self._next += 1
        return out


def _no_progress(cell: Cell, message: str) -> None:
    """Artifact tasks report their result, not their steps."""


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
