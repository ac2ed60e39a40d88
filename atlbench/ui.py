"""Terminal display: a live progress bar over cells (with the current epoch) and a summary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table


class SweepUI:
    def __init__(self, quiet: bool = False, console: Console | None = None) -> None:
        self.console = console or Console(stderr=False, highlight=False)
        self.quiet = quiet
        self._progress: Progress | None = None
        self._task: Any = None

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
    def running(self, summary: Any, n_cells: int, n_estimates: int) -> Iterator[None]:
        if not self.quiet:
            self.console.print(
                f"[bold]{summary.study.name}[/]: {len(summary.plan.cells)} cells, "
                f"{summary.done_before} already done, {n_cells} to run, "
                f"{n_estimates} estimator pairs"
            )
        if self.quiet or n_cells + n_estimates == 0:
            yield
            return
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
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

    def cell_done(self, cell: Any, record: dict[str, Any]) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)
            if record["status"] != "done":
                what = escape(f"{cell.label}: {record.get('error')}")
                self._progress.console.print(f"[red]failed[/] {what}")

    def estimates_done(self, task: Any, rows: list[dict[str, Any]]) -> None:
        if self._progress is not None:
            self._progress.advance(self._task)

    def print_summary(self, summary: Any) -> None:
        if self.quiet:
            return
        try:
            from atlbench.report.views import Views
            from atlbench.store import Store

            with Store(summary.results_dir) as store:
                board = Views.from_store(store).leaderboard
            best = board[board["rank"] == 1]
        except Exception:  # the summary must never hide the sweep's own outcome
            best = None
        if best is not None and len(best):
            table = Table("target", "budget", "best recipe", "acc [95% CI]", "vs scratch training",
                          title="Highest mean per target and budget")  # fmt: skip
            for row in best.itertuples():
                ci = "" if row.ci_low != row.ci_low else f" [{row.ci_low:.3f}, {row.ci_high:.3f}]"
                gain = "" if row.gain_vs_scratch != row.gain_vs_scratch else (
                    f"{row.gain_vs_scratch * 100:+.1f} pts, {row.scratch_verdict}"
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
        if summary.skipped_failed:
            self.console.print(
                f"{summary.skipped_failed} previously failed cells skipped (use --retry-failed)"
            )
        for cell, error in summary.failed[:10]:
            self.console.print(f"[red]failed[/] {escape(f'{cell.label}: {error}')}")
