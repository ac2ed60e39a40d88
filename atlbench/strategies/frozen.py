"""Frozen-feature strategies: a linear probe and kNN on cached features (no forward passes).

Under ``validation: budgeted`` (the default) their hyperparameter (C, k) is chosen by stratified
k-fold cross-validation inside the label budget, then the model is refitted on all of it; under
``validation: full`` the target's validation split chooses. Each is also run on a randomly
initialised encoder of the same architecture: the same algorithm without the source, which is
what negative transfer is measured against (Wang et al. 2019).
"""

from __future__ import annotations

import copy
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from atlbench.record import Cost, Tuning
from atlbench.registry import register_strategy
from atlbench.strategies._base import CellContext, CellOutcome, Strategy, StrategyParams


class LinearProbeParams(StrategyParams):
    # Kornblith et al. (2019) search 45 log-spaced values in [1e-6, 1e5]; 15 in [1e-4, 1e4] is a
    # CPU-friendly default. Values are sklearn's C (inverse L2 strength), fitted from the strongest
    # penalty to the weakest, each fit warm-started from the previous solution.
    c_grid: tuple[float, ...] = tuple(float(c) for c in np.logspace(-4, 4, 15))
    max_iter: int = Field(2000, ge=10)
    tol: float = Field(1e-6, gt=0)

    @field_validator("c_grid")
    @classmethod
    def _positive(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(not (c > 0 and np.isfinite(c)) for c in value):
            raise ValueError("needs one or more positive finite C values")
        return value


def _moments(train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(0)
    std = train.std(0) + 1e-8 * (np.abs(train).max() + 1e-30)
    return mean, std


@dataclass
class ProbeFit:
    """A fitted probe: the sklearn model on standardised features and how to standardise."""

    model: Any
    mean: np.ndarray
    std: np.ndarray
    c: float
    val_acc: float
    grid: list[dict[str, float]]

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict((x - self.mean) / self.std))

    def head(self, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
        """The probe as ``(W, b)`` on *raw* features: ``x @ W.T + b`` are its logits.

        Standardisation is folded into the weights. A binary sklearn model has one logit ``z``;
        ``[-z/2, z/2]`` has the same softmax. Classes absent from the training labels get a bias
        far below the rest, so they are never predicted (as with sklearn).
        """
        coef = self.model.coef_ / self.std
        bias = self.model.intercept_ - coef @ self.mean
        classes = self.model.classes_
        if len(classes) == 2 and coef.shape[0] == 1:
            coef = np.concatenate([-coef / 2, coef / 2])
            bias = np.concatenate([-bias / 2, bias / 2])
        w = np.zeros((num_classes, coef.shape[1]))
        b = np.full(num_classes, bias.min() - 30.0)
        w[classes] = coef
        b[classes] = bias
        return w, b


def fit_probe(
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_va: np.ndarray | None,
    y_va: np.ndarray | None,
    c_grid: Sequence[float],
    max_iter: int = 2000,
    tol: float = 1e-6,
) -> ProbeFit:
    """Multinomial logistic regression (L-BFGS) along a C path; the best C on validation wins.

    The grid is walked from strongest to weakest regularisation with warm starts (a
    regularisation path): each solution starts near the next, which cuts L-BFGS iterations
    without changing the optimum (the objective is strictly convex). Ties go to the smaller C.
    Without validation data the grid must hold one C, which is simply fitted.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    mean, std = _moments(x_tr)
    z_tr = (x_tr - mean) / std
    z_va = (x_va - mean) / std if x_va is not None else None
    model = LogisticRegression(max_iter=max_iter, tol=tol, warm_start=True)
    grid: list[dict[str, float]] = []
    best_acc, best_c, best_model = -1.0, 0.0, None
    for c in sorted(c_grid):
        model.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(z_tr, y_tr)
        acc = float((model.predict(z_va) == y_va).mean()) if z_va is not None else float("nan")
        grid.append({"C": float(c), "val_acc": acc})
        if acc > best_acc or best_model is None:
            best_acc, best_c, best_model = acc, float(c), copy.deepcopy(model)
    return ProbeFit(best_model, mean, std, best_c, best_acc, grid)


def cross_validate(
    candidates: Sequence[Any],
    folds: Sequence[np.ndarray],
    n: int,
    scores: Callable[[np.ndarray, np.ndarray], list[float]],
) -> tuple[int, list[float]]:
    """Mean fold accuracy of every candidate; the best index (ties: the earlier candidate).

    ``scores(train_pos, val_pos)`` returns one validation accuracy per candidate for one fold.
    """
    total = np.zeros(len(candidates))
    for val_pos in folds:
        train_pos = np.setdiff1d(np.arange(n), val_pos)
        total += np.asarray(scores(train_pos, val_pos), dtype=float)
    means = list(total / len(folds))
    return int(np.argmax(means)), means


def frozen_data(ctx: CellContext[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Budget features and labels, and the test features."""
    return ctx.features("train")[ctx.budget_idx], ctx.budget_labels, ctx.features("test")


def _outcome(
    pred: np.ndarray, val_acc: float, hparams: dict[str, Any], grid: list[dict[str, Any]],
    seconds: float, eval_rate: float, n_params: int,
) -> CellOutcome:  # fmt: skip
    return CellOutcome(
        test_pred=np.asarray(pred),
        val_acc=val_acc,
        tuning=Tuning(hparams=hparams, trials=grid, n_trials=0, edge_flags=[]),
        cost=Cost(train_time_s=seconds, selection_time_s=seconds, eval_samples_per_s=eval_rate),
        trainable_params=n_params,
        total_params=n_params,
    )


@register_strategy("linear_probe")
class LinearProbe(Strategy[LinearProbeParams]):
    """L2-regularised multinomial logistic regression (L-BFGS), strength chosen within budget."""

    Params = LinearProbeParams
    reads_features = True
    version = 3  # 3: budgeted cross-validation

    def run(self, ctx: CellContext[LinearProbeParams]) -> CellOutcome:
        p = ctx.params
        x, y, x_te = frozen_data(ctx)
        t0 = time.perf_counter()
        if ctx.selection.budgeted:
            grid_c = sorted(p.c_grid)

            def scores(tr: np.ndarray, va: np.ndarray) -> list[float]:
                fit = fit_probe(x[tr], y[tr], x[va], y[va], grid_c, p.max_iter, p.tol)
                return [g["val_acc"] for g in fit.grid]

            best, means = cross_validate(grid_c, ctx.selection.folds, len(y), scores)
            probe = fit_probe(x, y, None, None, [grid_c[best]], p.max_iter, p.tol)
            val_acc, grid = (
                means[best],
                [{"C": c, "val_acc": a} for c, a in zip(grid_c, means, strict=True)],
            )
        else:
            x_va, y_va = ctx.val_features()
            probe = fit_probe(x, y, x_va, y_va, p.c_grid, p.max_iter, p.tol)
            val_acc, grid = probe.val_acc, probe.grid
        seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        pred = probe.predict(x_te)
        rate = len(x_te) / max(time.perf_counter() - t1, 1e-9)
        n_params = x.shape[1] * ctx.task.num_classes + ctx.task.num_classes
        return _outcome(pred, val_acc, {"C": probe.c}, grid, seconds, rate, n_params)


class KNNParams(StrategyParams):
    k_grid: tuple[int, ...] = (1, 3, 5, 10, 20)
    metric: str = Field("cosine", pattern="^(cosine|euclidean)$")


@register_strategy("knn")
class KNN(Strategy[KNNParams]):
    """k-nearest neighbours on frozen features; k chosen within the budget."""

    Params = KNNParams
    reads_features = True
    version = 2  # 2: budgeted cross-validation

    def run(self, ctx: CellContext[KNNParams]) -> CellOutcome:
        from sklearn.neighbors import KNeighborsClassifier

        p = ctx.params
        x, y, x_te = frozen_data(ctx)
        t0 = time.perf_counter()

        def accuracy(
            k: int, x_tr: np.ndarray, y_tr: np.ndarray, x_va: np.ndarray, y_va: np.ndarray
        ) -> float:
            if k > len(x_tr):
                return -1.0  # not a usable candidate at this size
            model = KNeighborsClassifier(n_neighbors=k, metric=p.metric).fit(x_tr, y_tr)
            return float((model.predict(x_va) == y_va).mean())

        ks = list(p.k_grid)
        if ctx.selection.budgeted:
            best, means = cross_validate(
                ks, ctx.selection.folds, len(y),
                lambda tr, va: [accuracy(k, x[tr], y[tr], x[va], y[va]) for k in ks],
            )  # fmt: skip
        else:
            x_va, y_va = ctx.val_features()
            means = [accuracy(k, x, y, x_va, y_va) for k in ks]
            best = int(np.argmax(means))
        grid = [{"k": k, "val_acc": a} for k, a in zip(ks, means, strict=True) if a >= 0]
        k = min(ks[best], len(x))
        model = KNeighborsClassifier(n_neighbors=k, metric=p.metric).fit(x, y)
        seconds = time.perf_counter() - t0
        t1 = time.perf_counter()
        pred = model.predict(x_te)
        rate = len(x_te) / max(time.perf_counter() - t1, 1e-9)
        return _outcome(pred, means[best], {"k": k, "metric": p.metric}, grid, seconds, rate, 0)
