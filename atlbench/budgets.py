"""Label budgets: stratified, deterministic, nested across budgets; and the splits carved from them.

For a seed, each class's training examples are shuffled once; a budget takes a prefix of every
class's order. So the 5/class subset is inside the 10/class subset (learning curves are paired),
and every strategy and source with the same seed sees the same labelled examples.

Under ``validation: budgeted`` (the default) the budget is every label there is: selection uses a
stratified hold-out (trainable strategies) or stratified k-fold cross-validation (frozen ones)
carved from the budget, and the chosen model is retrained on all of it, as in VTAB-1k
(Zhai et al. 2019). Oliver et al. 2018 and Perez, Kiela & Cho 2021 show why a full-size
validation split inflates few-shot results.
"""

from __future__ import annotations

import math

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from atlbench.errors import DataError

__all__ = ["BudgetSpec", "check_budgets", "holdout_split", "select_budget", "stratified_folds"]


class BudgetSpec(BaseModel):
    """A label budget: ``per_class`` examples of each class, or a ``fraction`` of the train set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    per_class: int | None = Field(None, ge=1)
    fraction: float | None = Field(None, gt=0, le=1)

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetSpec:
        if (self.per_class is None) == (self.fraction is None):
            raise ValueError("give exactly one of 'per_class' (examples per class) or 'fraction'")
        return self

    @property
    def kind(self) -> str:
        return "per_class" if self.per_class is not None else "fraction"

    @property
    def value(self) -> float:
        return float(self.per_class) if self.per_class is not None else self.share

    @property
    def share(self) -> float:
        """The fraction of a fraction budget (the validator makes it the one that is set)."""
        assert self.fraction is not None, "a per-class budget has no fraction"
        return self.fraction

    @property
    def label(self) -> str:
        if self.per_class is not None:
            return f"{self.per_class}/class"
        return f"{self.share * 100:g}%"


def class_orders(labels: np.ndarray, seed: int) -> dict[int, np.ndarray]:
    """Per-class shuffled indices; the one random draw every budget of this seed shares."""
    rng = np.random.default_rng([seed, 7919])
    return {int(c): rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)}


def budget_size(budget: BudgetSpec, class_count: int) -> int:
    if budget.per_class is not None:
        return budget.per_class
    return max(1, math.ceil(budget.share * class_count))


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


def check_budgets(
    labels: np.ndarray, budgets: tuple[BudgetSpec, ...], origin: str, budgeted: bool = False
) -> None:
    """Pre-flight: fail before any work if a budget cannot be met (or, with ``budgeted``
    validation, leaves a class with no label to validate on)."""
    counts = np.bincount(labels)
    for budget in budgets:
        for cls, n in enumerate(counts):
            k = budget_size(budget, int(n))
            if k > n:
                raise DataError(
                    f"{origin}: label budget {budget.label} needs more examples of class {cls} "
                    f"than the train split has ({n})"
                )
            if budgeted and k < 2:
                raise DataError(
                    f"{origin}: label budget {budget.label} gives class {cls} only {k} label, "
                    "which leaves none to validate on; use at least 2 per class or "
                    "`validation: full`"
                )


def holdout_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (fit, val) positions into ``labels``: per class, ``max(1, round(f * n))``
    examples validate and at least one trains. Classes with one example only train."""
    rng = np.random.default_rng([seed, 3571])
    fit, val = [], []
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_val = min(len(idx) - 1, max(1, round(fraction * len(idx))))
        val.append(idx[:n_val])
        fit.append(idx[n_val:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(val))


def stratified_folds(labels: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """Validation positions of ``k = min(folds, smallest class)`` stratified folds.

    Every example validates exactly once; each class is spread as evenly as it can be.
    """
    counts = np.bincount(labels)
    k = int(min(folds, counts[counts > 0].min()))
    if k < 2:
        raise DataError("cross-validation needs at least 2 labels of every class")
    rng = np.random.default_rng([seed, 6007])
    out: list[list[np.ndarray]] = [[] for _ in range(k)]
    offset = 0
    for cls in np.flatnonzero(counts):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        for j, part in enumerate(np.array_split(idx, k)):
            out[(j + offset) % k].append(part)
        offset += len(idx) % k  # rotate so remainders do not all land in the first fold
    return [np.sort(np.concatenate(parts)) for parts in out]
