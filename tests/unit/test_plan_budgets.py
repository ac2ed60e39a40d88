"""Plan keys are stable content hashes; label budgets are stratified, deterministic and nested."""

from __future__ import annotations

import numpy as np
import pytest

from atlbench.budgets import check_budgets, select_budget
from atlbench.errors import DataError
from atlbench.plan import build_plan
from atlbench.suite import BudgetSpec, parse_suite


def suite_dict(**patch: object) -> dict:
    data = {
        "name": "t",
        "seeds": [0, 1],
        "sources": [
            {"id": "a", "zoo": {"arch": "test_resnet", "pretrain_on": "shapes"}},
            {"id": "b", "zoo": {"arch": "test_resnet", "pretrain_on": "textures"}},
        ],
        "targets": [{"id": "d", "builtin": {"task": "digits", "classes": [5, 6]}}],
        "strategies": ["linear_probe", "scratch"],
        "budgets": [{"per_class": 5}, {"fraction": 0.5}],
    }
    return data | patch


def keys(data: dict) -> dict[tuple, str]:
    plan = build_plan(parse_suite(data))
    return {(c.source, c.strategy, c.budget.label, c.seed): c.key for c in plan.cells}


def test_grid_size_and_shared_scratch() -> None:
    plan = build_plan(parse_suite(suite_dict()))
    # 2 sources x linear_probe x 2 budgets x 2 seeds + one scratch (same arch) x 2 x 2
    assert len(plan.cells) == 2 * 2 * 2 + 2 * 2
    scratch = [c for c in plan.cells if c.strategy == "scratch"]
    assert {c.source for c in scratch} == {"test_resnet (random init)"}
    assert len({c.key for c in plan.cells}) == len(plan.cells)


def test_keys_are_stable_and_ignore_ids() -> None:
    first, second = keys(suite_dict()), keys(suite_dict())
    assert first == second
    renamed = suite_dict(
        sources=[
            {"id": "renamed", "zoo": {"arch": "test_resnet", "pretrain_on": "shapes"}},
            {"id": "b", "zoo": {"arch": "test_resnet", "pretrain_on": "textures"}},
        ]
    )
    after = keys(renamed)
    assert (
        after[("renamed", "linear_probe", "5/class", 0)]
        == first[("a", "linear_probe", "5/class", 0)]
    )


def test_keys_change_with_what_determines_the_result() -> None:
    base = keys(suite_dict())
    other_target = keys(
        suite_dict(targets=[{"id": "d", "builtin": {"task": "digits", "classes": [5, 7]}}])
    )
    assert set(base.values()).isdisjoint(other_target.values())
    other_training = keys(suite_dict(training={"lr_grid": [0.01]}))
    # the training budget changes trainable cells only, not frozen-feature ones
    assert (
        other_training[("a", "linear_probe", "5/class", 0)]
        == base[("a", "linear_probe", "5/class", 0)]
    )
    scratch = ("test_resnet (random init)", "scratch", "5/class", 0)
    assert other_training[scratch] != base[scratch]


def test_modality_mismatch_is_skipped_out_loud() -> None:
    data = suite_dict(
        targets=[
            {"id": "d", "builtin": {"task": "digits", "classes": [5, 6]}},
            {"id": "t", "builtin": {"task": "topic_text", "n_per_class": 10}},
        ]
    )
    plan = build_plan(parse_suite(data))
    assert {c.target for c in plan.cells} == {"d"}
    assert any("cannot read text" in s for s in plan.skipped)


def multitask_suite(second: dict, group: list[str] | None = None) -> dict:
    return suite_dict(
        targets=[
            {"id": "d", "builtin": {"task": "digits", "classes": [5, 6]}},
            {"id": "e", "builtin": second},
            {"id": "s", "builtin": {"task": "shapes"}},
        ],
        strategies=["finetune", {"name": "multitask", "group": group or ["d", "e"]}],
        seeds=[0],
    )


def test_multitask_cells_only_for_the_group_and_keyed_on_every_member() -> None:
    plan = build_plan(parse_suite(multitask_suite({"task": "digits", "classes": [7, 8]})))
    grouped = {(c.source, c.target) for c in plan.cells if c.strategy == "multitask"}
    assert grouped == {(s, t) for s in ("a", "b") for t in ("d", "e")}  # not "s"

    def cell_keys(plan):
        return {(c.source, c.target, c.strategy, c.budget.label): c.key for c in plan.cells}

    before = cell_keys(plan)
    # changing member e changes the multitask cells on d (it trains on e), not finetune on d
    changed = multitask_suite({"task": "digits", "classes": [7, 9]})
    after = cell_keys(build_plan(parse_suite(changed)))
    assert after[("a", "d", "multitask", "5/class")] != before[("a", "d", "multitask", "5/class")]
    assert after[("a", "d", "finetune", "5/class")] == before[("a", "d", "finetune", "5/class")]
    # ... and a different group is a different experiment
    regrouped = build_plan(
        parse_suite(multitask_suite({"task": "digits", "classes": [7, 8]}, ["d", "s"]))
    )
    assert (
        cell_keys(regrouped)[("a", "d", "multitask", "5/class")]
        != before[("a", "d", "multitask", "5/class")]
    )


def test_multitask_group_with_another_modality_is_skipped_out_loud() -> None:
    plan = build_plan(parse_suite(multitask_suite({"task": "topic_text", "n_per_class": 10})))
    assert not [c for c in plan.cells if c.strategy == "multitask"]
    assert any("cannot read text data of group member e" in s for s in plan.skipped)


@pytest.mark.parametrize("seed", [0, 3, 11])
def test_budgets_stratified_deterministic_nested(seed: int) -> None:
    rng = np.random.default_rng(seed + 100)
    labels = rng.integers(0, 4, size=400)
    small = select_budget(labels, BudgetSpec(per_class=5), seed)
    large = select_budget(labels, BudgetSpec(per_class=20), seed)
    frac = select_budget(labels, BudgetSpec(fraction=0.5), seed)
    assert np.bincount(labels[small], minlength=4).tolist() == [5] * 4
    assert set(small) <= set(large)
    assert min(np.bincount(labels)) // 2 >= 20  # so 20/class fits inside the 50% budget
    assert set(large) <= set(frac)
    np.testing.assert_array_equal(small, select_budget(labels, BudgetSpec(per_class=5), seed))
    other = select_budget(labels, BudgetSpec(per_class=5), seed + 1)
    assert not np.array_equal(small, other)
    counts = np.bincount(labels)
    assert np.array_equal(np.bincount(labels[frac], minlength=4), np.ceil(counts * 0.5).astype(int))


def test_budget_larger_than_data_is_a_clear_error() -> None:
    labels = np.repeat(np.arange(3), 4)
    with pytest.raises(DataError, match="needs more examples of class 0"):
        check_budgets(labels, (BudgetSpec(per_class=5),), "target 'x'")
    with pytest.raises(DataError, match="label budget 5/class needs 5 examples"):
        select_budget(labels, BudgetSpec(per_class=5), 0)
