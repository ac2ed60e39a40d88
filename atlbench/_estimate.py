"""``atlbench estimate``: rank candidate sources for a target from frozen features alone.

This is the "which model should I start from" answer in seconds: one forward pass per source over
the target's training split (cached, shared with later sweeps), then every estimator on it.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from atlbench._cache import content_hash
from atlbench._timing import resolve_device
from atlbench.errors import SuiteError
from atlbench.plan import EstimateTask
from atlbench.registry import ESTIMATORS, suggest
from atlbench.study import load_study


def rank_sources(
    suite_path: str | Path,
    target_id: str | None = None,
    estimators: list[str] | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """Scores of every compatible (source, target) pair on the target's whole train split.

    Columns: target, source, estimator, score, time_s, feature_time_s, error, set_level (the
    score is normalised over the candidate set, so it changes when a candidate is added), and
    rank (1 = predicted best, per target and estimator).
    """
    from atlbench._runner import Worker

    study = load_study(suite_path)
    names = list(estimators) if estimators else list(study.suite.estimators) or ["logme"]
    for name in names:
        if name not in ESTIMATORS:
            raise SuiteError(f"unknown estimator {name!r}{suggest(name, ESTIMATORS)}")
    targets = study.pick("target", [target_id] if target_id is not None else None)
    worker = Worker(study, resolve_device(device or study.suite.device))
    rows = []
    for tid in targets:
        target = study.target(tid)
        sources = tuple(s.id for s in study.sources.values() if s.modality == target.modality)
        if not sources:
            continue
        task = EstimateTask(content_hash(["estimate", tid, sources]), tid, sources, tuple(names))
        for row in worker.run_estimates(task):
            extra = row.get("extra") or {}
            rows.append(
                {
                    "target": tid,
                    "source": row["source"],
                    "estimator": row["estimator"],
                    "score": row.get("score"),
                    "time_s": row.get("time_s"),
                    "feature_time_s": extra.get("feature_time_s"),
                    "error": row.get("error") or "",
                    "set_level": bool(extra.get("set_level", False)),
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
        set_level = set(grp.loc[grp["set_level"].astype(bool), "estimator"])
        headers = [f"{n}*" if n in set_level else n for n in names]
        table = Table("source", *headers, "feature time (s)", title=f"Sources ranked for {target}")
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
        if set_level:
            console.print(
                "[dim]* normalised over this set of candidates: the score changes when a "
                "candidate is added or removed[/]"
            )
        est_time = grp["time_s"].fillna(0).sum()
        console.print(
            f"[dim]estimators took {est_time:.2f} s in total; baseline_* rows never look at "
            "the target: an estimator that does not beat them adds nothing[/]"
        )
