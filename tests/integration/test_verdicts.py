"""Verdicts with known answers: a random initialisation carries no information about the target,
a source pre-trained on a related task does.

Both are given as ordinary sources (the random one as a checkpoint file, as a user would give
any checkpoint), with the default strategies and the default tuning protocol. By construction
the random initialisation must not be called significantly different from training from scratch
(under-tuned fine-tuning called it "negative (significant)" before the backbone learning rate was
searched), and the related source must be called significantly positive at a small budget.

The budget is 5 labels per class: at 3 the related source's fine-tuning gain had p = 0.014 before
the multiplicity correction, so "significant" or "nominal" depended on the CPU's float rounding;
at 5 it has p = 1e-4 (6 seeds).
"""

from __future__ import annotations

import pandas as pd
import pytest
import yaml

SEEDS = [0, 1, 2, 3, 4, 5]


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
        "seeds": SEEDS,
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
    return views.negative_transfer.set_index(["source", "strategy", "comparison"])


@pytest.mark.parametrize("strategy", ["finetune", "linear_probe"])
def test_a_random_initialisation_is_no_different_from_scratch(
    verdicts: pd.DataFrame, strategy: str
) -> None:
    same = verdicts.loc[("random-init", strategy, "same_algorithm")]
    assert same["n_pairs"] == len(SEEDS)
    assert same["verdict"] in ("not significant", "equivalent"), same.to_dict()
    assert same["gain_ci_low"] < 0 < same["gain_ci_high"]


def test_a_related_source_helps_at_a_small_budget(verdicts: pd.DataFrame) -> None:
    same = verdicts.loc[("related", "finetune", "same_algorithm")]
    assert same["verdict"] == "positive (significant)", same.to_dict()
    scratch = verdicts.loc[("related", "finetune", "scratch")]
    assert scratch["verdict"] == "above scratch training (significant)"
