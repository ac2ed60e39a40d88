"""The seed rounds' planning rule (atlbench._adaptive.next_round) on a real study and
synthetic analyses: which cells the next round gets, in which order under a compute cap, and
what the cap leaves open."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from atlbench import _adaptive
from atlbench.plan import build_plan
from atlbench.study import parse_study
from tests.conftest import tiny_suite

SUITE = tiny_suite(
    seeds={"start": 2, "step": 1, "max": 4},
    strategies=["linear_probe", "knn", "scratch"],
    estimators=[],
)
ARCH = "timm:test_resnet@32"


def _records(study: Any) -> pd.DataFrame:
    """Every first-round cell finished, 2 s each (scratch 10 s)."""
    rows = []
    for cell in build_plan(study).cells:
        rows.append(
            dict(key=cell.key, source=cell.source, target=cell.target, strategy=cell.strategy,
                 budget=cell.budget.label, seed=cell.seed, role=cell.role, status="done",
                 test_acc=0.8, arch=cell.arch,
                 wall_time_s=10.0 if cell.strategy == "scratch" else 2.0)
        )  # fmt: skip
    return pd.DataFrame(rows)


def _frame(rows: list[tuple[str, str, float, str]]) -> pd.DataFrame:
    """(source, strategy, p_adj, stop) rows of one comparison table."""
    return pd.DataFrame(
        [dict(source=s, target="d56", strategy=st, budget="4/class", n_pairs=2, p_adj=p,
              stop=stop, arch=ARCH, trains_encoder=st in ("finetune", "scratch"))
         for s, st, p, stop in rows]
    )  # fmt: skip


@pytest.fixture
def study() -> Any:
    return parse_study(SUITE)


def _patch(monkeypatch: pytest.MonkeyPatch, same: pd.DataFrame, scratch: pd.DataFrame) -> None:
    monkeypatch.setattr(
        _adaptive, "_gains", lambda *a, **k: {"same_algorithm": same, "scratch": scratch}
    )
    monkeypatch.setattr(_adaptive, "_eliminated", lambda *a, **k: {})


def test_only_open_comparisons_and_their_partners_get_the_next_look(
    study: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    same = _frame([("zoo-digits", "linear_probe", 0.2, "open at 2 seeds"),
                   ("zoo-digits", "knn", 0.001, "decided at 2 seeds")])  # fmt: skip
    scratch = _frame([("zoo-digits", "linear_probe", 0.5, "futile at 2 seeds: ..."),
                      ("zoo-digits", "knn", 0.3, "decided at 2 seeds")])  # fmt: skip
    _patch(monkeypatch, same, scratch)
    records = _records(study)
    cells, run = _adaptive.next_round(study, records, None, len(records), 0.0)
    got = sorted((c.source, c.strategy, c.seed) for c in cells)
    # the open probe comparison (same algorithm) and its random-init twin, at seed 2 only
    assert got == [
        ("test_resnet (random init)", "linear_probe", 2),
        ("zoo-digits", "linear_probe", 2),
    ]
    assert run.rounds == [{"seeds": 3, "open": 1, "cells": 2}] and not run.capped
    # open against scratch instead: the scratch baseline is its partner
    scratch = _frame([("zoo-digits", "linear_probe", 0.5, "open at 2 seeds")])
    _patch(monkeypatch, _frame([]), scratch)
    cells, run = _adaptive.next_round(study, records, None, len(records), 0.0)
    assert sorted((c.source, c.strategy) for c in cells) == [
        ("test_resnet (random init)", "scratch"),
        ("zoo-digits", "linear_probe"),
    ]


def _two_open(study: Any, monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:
    """Two same-algorithm comparisons open at 2 seeds, knn nearer a decision (p 0.06) than
    the probe (p 0.2); the study's records."""
    same = _frame([("zoo-digits", "linear_probe", 0.2, "open at 2 seeds"),
                   ("zoo-digits", "knn", 0.06, "open at 2 seeds")])  # fmt: skip
    _patch(monkeypatch, same, _frame([]))
    return _records(study)


def test_a_cell_cap_serves_the_comparison_nearest_a_decision_first(
    study: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _two_open(study, monkeypatch)
    planned = len(records)
    # room for exactly one comparison's look: knn (p 0.06) goes first
    cells, run = _adaptive.next_round(study, records, None, planned, 0.0)
    assert len(cells) == 4  # both comparisons: own cell + random-init twin, each
    capped = parse_study(SUITE | {"compute": {"cells": planned + 2}})
    cells, run = _adaptive.next_round(capped, records, None, planned, 0.0)
    assert sorted(c.strategy for c in cells) == ["knn", "knn"] and run.capped
    (question,) = run.open_questions
    assert question.key[2] == "linear_probe" and question.comparison == "same_algorithm"
    # two cells per look, two looks left (3 and 4 seeds), 2 s a cell
    assert question.cells_to_max == 4 and question.seconds_to_max == pytest.approx(8.0)
    assert run.held[question.key] == "compute cap reached"


def test_an_hours_cap_counts_the_recorded_cell_times(
    study: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    same = _frame([("zoo-digits", "linear_probe", 0.2, "open at 2 seeds")])
    _patch(monkeypatch, same, _frame([]))
    records = _records(study)
    capped = parse_study(SUITE | {"compute": {"hours": 1.0}})
    # the look needs two 2-s cells: 4 s fit in the last 5 s of the hour, not in the last 3 s
    cells, run = _adaptive.next_round(capped, records, None, len(records), 3600 - 5.0)
    assert len(cells) == 2 and not run.capped
    cells, run = _adaptive.next_round(capped, records, None, len(records), 3600 - 3.0)
    assert cells == [] and run.capped and run.open_questions[0].seconds_to_max == 8.0


def test_an_hours_cap_adds_up_the_cells_chosen_in_a_round(
    study: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _two_open(study, monkeypatch)
    capped = parse_study(SUITE | {"compute": {"hours": 1.0}})
    # each look needs two 2-s cells: in the last 6 s of the hour only the first (knn) fits
    cells, run = _adaptive.next_round(capped, records, None, len(records), 3600 - 6.0)
    assert sorted(c.strategy for c in cells) == ["knn", "knn"] and run.capped
    assert [q.key[2] for q in run.open_questions] == ["linear_probe"]
