"""Seed rounds: with a seed schedule, the plan grows only where a comparison is still open.

After the first round (the schedule's ``start`` seeds) the driver analyses what is stored, as
the report will: every comparison of both tables (same algorithm, scratch), with sequential
p-values over the looks taken (:mod:`atlbench.analysis._sequential`). A comparison is closed
when it is decided (significant either way, or equivalent), when it has the schedule's
``max`` seeds, when even ``max`` seeds would not decide it at its current estimate (futility),
when racing showed its recipe worse than its target's leader
(:mod:`atlbench.analysis._racing`), or when the compute cap leaves no room. Every open one gets
the seeds of its next look: its own cells and its partners' (scratch, random init). Under a cap,
seeds go first to the comparisons nearest a decision (smallest adjusted p-value). Each round is
an ordinary list of cells for the executor; the driver only plans and writes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from atlbench.plan import Cell, build_plan
from atlbench.record import Role
from atlbench.seeds import SeedSchedule
from atlbench.store import Store
from atlbench.study import Study

__all__ = ["AdaptiveRun", "OpenQuestion", "next_round", "run_seed_rounds"]

GroupKey = tuple[str, str, str, str]  # source, target, strategy, budget


@dataclass(frozen=True)
class OpenQuestion:
    """A comparison left open by the compute cap, and what closing it would cost."""

    key: GroupKey
    comparison: str
    n_seeds: int
    p_adj: float
    cells_to_max: int
    seconds_to_max: float


@dataclass
class AdaptiveRun:
    """What the seed rounds did: per round the look and cells added, the reasons comparisons got
    no more seeds, and the questions a compute cap left open."""

    rounds: list[dict[str, Any]] = field(default_factory=list)
    held: dict[GroupKey, str] = field(default_factory=dict)
    open_questions: list[OpenQuestion] = field(default_factory=list)
    capped: bool = False

    def meta(self) -> dict[str, Any]:
        """JSON for the store (the report reads it)."""
        return {
            "rounds": self.rounds,
            "held": [[*k, v] for k, v in self.held.items()],
            "open": [
                {"source": q.key[0], "target": q.key[1], "strategy": q.key[2],
                 "budget": q.key[3], "comparison": q.comparison, "n_seeds": q.n_seeds,
                 "p_adj": q.p_adj, "cells_to_max": q.cells_to_max,
                 "seconds_to_max": q.seconds_to_max}
                for q in self.open_questions
            ],
            "capped": self.capped,
        }  # fmt: skip


def _gains(
    records: pd.DataFrame, correct: Any, study: Study, schedule: SeedSchedule
) -> dict[str, pd.DataFrame]:
    from atlbench.analysis import paired_gains
    from atlbench.analysis._pairing import COMPARISONS

    suite = study.suite
    return {
        c: paired_gains(records, correct, c, equivalence_margin=suite.equivalence_margin,
                        correction=suite.correction, schedule=schedule)
        for c in COMPARISONS
    }  # fmt: skip


def _eliminated(records: pd.DataFrame, schedule: SeedSchedule, alpha: float) -> dict[GroupKey, str]:
    from atlbench.analysis._racing import race

    done = records[
        (records["status"] == "done") & records["role"].isin([Role.TRANSFER, Role.BASELINE])
    ]
    if done.empty:
        return {}
    table = race(done, schedule, alpha)
    out: dict[GroupKey, str] = {}
    for row in table[table["eliminated"]].itertuples(index=False):
        key = (str(row.source), str(row.target), str(row.strategy), str(row.budget))
        out[key] = f"racing: worse than {row.leader} (race p = {row.p_race:.2g})"
    return out


def _seconds_per_cell(records: pd.DataFrame) -> dict[GroupKey, float]:
    done = records[records["status"] == "done"]
    if done.empty or "wall_time_s" not in done:
        return {}
    med = done.groupby(["source", "target", "strategy", "budget"])["wall_time_s"].median()
    return {_key(k): float(v) for k, v in med.items() if np.isfinite(v)}


def next_round(
    study: Study,
    records: pd.DataFrame,
    correct: Any,
    planned: int,
    elapsed_s: float,
) -> tuple[list[Cell], AdaptiveRun]:
    """The cells of the next round (empty: every comparison is closed) and why the others stop.

    ``planned`` is the number of cells the sweep has planned so far (the cap counts them),
    ``elapsed_s`` the sweep's time so far (for ``compute: {hours}``).
    """
    suite = study.suite
    schedule = suite.schedule
    assert schedule is not None
    run = AdaptiveRun()
    if records.empty:
        return [], run
    frames = _gains(records, correct, study, schedule)
    held = _eliminated(records, schedule, 0.05) if suite.racing else {}
    # a failed cell counts as run (it is not retried here), so it cannot stall its recipe
    seeds_of = records.groupby(["source", "target", "strategy", "budget"])["seed"].max()
    top = {_key(k): int(v) - schedule.first + 1 for k, v in seeds_of.items()}
    # open recipe -> (smallest adjusted p over its open comparisons, arch, comparisons, partners)
    wanted: dict[GroupKey, tuple[float, str, list[str], set[Role]]] = {}
    for comparison, frame in frames.items():
        for row in frame.to_dict("records"):
            key = (str(row["source"]), str(row["target"]), str(row["strategy"]),
                   str(row["budget"]))  # fmt: skip
            n = top.get(key, 0)
            is_open = str(row["stop"]).startswith("open") and int(row["n_pairs"]) >= 1
            if not is_open or n >= schedule.max or key in held:
                continue  # decided, futile, at the maximum, without a partner, or raced out
            # nearest a decision: the smaller corrected p-value, of the test or of equivalence
            near = [float(row["p_adj"]), float(row.get("p_equivalence_adj", np.nan))]
            p = min([v for v in near if np.isfinite(v)], default=1.0)
            old = wanted.get(key)
            comps = [*(old[2] if old else []), comparison]
            # the partner: the random-init twin for a frozen recipe against the same algorithm,
            # scratch training otherwise (atlbench.analysis._pairing)
            frozen = comparison == "same_algorithm" and not bool(row.get("trains_encoder", True))
            partners = (old[3] if old else set()) | {Role.RANDOM_INIT if frozen else Role.BASELINE}
            wanted[key] = (min(p, old[0]) if old else p, str(row["arch"]), comps, partners)
    if not wanted:
        run.held = held
        return [], run
    n_next = max(schedule.next_look(top.get(k, 0)) or schedule.max for k in wanted)
    grid = build_plan(study, seeds=schedule.seeds(n_next)).cells
    seconds = _seconds_per_cell(records)
    fallback = float(np.median(list(seconds.values()))) if seconds else 1.0
    chosen: dict[str, Cell] = {}
    chosen_s = 0.0  # the estimated seconds of the cells chosen so far this round
    cap = suite.compute
    for key, (p, arch, comps, partners) in sorted(wanted.items(), key=lambda kv: kv[1][0]):
        look = schedule.next_look(top.get(key, 0)) or schedule.max
        new_seeds = set(schedule.seeds(look)) - set(schedule.seeds(top.get(key, 0)))
        cells = [c for c in grid if c.seed in new_seeds and _serves(c, key, arch, partners)]
        cells = [c for c in cells if c.key not in chosen]
        cost = sum(seconds.get(_group(c), fallback) for c in cells)
        over = cap is not None and (
            (cap.cells is not None and planned + len(chosen) + len(cells) > cap.cells)
            or (cap.hours is not None and elapsed_s + chosen_s + cost > cap.hours * 3600)
        )
        if over:
            run.capped = True
            per_look = len(cells)
            looks_left = sum(1 for n in schedule.looks if n > top.get(key, 0))
            run.held[key] = "compute cap reached"
            for comparison in comps:
                run.open_questions.append(
                    OpenQuestion(key, comparison, top.get(key, 0), p, per_look * looks_left,
                                 cost * looks_left)
                )  # fmt: skip
            continue
        for c in cells:
            chosen[c.key] = c
        chosen_s += cost
    run.held |= held
    run.rounds.append({"seeds": n_next, "open": len(wanted), "cells": len(chosen)})
    return list(chosen.values()), run


def _key(index: Any) -> GroupKey:
    source, target, strategy, budget = (str(v) for v in index)
    return source, target, strategy, budget


def _group(cell: Cell) -> GroupKey:
    return (cell.source, cell.target, cell.strategy, cell.budget.label)


def _serves(cell: Cell, key: GroupKey, arch: str, partners: set[Role]) -> bool:
    """The cell is the recipe's own, or one of the partners it needs (scratch of the same
    architecture, target and budget; the random-init twin of the same strategy)."""
    _, target, strategy, budget = key
    if cell.target != target or cell.budget.label != budget:
        return False
    if _group(cell) == key:
        return True
    if cell.arch != arch or cell.role not in partners:
        return False
    return cell.role == Role.BASELINE or cell.strategy == strategy


def run_seed_rounds(
    store: Store,
    study: Study,
    planned: list[Cell],
    run_cells: Callable[[list[Cell]], None],
    started: float,
    say: Callable[[str], None] | None = None,
) -> AdaptiveRun:
    """Rounds until every comparison is closed; each round's cells join the store's plan first,
    so a resumed sweep finds them done and goes on where it stopped."""
    from atlbench._runner import cell_identity

    total = AdaptiveRun()
    plan = {c.key: c for c in planned}
    for _ in range(1000):  # a schedule has at most (max - start) / step + 1 looks
        records = store.records()
        cells, run = next_round(
            study, records, store.correctness(), len(plan), time.perf_counter() - started
        )
        total.held, total.open_questions, total.capped = run.held, run.open_questions, run.capped
        if not cells:
            break
        total.rounds += run.rounds
        fresh = [c for c in cells if c.key not in plan]
        if not fresh:
            break  # nothing new to look at (the cells of this look are planned already)
        for c in fresh:
            plan[c.key] = c
        store.set_plan([cell_identity(c) for c in plan.values()])
        statuses = store.statuses()
        pending = [c for c in fresh if statuses.get(c.key) not in ("done", "failed")]
        if say is not None:
            info = run.rounds[-1]
            say(
                f"seed round: {info['open']} comparisons open, {len(cells)} cells up to "
                f"{info['seeds']} seeds ({len(pending)} to run)"
            )
        if pending:
            run_cells(pending)
    store.set_meta("seed_rounds", total.meta())
    return total
