"""Plan keys are stable content hashes; label budgets are stratified, deterministic and nested."""

from __future__ import annotations

import numpy as np
import pytest

from atlbench.budgets import (
    BudgetSpec,
    check_budgets,
    holdout_split,
    select_budget,
    stratified_folds,
)
from atlbench.errors import DataError
from atlbench.plan import build_plan
from atlbench.study import parse_study


def parse_suite(data: dict):
    return parse_study(data)


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


def test_grid_size_and_shared_baselines() -> None:
    plan = build_plan(parse_suite(suite_dict()))
    # 2 sources x linear_probe x 2 budgets x 2 seeds, one random-init probe twin (same arch)
    # x 2 x 2, and one scratch baseline x 2 x 2
    assert len(plan.cells) == 2 * 2 * 2 + 2 * 2 + 2 * 2
    roles = {(c.strategy, c.role) for c in plan.cells}
    assert roles == {
        ("linear_probe", "transfer"),
        ("linear_probe", "random_init"),
        ("scratch", "baseline"),
    }
    shared = [c for c in plan.cells if c.role != "transfer"]
    assert {c.source for c in shared} == {"test_resnet (random init)"}
    assert len({c.key for c in plan.cells}) == len(plan.cells)
    # one estimator task per (target, budget, seed), scoring both sources together
    assert len(plan.estimates) == 2 * 2 and all(t.sources == ("a", "b") for t in plan.estimates)


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
    other_training = keys(suite_dict(training={"trials": 3}))
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


def test_validation_mode_is_part_of_every_key() -> None:
    budgeted, full = keys(suite_dict()), keys(suite_dict(validation="full"))
    assert set(budgeted.values()).isdisjoint(full.values())


def test_budgeted_validation_needs_two_labels_per_class() -> None:
    labels = np.repeat(np.arange(3), 10)
    check_budgets(labels, (BudgetSpec(per_class=1),), "target 'x'")  # fine for full validation
    with pytest.raises(DataError, match="leaves none to validate on"):
        check_budgets(labels, (BudgetSpec(per_class=1),), "target 'x'", budgeted=True)


@pytest.mark.parametrize("seed", [0, 5])
def test_holdout_is_stratified_inside_the_budget(seed: int) -> None:
    labels = np.repeat(np.arange(4), [5, 5, 9, 20])
    fit, val = holdout_split(labels, 0.2, seed)
    assert sorted(np.concatenate([fit, val])) == list(range(len(labels)))
    assert np.bincount(labels[val], minlength=4).tolist() == [1, 1, 2, 4]
    assert np.bincount(labels[fit], minlength=4).min() >= 4
    np.testing.assert_array_equal(val, holdout_split(labels, 0.2, seed)[1])


@pytest.mark.parametrize("seed", [0, 5])
def test_folds_cover_every_label_once_and_each_class_in_each_fold(seed: int) -> None:
    labels = np.repeat(np.arange(3), [5, 7, 20])
    folds = stratified_folds(labels, 5, seed)
    assert len(folds) == 5
    assert sorted(np.concatenate(folds)) == list(range(len(labels)))
    for fold in folds:
        assert set(labels[fold]) == {0, 1, 2}
    small = stratified_folds(np.repeat(np.arange(2), [3, 8]), 5, seed)
    assert len(small) == 3  # no more folds than the smallest class has labels
