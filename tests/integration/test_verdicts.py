"""Verdicts with known answers: a random initialisation carries no information about the target,
a source pre-trained on a related task does.

Both are given as ordinary sources (the random one as a checkpoint file, as a user would give
any checkpoint), with the default strategies and the default tuning protocol. By construction
the random initialisation must not be called significantly different from training from scratch
(under-tuned fine-tuning called it "negative (significant)" before the backbone learning rate was
searched), and the related source must be called significantly positive at a small budget.

The budget is 5 labels per class, and the seeds follow the default schedule
(``seeds: {}``: 3, then 2 more at a time while a comparison is open, up to 15), so each answer
also says how many seeds it needed: run with ``-s`` to print them.
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

SCHEDULE = {}  # the default: {start: 3, step: 2, max: 15}


@pytest.fixture(scope="module")
def verdicts(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    import torch
    from safetensors.torch import save_file

    from atlbench._api import run_suite
    from atlbench.sources.timm import create_timm

    root = tmp_path_factory.mktemp("verdicts")
    torch.manual_seed(1234)
    random_init = create_timm("test_resnet", False, num_classes=0, input_size=32).model
    save_file(
        {k: v.contiguous() for k, v in random_init.state_dict().items()},
        str(root / "r.safetensors"),
    )
    suite = {
        "name": "verdicts",
        "seeds": SCHEDULE,
        "device": "cpu",
        "sources": [
            {"id": "random-init", "checkpoint": {"arch": "test_resnet", "input_size": 32,
                                                 "path": str(root / "r.safetensors")}},
            {"id": "related", "zoo": {"arch": "test_resnet", "epochs": 20, "pretrain_on": {
                "task": "digits", "classes": [0, 1, 2, 3, 4]}}},
        ],
        "targets": [{"id": "digits5-9", "builtin": {"task": "digits", "classes": [5, 6, 7, 8, 9]}}],
        "strategies": ["linear_probe", "finetune", "scratch"],
        "budgets": [{"per_class": 5}],
        "estimators": [],
        "training": {"max_epochs": 10, "patience": 3, "trials": 2, "min_epoch_samples": 64},
    }  # fmt: skip
    (root / "suite.yaml").write_text(yaml.safe_dump(suite))
    views = run_suite(root / "suite.yaml", results_dir=root / "r", reports_dir=root / "rep")
    table = views.negative_transfer
    for row in table.itertuples(index=False):
        print(f"{row.source} / {row.strategy} vs {row.comparison}: {row.verdict}, {row.stop}")
    return table.set_index(["source", "strategy", "comparison"])


@pytest.mark.parametrize("strategy", ["finetune", "linear_probe"])
def test_a_random_initialisation_is_no_different_from_scratch(
    verdicts: pd.DataFrame, strategy: str
) -> None:
    for comparison in ("same_algorithm", "scratch"):
        row = verdicts.loc[("random-init", strategy, comparison)]
        if strategy == "linear_probe" and comparison == "scratch":
            continue  # a frozen probe against trained scratch compares two algorithms
        assert row["verdict"] in ("not significant", "equivalent"), row.to_dict()
        if row["verdict"] != "equivalent":  # equivalence within the margin closes it too
            assert not str(row["stop"]).startswith("decided"), row.to_dict()
        assert row["n_pairs"] >= 3


@pytest.mark.xfail(
    strict=True,
    reason=(
        "issue #23, open: with the burn-in (min_epochs) scratch no longer collapses at 5 labels "
        "per class, and the related source's fine-tuning gain at 3 seeds is small enough that "
        "the futility rule stops it there ('not significant'); the old 'positive' verdict "
        "leaned on collapsed scratch runs"
    ),
)
def test_a_related_source_helps_at_a_small_budget(verdicts: pd.DataFrame) -> None:
    same = verdicts.loc[("related", "finetune", "same_algorithm")]
    assert same["verdict"] == "positive (significant)", same.to_dict()
    assert str(same["stop"]).startswith("decided")
    scratch = verdicts.loc[("related", "finetune", "scratch")]
    assert scratch["verdict"] == "above scratch training (significant)"
