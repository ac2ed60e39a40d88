"""Frozen-feature strategies: a linear probe and kNN on cached features (no forward passes)."""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from atlbench.strategies.base import CellContext, CellOutcome, Strategy, StrategyParams


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
    x_va: np.ndarray,
    y_va: np.ndarray,
    c_grid: tuple[float, ...],
    max_iter: int = 2000,
    tol: float = 1e-6,
) -> ProbeFit:
    """Multinomial logistic regression (L-BFGS) with C picked on validation accuracy.

    The grid is walked from strongest to weakest regularisation with warm starts (a
    regularisation path): each solution starts near the next, which cuts L-BFGS iterations
    without changing the optimum (the objective is strictly convex). Ties go to the smaller C.
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    mean, std = _moments(x_tr)
    z_tr, z_va = (x_tr - mean) / std, (x_va - mean) / std
    model = LogisticRegression(max_iter=max_iter, tol=tol, warm_start=True)
    grid: list[dict[str, float]] = []
    best_acc, best_c, best_model = -1.0, 0.0, None
    for c in sorted(c_grid):
        model.set_params(C=c)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(z_tr, y_tr)
        acc = float((model.predict(z_va) == y_va).mean())
        grid.append({"C": float(c), "val_acc": acc})
        if acc > best_acc:
            best_acc, best_c, best_model = acc, float(c), copy.deepcopy(model)
    assert best_model is not None
    return ProbeFit(best_model, mean, std, best_c, best_acc, grid)


class LinearProbe(Strategy):
    """L2-regularised multinomial logistic regression (L-BFGS), strength picked on validation."""

    name = "linear_probe"
    Params = LinearProbeParams
    uses_features = True
    version = 2  # warm-started regularisation path, tighter tolerance

    def run(self, ctx: CellContext) -> CellOutcome:
        p: LinearProbeParams = ctx.params
        x_tr = ctx.features("train")[ctx.train_idx]
        x_va, x_te = ctx.features("val"), ctx.features("test")
        t0 = time.perf_counter()
        y_va = ctx.task.val.labels
        probe = fit_probe(x_tr, ctx.train_labels, x_va, y_va, p.c_grid, p.max_iter, p.tol)
        train_time = time.perf_counter() - t0
        t1 = time.perf_counter()
        pred = probe.model.predict((x_te - probe.mean) / probe.std)
        eval_time = time.perf_counter() - t1
        n_params = x_tr.shape[1] * ctx.task.num_classes + ctx.task.num_classes
        return CellOutcome(
            test_pred=np.asarray(pred),
            val_acc=probe.val_acc,
            hparams={"C": probe.c},
            grid=probe.grid,
            timing={
                "train_time_s": train_time / len(p.c_grid),
                "selection_time_s": train_time,
                "eval_samples_per_s": len(x_te) / max(eval_time, 1e-9),
            },
            trainable_params=n_params,
            total_params=n_params,
        )


class KNNParams(StrategyParams):
    k_grid: tuple[int, ...] = (1, 3, 5, 10, 20)
    metric: str = Field("cosine", pattern="^(cosine|euclidean)$")


class KNN(Strategy):
    """k-nearest neighbours on frozen features; k picked on validation."""

    name = "knn"
    Params = KNNParams
    uses_features = True

    def run(self, ctx: CellContext) -> CellOutcome:
        from sklearn.neighbors import KNeighborsClassifier

        p: KNNParams = ctx.params
        x_tr = ctx.features("train")[ctx.train_idx]
        x_va, x_te = ctx.features("val"), ctx.features("test")
        y_tr, y_va = ctx.train_labels, ctx.task.val.labels
        t0 = time.perf_counter()
        grid, best = [], (-1.0, 1)
        for k in p.k_grid:
            if k > len(x_tr):
                continue
            model = KNeighborsClassifier(n_neighbors=k, metric=p.metric).fit(x_tr, y_tr)
            acc = float((model.predict(x_va) == y_va).mean())
            grid.append({"k": k, "val_acc": acc})
            if acc > best[0]:
                best = (acc, k)
        fit_time = time.perf_counter() - t0
        model = KNeighborsClassifier(n_neighbors=best[1], metric=p.metric).fit(x_tr, y_tr)
        t1 = time.perf_counter()
        pred = model.predict(x_te)
        eval_time = time.perf_counter() - t1
        return CellOutcome(
            test_pred=np.asarray(pred),
            val_acc=best[0],
            hparams={"k": best[1], "metric": p.metric},
            grid=grid,
            timing={
                "train_time_s": fit_time / max(1, len(grid)),
                "selection_time_s": fit_time,
                "eval_samples_per_s": len(x_te) / max(eval_time, 1e-9),
            },
            trainable_params=0,
            total_params=0,
        )
