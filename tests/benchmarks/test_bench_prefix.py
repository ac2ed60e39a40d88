"""Frozen-prefix caching against the full forward pass, on the same text cell.

``finetune`` with ``layers: 2`` of all-MiniLM-L6-v2 on the text quickstart's topics target at
20 labels per class (budgeted validation, 4 trials, successive halving), once with the frozen
bottom four layers cached and once recomputing them every step. Both runs select the same trial
and predict the same labels (tests/unit/test_frozen_prefix.py checks it). The issue's goal was
2.5x; the ceiling is about 1.67x, since frozen layers get no backward pass in the full path either
(6 forward + 2 x 2 backward units per step against 2 + 2 x 2). Measured on the 2-core CPU VM:
24.5 s against 39.7 s, 1.63x (min of 3 rounds; an earlier session's 1.17x was taken on a
slower, busier VM).
Run: ``pytest tests/benchmarks/test_bench_prefix.py -s --benchmark-columns=min,median,rounds``.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from atlbench.budgets import BudgetSpec
from atlbench.record import CellRecord

SUITE: dict[str, Any] = {
    "name": "bench-prefix",
    "seeds": [0],
    "device": "cpu",
    "sources": [{"id": "minilm", "hf": {"model": "sentence-transformers/all-MiniLM-L6-v2",
                                        "pooling": "mean", "max_length": 64}}],
    "targets": [{"id": "topics",
                 "builtin": {"task": "topic_text", "n_per_class": 60, "classes": 6}}],
    "strategies": [{"name": "finetune", "id": "finetune-top2", "layers": 2}],
    "budgets": [{"per_class": 20}],
    "estimators": [],
    "training": {"max_epochs": 10, "patience": 4, "batch_size": 32, "min_epoch_samples": 128,
                 "trials": 4},
}  # fmt: skip


def one_cell(cached: bool) -> CellRecord:
    from atlbench._frozen_prefix import ACTIVATIONS
    from atlbench._inputs import PREPARED
    from atlbench._runner import Worker
    from atlbench.plan import build_plan
    from atlbench.study import parse_study

    suite = SUITE | {"training": SUITE["training"] | {"prefix_cache": cached}}
    study = parse_study(suite)
    cell = next(c for c in build_plan(study).cells if c.budget == BudgetSpec(per_class=20))
    ACTIVATIONS.clear()  # every round pays for its own prefix pass and tokenisation
    PREPARED.clear()
    record, _ = Worker(study, torch.device("cpu")).run_cell(cell)
    assert record.status == "done", record.error
    return record


@pytest.mark.parametrize("cached", [False, True], ids=["full-forward", "frozen-prefix"])
def test_finetune_top2_minilm(benchmark: Any, cached: bool) -> None:
    record = benchmark.pedantic(one_cell, args=(cached,), rounds=3, iterations=1)
    assert record.cost.prefix_cache.startswith("exact" if cached else "off")
