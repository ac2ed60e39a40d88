"""The ``atlbench`` command line: sweep, report, leaderboard, import, estimate, recommend, cka,
drift, zoo, list.

Every user-facing error is an :class:`~atlbench.errors.AtlbenchError`: it prints as one line on
stderr and exits with code 2, no traceback. A sweep whose cells failed exits with code 1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from atlbench.errors import AtlbenchError
from atlbench.version import __version__

__all__ = ["main"]

if TYPE_CHECKING:
    from atlbench.store import Store


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="atlbench")
def cli() -> None:
    """Benchmark transfer learning: which source model, which adaptation, and does it help."""


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--dry-run", is_flag=True, help="Print the plan (cells, how many done) and exit.")
@click.option("--retry-failed", is_flag=True, help="Re-run cells that failed before.")
@click.option("--fail-fast", is_flag=True, help="Stop at the first failed cell.")
@click.option(
    "--results-dir", default="results", type=click.Path(path_type=Path), show_default=True
)
@click.option(
    "--reports-dir", default="reports", type=click.Path(path_type=Path), show_default=True
)
@click.option("--device", default=None, help="auto | cpu | cuda | cuda:N (overrides the suite).")
@click.option(
    "--executor",
    default="local",
    show_default=True,
    help="Where cells run: a registered executor (atlbench list executors).",
)
@click.option("--address", default=None, help="Ray cluster address (auto | HOST:PORT).")
@click.option(
    "--jobs",
    default="auto",
    show_default=True,
    help="Worker processes of the local executor: N, or auto (one per core on a CPU, at most 4; "
    "one on a GPU). On a CPU every process computes with one thread, so results do not depend "
    "on it.",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or summary.")
@click.option(
    "--log-json",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Append one JSON line per event (start, each cell, estimators, end) to this file.",
)
def sweep(
    suite: Path,
    dry_run: bool,
    retry_failed: bool,
    fail_fast: bool,
    results_dir: Path,
    reports_dir: Path,
    device: str | None,
    executor: str,
    address: str | None,
    jobs: str,
    quiet: bool,
    log_json: Path | None,
) -> None:
    """Run every pending cell of SUITE, then write the leaderboard CSVs and the HTML report."""
    from atlbench.sweep import SweepOptions, run_sweep

    options = SweepOptions(
        results_root=results_dir,
        reports_root=reports_dir,
        dry_run=dry_run,
        retry_failed=retry_failed,
        fail_fast=fail_fast,
        device=device,
        executor=executor,
        address=address,
        quiet=quiet,
        log_json=log_json,
        jobs=_jobs(jobs),
    )
    summary = run_sweep(suite, options)
    if summary.failed or summary.skipped_failed:  # results are incomplete
        sys.exit(1)


@cli.command()
@click.argument("results_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--reports-dir", default="reports", type=click.Path(path_type=Path), show_default=True
)
def report(results_dir: Path, reports_dir: Path) -> None:
    """Regenerate the CSVs and the HTML report of RESULTS_DIR from stored records (no compute)."""
    from atlbench.report import write_outputs

    store = _open_store(results_dir)
    with store:
        name = (store.meta("suite") or {}).get("name") or results_dir.name
        path = write_outputs(store, results_dir, reports_dir, name)
    click.echo(f"wrote {path} and CSVs in {results_dir}")


@cli.command()
@click.argument("results_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--target", default=None, help="Only this target.")
def leaderboard(results_dir: Path, target: str | None) -> None:
    """Print the per-target leaderboard of RESULTS_DIR."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from atlbench.report._views import Views

    with _open_store(results_dir) as store:
        board = Views.from_store(store).leaderboard
    if target is not None:
        if target not in set(board["target"]):
            raise AtlbenchError(f"no results for target {target!r} in {results_dir}")
        board = board[board["target"] == target]
    table = Table(
        "target",
        "budget",
        "#",
        "source",
        "strategy",
        "acc",
        "±",
        "gain vs scratch",
        "vs scratch",
        "same algorithm",
    )
    row: Any  # a leaderboard row: the stubs type every field as any pandas scalar
    for row in board.itertuples():
        gain = (
            ""
            if row.gain_vs_scratch != row.gain_vs_scratch
            else f"{row.gain_vs_scratch * 100:+.1f}"
        )
        std = "" if row.std_acc != row.std_acc else f"{row.std_acc:.3f}"
        table.add_row(
            escape(str(row.target)),
            row.budget,
            str(row.rank),
            escape(str(row.source)),
            escape(str(row.strategy)),
            f"{row.mean_acc:.3f}",
            std,
            gain,
            str(row.scratch_verdict) if row.scratch_verdict == row.scratch_verdict else "",
            str(row.verdict) if row.verdict == row.verdict else "",
        )
    console = Console(highlight=False)
    if not console.is_terminal:  # piped: never truncate names to fit an 80-column default
        console.width = 200
    console.print(table)


@cli.command()
@click.argument("results_dir", type=click.Path(file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--predictions", is_flag=True, help="Add each cell's raw test predictions.")
def export(results_dir: Path, out: Path, predictions: bool) -> None:
    """Every cell record of RESULTS_DIR as one table: OUT.parquet or OUT.csv (no compute)."""
    from atlbench.store import export_records

    with _open_store(results_dir) as store:
        rows = export_records(store, out, predictions)
    click.echo(f"wrote {rows} records to {out}")


@cli.command("import")
@click.argument("table")
@click.option(
    "--into",
    "into",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="New results directory to write (must not hold a store).",
)
@click.option(
    "--truth",
    default=None,
    help="Strategy estimators are judged against (default: finetune, or the only one).",
)
def import_(table: str, into: Path, truth: str | None) -> None:
    """Import TABLE (CSV or Parquet of external results, or a shipped table's name such as
    sfda-supervised) as a results store that report and recommend read.

    Columns: source, target, test_acc (or accuracy, value; fraction or percent); optional
    budget, seed, strategy; estimator scores in columns named after estimators (or
    score_NAME); model metadata in params and imagenet_top1, filled from published figures
    for known hub models when absent.
    """
    from atlbench.commands._import_results import import_command

    import_command(table, into, truth, echo=click.echo)


LISTS = ("sources", "targets", "strategies", "estimators", "executors", "builtin")


@cli.command("list")
@click.argument("what", type=click.Choice(LISTS), default="strategies")
def list_components(what: str) -> None:
    """List the registered source kinds, target kinds, strategies, estimators, executors or
    built-in tasks."""
    import atlbench._components
    import atlbench.executors  # noqa: F401  (registers the executors)
    import atlbench.registry as registry
    from atlbench.targets.builtin import TASKS

    names = {
        "sources": registry.SOURCE_KINDS.names(),
        "targets": registry.TARGET_KINDS.names(),
        "strategies": registry.STRATEGIES.names(),
        "estimators": registry.ESTIMATORS.names(),
        "executors": registry.EXECUTORS.names(),
        "builtin": list(TASKS),
    }[what]
    for name in names:
        click.echo(name)


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--target", "target_id", default=None, help="Target id (default: every target).")
@click.option("--estimators", default=None, help="Comma-separated (default: the suite's list).")
@click.option("--csv", "csv_path", default=None, type=click.Path(path_type=Path), help="Write CSV.")
@click.option("--device", default=None)
def estimate(
    suite: Path,
    target_id: str | None,
    estimators: str | None,
    csv_path: Path | None,
    device: str | None,
) -> None:
    """Rank SUITE's sources for a target by transferability estimators, without fine-tuning."""
    from atlbench._estimate import rank_sources, render_ranking

    frame = rank_sources(
        suite, target_id, estimators.split(",") if estimators else None, device=device
    )
    render_ranking(frame)
    if csv_path is not None:
        from atlbench._cache import atomic_write_text

        atomic_write_text(csv_path, frame.to_csv(index=False, float_format="%.6g"))
        click.echo(f"wrote {csv_path}")


@cli.command()
@click.argument(
    "results_dirs", nargs=-1, required=True, type=click.Path(file_okay=False, path_type=Path)
)
@click.option(
    "--suite",
    "suite_path",
    default=None,
    type=click.Path(dir_okay=False, path_type=Path),
    help="Suite that defines the new target and the candidate sources (needed to score "
    "estimators on the target; without it the model uses history alone and loads no data).",
)
@click.option("--target", "target_id", required=True, help="Target to rank for (an id of --suite).")
@click.option(
    "--budget", default=None, help="Label budget to model, e.g. 5/class (default: the only one)."
)
@click.option(
    "--level",
    default=0.9,
    type=click.FloatRange(0.5, 0.99),
    show_default=True,
    help="Coverage the prediction intervals aim at.",
)
@click.option(
    "--alpha",
    default=1.0,
    type=click.FloatRange(min=0.0, min_open=True),
    show_default=True,
    help="Ridge penalty on the standardised coefficients.",
)
@click.option("--device", default=None)
def recommend(
    results_dirs: tuple[Path, ...],
    suite_path: Path | None,
    target_id: str,
    budget: str | None,
    level: float,
    alpha: float,
    device: str | None,
) -> None:
    """Rank sources for a new target from RESULTS_DIRS' history (and its estimator scores).

    Fits, within each stored target, a ridge of fine-tuning accuracy on z-scored estimator
    scores and each source's relative record on the other targets; validates it holding out one
    target at a time beside every single estimator and baseline, and falls back to history alone
    when it does not beat history. Then ranks --suite's sources (or, without --suite, every
    stored source) for --target; the target's data is read only if the model uses an estimator.
    Sources are matched across stores by source id.
    """
    from atlbench.commands._recommend import recommend_command

    recommend_command(
        list(results_dirs), suite_path, target_id, budget, level, alpha, device, echo=click.echo
    )


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--a", "a", required=True, help="Source id of model A (pre-trained weights).")
@click.option(
    "--a-checkpoint",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Load these encoder weights into A (e.g. a fine-tuned best.safetensors).",
)
@click.option("--b", "b", required=True, help="Source id of model B, or 'scratch' (A's arch).")
@click.option("--b-checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None)
@click.option("--target", required=True, help="Target id whose split feeds both models.")
@click.option(
    "--split", default="test", type=click.Choice(["train", "val", "test"]), show_default=True
)
@click.option("--max-examples", default=1000, type=click.IntRange(min=4), show_default=True)
@click.option(
    "--batch-size",
    default=500,
    type=click.IntRange(min=4),
    show_default=True,
    help="Examples per Gram; one batch gives the exact linear CKA of the subset.",
)
@click.option("--debiased", is_flag=True, help="Unbiased HSIC (Song et al. 2012) per batch.")
@click.option(
    "--out", default="cka", type=click.Path(file_okay=False, path_type=Path), show_default=True
)
@click.option("--device", default=None)
def cka(
    suite: Path,
    a: str,
    a_checkpoint: Path | None,
    b: str,
    b_checkpoint: Path | None,
    target: str,
    split: str,
    max_examples: int,
    batch_size: int,
    debiased: bool,
    out: Path,
    device: str | None,
) -> None:
    """Layer x layer linear CKA of two models on a target split: OUT/cka.csv and OUT/cka.svg."""
    from atlbench.commands._cka import cka_command

    cka_command(
        suite,
        a,
        b,
        target,
        a_checkpoint,
        b_checkpoint,
        split,
        max_examples,
        batch_size,
        debiased,
        out,
        device,
        echo=click.echo,
    )


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--source", "source_id", required=True, help="Source id whose features are compared.")
@click.option("--reference", required=True, help="Target id of the reference data.")
@click.option("--new", "new", required=True, help="Target id of the new data.")
@click.option(
    "--reference-split",
    default="train",
    type=click.Choice(["train", "val", "test"]),
    show_default=True,
)
@click.option(
    "--new-split", default="train", type=click.Choice(["train", "val", "test"]), show_default=True
)
@click.option("--permutations", default=500, type=click.IntRange(min=1), show_default=True)
@click.option("--alpha", default=0.05, type=float, show_default=True)
@click.option("--seed", default=0, type=int, show_default=True, help="Subsampling/permutations.")
@click.option(
    "--max-samples",
    default=1500,
    type=click.IntRange(min=2),
    show_default=True,
    help="Examples per side for MMD (the kernel matrix is (2 x this)^2).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@click.option("--device", default=None)
def drift(
    suite: Path,
    source_id: str,
    reference: str,
    new: str,
    reference_split: str,
    new_split: str,
    permutations: int,
    alpha: float,
    seed: int,
    max_samples: int,
    as_json: bool,
    device: str | None,
) -> None:
    """Test whether NEW data drifted from REFERENCE in a source model's feature space.

    Both are target ids of SUITE (any kind). Prints MMD^2 with its permutation p-value, the
    Frechet distance and a verdict. Exit code 0 whether or not drift is found (read the verdict
    or --json's "drifted"); 2 on bad input.
    """
    from atlbench._drift import detect_drift, render

    report = detect_drift(
        suite,
        source_id,
        reference,
        new,
        reference_split,
        new_split,
        permutations,
        alpha,
        seed,
        max_samples,
        device,
    )
    click.echo(render(report, as_json))


@cli.command()
@click.argument("suite", type=click.Path(dir_okay=False, path_type=Path))
def zoo(suite: Path) -> None:
    """Pre-train (or verify the cache of) every zoo source of SUITE."""
    from atlbench.sources.zoo import ZooParams, pretrain
    from atlbench.study import load_study

    study = load_study(suite)
    for source in study.sources.values():
        if source.kind != "zoo" or not isinstance(source.params, ZooParams):
            continue
        meta = pretrain(source.params, progress=click.echo)
        click.echo(f"{source.id}: source accuracy {meta.get('val_acc', float('nan')):.3f}")


def _jobs(value: str) -> int | None:
    if value == "auto":
        return None
    if not value.isdigit() or int(value) < 1:
        raise AtlbenchError(f"--jobs must be a positive number or auto, not {value!r}")
    return int(value)


def _open_store(results_dir: Path) -> Store:
    from atlbench.store import Store

    return Store(results_dir)  # read-only; a missing store is a one-line error


def main(argv: list[str] | None = None) -> None:
    """Entry point: one-line errors, exit 2 for bad input, 130 on Ctrl-C."""
    if argv is None and Path(sys.argv[0]).name in ("atlbench", "cli.py"):  # the program itself
        from atlbench._heap import restart_lean

        restart_lean()  # glibc reads its allocator settings only at start (see atlbench/_heap.py)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        cli.main(args=argv, prog_name="atlbench", standalone_mode=False)
    except AtlbenchError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(err.exit_code)
    except click.exceptions.Abort:
        click.echo("interrupted; finished cells are saved, re-run to resume", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("interrupted; finished cells are saved, re-run to resume", err=True)
        sys.exit(130)
    except click.ClickException as err:
        err.show()
        sys.exit(2)


if __name__ == "__main__":
    main()
