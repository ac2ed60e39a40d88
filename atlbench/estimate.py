"""``atlbench estimate``: rank candidate sources for a target from frozen features alone.

This is the "which model should I start from" answer in seconds: one forward pass per source over
the target's training split (cached, shared with later sweeps), then every estimator on it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from atlbench.errors import SuiteError
from atlbench.plan import EstimateTask
from atlbench.suite import load_suite
from atlbench.timing import resolve_device


def rank_sources(
    suite_path: str | Path,
    target_id: str | None = None,
    estimators: list[str] | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """Scores of every compatible (source, target) pair; columns target, source, estimator, score,
    time_s, feature_time_s, rank (1 = predicted best, per target and estimator)."""
    from atlbench.estimators import ESTIMATORS
    from atlbench.runner import Worker
    from atlbench.sources import resolve_source
    from atlbench.targets import target_modality

    suite = load_suite(suite_path)
    names = list(estimators) if estimators else list(suite.estimators) or ["logme"]
    for name in names:
        if name not in ESTIMATORS:
            from atlbench.registry import suggest

            raise SuiteError(f"unknown estimator {name!r}{suggest(name, ESTIMATORS)}")
    targets = suite.targets
    if target_id is not None:
        targets = tuple(t for t in targets if t.id == target_id)
        if not targets:
            from atlbench.registry import suggest

            ids = [t.id for t in suite.targets]
            raise SuiteError(f"{suite_path}: no target {target_id!r}{suggest(target_id, ids)}")
    worker = Worker(suite, resolve_device(device or suite.device))
    rows = []
    for target in targets:
        modality = target_modality(target)
        for entry in suite.sources:
            source = resolve_source(entry, suite.trust_remote_code)
            if source.modality != modality:
                continue
            task = EstimateTask(
                f"estimate:{entry.id}:{target.id}", entry.id, target.id, tuple(names)
            )
            for row in worker.run_estimates(task):
                extra = row.get("extra") or {}
                rows.append(
                    {
                        "target": target.id,
                        "source": entry.id,
                        "estimator": row["estimator"],
                        "score": row.get("score"),
                        "time_s": row.get("time_s"),
                        "feature_time_s": extra.get("feature_time_s"),
                        "error": row.get("error", ""),
                    }
                )
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["rank"] = (
        frame.groupby(["target", "estimator"])["score"]
        .rank(ascending=False, method="min")
        .astype("Int64")
    )
    return frame.sort_values(["target", "estimator", "rank"]).reset_index(drop=True)


def render_ranking(frame: pd.DataFrame) -> None:
    """One table per target: sources as rows, estimators as columns, rank in brackets."""
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console(highlight=False)
    if frame.empty:
        console.print("no (source, target) pair with matching modality")
        return
    for target, grp in frame.groupby("target", sort=False):
        names = list(dict.fromkeys(grp["estimator"]))
        table = Table("source", *names, "feature time (s)", title=f"Sources ranked for {target}")
        first = names[0]
        order = grp[grp["estimator"] == first].sort_values("rank")["source"]
        for source in order:
            cells = []
            for name in names:
                row = grp[(grp["source"] == source) & (grp["estimator"] == name)].iloc[0]
                if pd.isna(row["score"]):
                    cells.append(f"[red]{escape(row['error'] or 'n/a')}[/]")
                else:
                    cells.append(f"{row['score']:.4g} ({row['rank']})")
            ftime = grp[grp["source"] == source]["feature_time_s"].dropna()
            table.add_row(escape(str(source)), *cells, f"{ftime.iloc[0]:.2f}" if len(ftime) else "")
        console.print(table)
        est_time = grp["time_s"].fillna(0).sum()
        console.print(f"[dim]estimators took {est_time:.2f} s in total[/]")
