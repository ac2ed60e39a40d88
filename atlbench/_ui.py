"""What a sweep says while it runs: a live bar on a terminal, one line per cell in a log.

On a terminal: a progress bar over cells and estimator tasks, with the current cell's epoch and
an ETA. When stdout is not a terminal (``nohup``, CI, a batch job): one plain line per finished
cell with its accuracy, its time, done/total and the ETA, so a log shows where a long sweep is.
``--log-json FILE`` writes the same events as JSON lines, for dashboards.

The ETA sums, over the cells left, the mean wall time of the finished cells of the same strategy
(a kNN cell costs a fraction of a second, a fine-tune cell many seconds), falling back to the mean
of all finished cells for a strategy not seen yet, and scales it by the elapsed wall time per
second of finished work (cells run in parallel with ``--jobs``).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from atlbench.record import CellRecord, Status


def _clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return (
        f"{seconds // 3600}h{seconds // 60 % 60:02d}m"
        if seconds >= 3600
        else f"{seconds // 60}m{seconds % 60:02d}s"
    )


class SweepUI:
    def __init__(
        self,
        quiet: bool = False,
        console: Console | None = None,
        log_json: str | Path | None = None,
        live: bool | None = None,
    ) -> None:
        self.console = console or Console(stderr=False, highlight=False)
        self.quiet = quiet
        self.live = self.console.is_terminal if live is None else live
        self._json: IO[str] | None = open(log_json, "a", encoding="utf-8") if log_json else None  # noqa: SIM115
        self._progress: Progress | None = None
        self._task: Any = None
        self._total = self._done = 0
        self._left: dict[str, int] = {}  # cells still to run, per strategy ("" = estimators)
        self._seconds: dict[str, list[float]] = {}
        self._last = self._begun = time.monotonic()

    def event(self, name: str, **fields: Any) -> None:
        """One JSON line (``--log-json``); every event has its name and a Unix time."""
        if self._json is not None:
            self._json.write(
                json.dumps({"event": name, "time": time.time()} | fields, default=str) + "\n"
            )
            self._json.flush()

    def close(self) -> None:
        if self._json is not None:
            self._json.close()
            self._json = None

    def say(self, message: str) -> None:
        """A plain progress line (pre-flight, the driver's studies after the cells)."""
        self.console.print(escape(message), soft_wrap=True)

    def eta_s(self) -> float | None:
        done = [t for ts in self._seconds.values() for t in ts]
        if not done or sum(done) <= 0:
            return None
        overall = sum(done) / len(done)
        left = sum(
            n * (sum(self._seconds[k]) / len(self._seconds[k]) if self._seconds.get(k) else overall)
            for k, n in self._left.items()
        )
        # cells may run in parallel (--jobs): scale the remaining work by how fast finished
        # work has been getting done in wall-clock time
        return left * (time.monotonic() - self._begun) / sum(done)

    def eta_is_floor(self) -> bool:
        """True while some strategy with cells left has none finished: its cost is unknown, and
        the ETA counts it at the mean of the others (often cheap probes), so it is a floor."""
        return any(n > 0 and not self._seconds.get(k) for k, n in self._left.items())

    def _finished(self, kind: str, seconds: float) -> None:
        self._done += 1
        self._left[kind] = max(0, self._left.get(kind, 0) - 1)
        self._seconds.setdefault(kind, []).append(seconds)

    def print_plan(self, summary: Any, statuses: dict[str, str]) -> None:
        plan = summary.plan
        failed = sum(1 for c in plan.cells if statuses.get(c.key) == "failed")
        todo = len(plan.cells) - summary.done_before - failed
        self.console.print(
            f"[bold]{summary.study.name}[/]: {len(plan.cells)} cells "
            f"({summary.done_before} done, {failed} failed, {todo} to run), "
            f"{len(plan.estimates)} (source, target) estimator pairs"
        )
        table = Table("target", "source", "strategy", "budgets", "seeds", "done", box=None)
        groups: dict[tuple[str, str, str], list[Any]] = {}
        for cell in plan.cells:
            groups.setdefault((cell.target, cell.source, cell.strategy), []).append(cell)
        for (target, source, strategy), cells in groups.items():
            done = sum(1 for c in cells if statuses.get(c.key) == "done")
            table.add_row(
                escape(target),
                escape(source),
                escape(strategy),
                ", ".join(sorted({c.budget.label for c in cells})),
                str(len({c.seed for c in cells})),
                f"{done}/{len(cells)}",
            )
        self.console.print(table)
        for line in plan.skipped:
            self.console.print(f"[dim]skipped: {line}[/]")

    @contextmanager
    def running(
        self, summary: Any, pending: list[Any], n_estimates: int, header: bool = True
    ) -> Iterator[None]:
        """Progress over ``pending`` cells; ``header=False`` for a seed round (it has its own)."""
        n_cells = len(pending)
        self._total, self._done = n_cells + n_estimates, 0
        self._left = {"": n_estimates}
        for cell in pending:
            self._left[cell.strategy] = self._left.get(cell.strategy, 0) + 1
        self._seconds, self._last = {}, time.monotonic()
        self._begun = self._last
        self.event("sweep_start", suite=summary.study.name, cells=len(summary.plan.cells),
                   done_before=summary.done_before, to_run=n_cells,
                   estimator_tasks=n_estimates)  # fmt: skip
        if not self.quiet and header:
            self.console.print(
                f"[bold]{summary.study.name}[/]: {len(summary.plan.cells)} cells, "
                f"{summary.done_before} already done, {n_cells} to run, "
                f"{n_estimates} estimator tasks"
            )
        if self.quiet or not self.live or n_cells + n_estimates == 0:
            yield
            return
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TextColumn("[dim]{task.fields[detail]}"),
            console=self.console,
            transient=False,
        ) as progress:
            self._progress = progress
            self._task = progress.add_task("cells", total=n_cells + n_estimates, detail="")
            try:
                yield
            finally:
                self._progress = None

    def cell_progress(self, cell: Any, message: str) -> None:
        if self._progress is not None:
            self._progress.update(self._task, detail=escape(f"{cell.label}: {message}"))

    def cell_done(self, cell: Any, record: CellRecord) -> None:
        acc, wall = record.metrics.test_acc, record.cost.wall_time_s or 0.0
        done = record.status == Status.DONE
        self._finished(cell.strategy, wall)
        eta = self.eta_s()
        self.event("cell_done", key=cell.key, cell=cell.label, status=record.status.value,
                   test_acc=acc, wall_time_s=wall, done=self._done, total=self._total, eta_s=eta,
                   eta_is_floor=self.eta_is_floor(), error=record.error)  # fmt: skip
        if self._progress is not None:
            self._progress.advance(self._task)
            if not done:
                what = escape(f"{cell.label}: {record.error}")
                self._progress.console.print(f"[red]failed[/] {what}")
        elif not self.quiet:
            what = f"acc {acc:.3f}" if done and acc is not None else f"FAILED {record.error}"
            floor = "at least " if self.eta_is_floor() else ""
            eta_text = f", ETA {floor}{_clock(eta)}" if eta is not None else ""
            print(f"[{self._done}/{self._total}] {cell.label}: {what} in {wall:.1f} s{eta_text}",
                  file=sys.stdout, flush=True)  # fmt: skip

    def estimates_done(self, task: Any, rows: list[dict[str, Any]]) -> None:
        now = time.monotonic()
        self._finished("", now - self._last)
        self._last = now
        failed = sum(1 for r in rows if r.get("status") == "failed")
        budget = task.budget.label if task.budget else "all"
        self.event("estimates_done", target=task.target, budget=budget, seed=task.seed,
                   rows=len(rows), failed=failed, done=self._done, total=self._total)  # fmt: skip
        if self._progress is not None:
            self._progress.advance(self._task)
        elif not self.quiet:
            where = (
                f"{task.target} / {task.budget.label if task.budget else 'all'} / seed {task.seed}"
            )
            print(f"[{self._done}/{self._total}] estimators {where}: {len(rows) - failed} scores",
                  file=sys.stdout, flush=True)  # fmt: skip

    def print_summary(self, summary: Any) -> None:
        self.event("sweep_end", ran=summary.ran, failed=len(summary.failed),
                   seconds=summary.seconds,
                   report=str(summary.report_path) if summary.report_path else None)  # fmt: skip
        self.close()
        if self.quiet:
            return
        try:
            from atlbench.report._views import Views
            from atlbench.store import Store

            with Store(summary.results_dir) as store:
                views = Views.from_store(store)
                board = views.leaderboard
                rounds = views.frame("seed-rounds")
            best = board[board["rank"] == 1]
        except Exception:  # the summary must never hide the sweep's own outcome
            best, rounds = None, None
        if best is not None and len(best):
            table = Table("target", "budget", "best recipe", "acc [95% CI]", "vs scratch training",
                          title="Highest mean per target and budget")  # fmt: skip
            row: Any  # a leaderboard row: the stubs type every field as any pandas scalar
            for row in best.itertuples():
                ci = "" if row.ci_low != row.ci_low else f" [{row.ci_low:.3f}, {row.ci_high:.3f}]"
                gain = (
                    ""
                    if row.gain_vs_scratch != row.gain_vs_scratch
                    else (f"{row.gain_vs_scratch * 100:+.1f} pts, {row.scratch_verdict}")
                )
                table.add_row(
                    escape(str(row.target)), str(row.budget),
                    escape(f"{row.source} / {row.strategy}"), f"{row.mean_acc:.3f}{ci}", gain,
                )  # fmt: skip
            self.console.print(table)
        self.console.print(
            f"ran {summary.ran} cells in {summary.seconds:.1f} s; "
            f"{len(summary.failed)} failed; results in {summary.results_dir}"
            + (f"; report {summary.report_path}" if summary.report_path else "")
        )
        if rounds is not None and len(rounds):
            decided = rounds["stop"].astype(str).str.startswith("decided")
            near = rounds["near_threshold"].fillna(False).astype(bool)
            self.console.print(
                f"seed schedule: {int(decided.sum())} of {len(rounds)} comparisons decided, "
                f"{int(rounds['n_pairs'].sum())} paired seeds in all (see seed_rounds.csv); "
                f"{int(near.sum())} verdicts near their threshold, which another CPU's rounding "
                "could flip (near_threshold)"
            )
        if summary.skipped_failed:
            self.console.print(
                f"{summary.skipped_failed} previously failed cells skipped (use --retry-failed)"
            )
        for cell, error in summary.failed[:10]:
            self.console.print(f"[red]failed[/] {escape(f'{cell.label}: {error}')}")
