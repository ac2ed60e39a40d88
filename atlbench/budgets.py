"""Label budgets: stratified, deterministic, and nested across budgets.

For a seed, each class's training examples are shuffled once; a budget takes a prefix of every
class's order. So the 5/class subset is inside the 10/class subset (learning curves are paired),
and every strategy and source with the same seed sees the same labelled examples.
"""

from __future__ import annotations

import math

import numpy as np

from atlbench.errors import DataError
from atlbench.suite import BudgetSpec


def class_orders(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """Per-class shuffled indices; the one random draw every budget of this seed shares."""
    rng = np.random.default_rng([seed, 7919])
    return {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}


def budget_size(budget: BudgetSpec, class_count: int) -> int:
    if budget.per_class is not None:
        return budget.per_class
    return max(1, math.ceil(budget.fraction * class_count))  # type: ignore[operator]


def select_budget(
    labels: np.ndarray, budget: BudgetSpec, seed: int, origin: str = ""
) -> np.ndarray:
    """Sorted train indices for ``budget``; a budget larger than a class is an error."""
    out = []
    for cls, order in class_orders(labels, seed).items():
        k = budget_size(budget, len(order))
        if k > len(order):
            raise DataError(
                f"{origin}label budget {budget.label} needs {k} examples of class {cls}, but the "
                f"train split has only {len(order)}"
            )
        out.append(order[:k])
    return np.sort(np.concatenate(out))


def check_budgets(labels: np.ndarray, budgets: tuple[BudgetSpec, ...], origin: str) -> None:
    """Pre-flight: fail before any work if a budget cannot be met."""
    counts = np.bincount(labels)
    for budget in budgets:
        for cls, n in enumerate(counts):
            if budget_size(budget, int(n)) > n:
                raise DataError(
                    f"{origin}: label budget {budget.label} needs more examples of class {cls} "
                    f"than the train split has ({n})"
                )
